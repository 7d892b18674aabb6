"""Numerics: NaN and Inf stay local; float32 accuracy; overflow; subnormals.

Every check runs on every algorithm family (forced one by one; an operation a
family does not run is skipped) and on the dispatcher's own choice.

Where NaN and Inf must appear is derived without numconv: ``tap_map`` lists,
from the definition, which input position each output position reads through
each tap. With finite nonzero weights and gradients, a sum is NaN exactly when
one of its terms is NaN or it has both +Inf and -Inf terms, +Inf or -Inf when
it has infinite terms of one sign only, and finite otherwise, in any order of
summation, so the expected pattern of every result is exact.
"""

import contextlib
import itertools

import numpy as np
import pytest

import numconv
import reference
from numconv._padding import finite_outside, tap_ranges
from numconv._spec import build_spec
from robust_util import FAMILIES, maybe_forced

try:
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

ALL_PATHS = [None] + FAMILIES
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The references' many small NumPy matrix products run six times faster on
    one BLAS thread than with BLAS threads competing with numconv's."""
    limit = (
        threadpool_limits(1, "blas") if threadpool_limits else contextlib.nullcontext()
    )
    with limit:
        yield


# -- NaN and Inf locality --------------------------------------------------------------

# Codes for the class of each value.
FINITE, NAN, POS_INF, NEG_INF = 0, 1, 2, 3


def classify(values):
    values = np.asarray(values)
    out = np.full(values.shape, FINITE, np.int8)
    out[np.isnan(values)] = NAN
    out[np.isposinf(values)] = POS_INF
    out[np.isneginf(values)] = NEG_INF
    return out


def expected_class(nan_terms, pos_terms, neg_terms):
    """Class of an IEEE sum from the counts of its NaN, +Inf and -Inf terms."""
    out = np.full(nan_terms.shape, FINITE, np.int8)
    out[pos_terms > 0] = POS_INF
    out[neg_terms > 0] = NEG_INF
    out[(nan_terms > 0) | ((pos_terms > 0) & (neg_terms > 0))] = NAN
    return out


def tap_map(L, K, stride, dilation, left, right, mode):
    """A[t, k, i] = how often output position t reads input position i via tap k."""
    L_out = reference.output_length(L, left, right, K, stride, dilation)
    A = np.zeros((L_out, K, L))
    for t in range(L_out):
        for k in range(K):
            i = reference.source_index(t * stride + k * dilation, L, left, mode)
            if i is not None:
                A[t, k, i] += 1
    return A


def indicators(arr):
    """(is NaN, is +Inf, is -Inf) as 0/1 arrays.

    float64, so that the counting sums below run as matrix products; the counts
    are small integers, exact in float64.
    """
    return tuple(
        f(arr).astype(np.float64) for f in (np.isnan, np.isposinf, np.isneginf)
    )


def signs(arr):
    return (arr > 0).astype(np.float64), (arr < 0).astype(np.float64)


# The sums of the three operations, written as pairs of matrix products (a
# single einsum over three operands is slow); named by their einsum subscripts.
CONTRACTIONS = {
    "nci,tki,ock->not": lambda a, A, b: np.tensordot(
        np.tensordot(a, A, ([2], [2])), b, ([1, 3], [1, 2])
    ).transpose(0, 2, 1),
    "not,tki,ock->nci": lambda a, A, b: np.tensordot(
        np.tensordot(a, b, ([1], [0])), A, ([1, 3], [0, 1])
    ),
    "nci,tki,not->ock": lambda a, A, b: np.tensordot(
        b, np.tensordot(a, A, ([2], [2])), ([0, 2], [0, 2])
    ),
    "not,tki,nci->ock": lambda a, A, b: np.tensordot(
        a, np.tensordot(b, A, ([2], [2])), ([0, 2], [0, 2])
    ),
    "ock,tki,nci->not": lambda a, A, b: CONTRACTIONS["nci,tki,ock->not"](b, A, a),
}


def spread(special, other, A, subscripts):
    """Counts of NaN, +Inf and -Inf terms in sums of special * other over A.

    ``other`` is finite and nonzero, so a term is NaN exactly when its special
    factor is, and infinite with the product of the two signs.
    """
    nan, pos, neg = indicators(special)
    other_pos, other_neg = signs(other)
    ones = np.ones_like(other_pos)

    def count(a, b):
        return CONTRACTIONS[subscripts](a, A, b)

    return (
        count(nan, ones),
        count(pos, other_pos) + count(neg, other_neg),
        count(pos, other_neg) + count(neg, other_pos),
    )


def nonzero_finite(rng, shape, dtype):
    """Values with |v| in [0.5, 2): finite, nonzero, no overflow in any sum here."""
    magnitude = rng.uniform(0.5, 2.0, shape)
    return (magnitude * rng.choice([-1.0, 1.0], shape)).astype(dtype)


LOCALITY_CONVS = {
    # name: (C_in, C_out, L, K, stride, dilation, (left, right), groups)
    "plain": (3, 4, 40, 5, 1, 1, (2, 3), 1),
    "strided": (3, 2, 41, 4, 2, 1, (3, 1), 1),
    "dilated_grouped": (4, 6, 37, 3, 1, 3, (3, 3), 2),
}
MODES = ["zeros", "reflect", "replicate", "circular"]
SPECIALS = [np.nan, np.inf, -np.inf]


def locality_cases(N):
    """Every conv, padding mode, position (start, middle, end) and special value."""
    for name, mode, where, special in itertools.product(
        LOCALITY_CONVS, MODES, ("start", "middle", "end"), SPECIALS
    ):
        yield name, mode, where, special


def check_class(what, actual, expected, context):
    got = classify(actual)
    assert got.shape == expected.shape, (what, context, got.shape, expected.shape)
    bad = np.argwhere(got != expected)
    assert bad.size == 0, (
        f"{what} {context}: {len(bad)} elements of the wrong class, first at "
        f"{tuple(bad[0])}: got {actual[tuple(bad[0])]!r}, expected class "
        f"{['finite', 'nan', '+inf', '-inf'][expected[tuple(bad[0])]]}"
    )


def run_locality_case(family, N, name, mode, where, special, rng):
    """One placement of one special value; returns the operations that ran."""
    C_in, C_out, L, K, stride, dilation, (left, right), groups = LOCALITY_CONVS[name]
    kwargs = dict(
        stride=stride,
        padding=(left, right),
        dilation=dilation,
        groups=groups,
        padding_mode=mode,
    )
    A = tap_map(L, K, stride, dilation, left, right, mode)
    L_out = A.shape[0]
    C_in_g, C_out_g = C_in // groups, C_out // groups
    dtype = np.float32
    x = nonzero_finite(rng, (N, C_in, L), dtype)
    w = nonzero_finite(rng, (C_out, C_in_g, K), dtype)
    g = nonzero_finite(rng, (N, C_out, L_out), dtype)
    b = nonzero_finite(rng, (C_out,), dtype)
    n = N // 2
    t_in = {"start": 0, "middle": L // 2, "end": L - 1}[where]
    t_out = {"start": 0, "middle": L_out // 2, "end": L_out - 1}[where]
    x_special = x.copy()
    x_special[n, C_in - 1, t_in] = special
    g_special = g.copy()
    g_special[n, 0, t_out] = special
    context = f"[{family}, N={N}, {name}, {mode}, {where}, {special}]"

    def per_group(fn):
        """Stack a per-group computation over the channel axis it returns."""
        return [
            fn(
                slice(q * C_in_g, (q + 1) * C_in_g),
                slice(q * C_out_g, (q + 1) * C_out_g),
            )
            for q in range(groups)
        ]

    ran = []
    with maybe_forced(family):
        try:
            y = numconv.conv1d(x_special, w, b, **kwargs)
        except NotImplementedError:
            y = None
        if y is not None:
            parts = per_group(
                lambda ci, co: spread(x_special[:, ci], w[co], A, "nci,tki,ock->not")
            )
            counts = [np.concatenate([p[j] for p in parts], axis=1) for j in range(3)]
            check_class("forward", y, expected_class(*counts), context)
            ran.append("forward")

        try:
            gx = numconv.conv1d_grad_input(g_special, w, L, **kwargs)
        except NotImplementedError:
            gx = None
        if gx is not None:
            parts = per_group(
                lambda ci, co: spread(g_special[:, co], w[co], A, "not,tki,ock->nci")
            )
            counts = [np.concatenate([p[j] for p in parts], axis=1) for j in range(3)]
            check_class("grad_input", gx, expected_class(*counts), context)
            ran.append("grad_input")

        for label, xx, gg, special_first, subscripts in (
            ("grad_weight(special x)", x_special, g, True, "nci,tki,not->ock"),
            ("grad_weight(special g)", x, g_special, False, "not,tki,nci->ock"),
        ):
            try:
                gw = numconv.conv1d_grad_weight(xx, gg, K, **kwargs)
            except NotImplementedError:
                continue
            if special_first:
                parts = per_group(
                    lambda ci, co: spread(xx[:, ci], gg[:, co], A, subscripts)
                )
            else:
                parts = per_group(
                    lambda ci, co: spread(gg[:, co], xx[:, ci], A, subscripts)
                )
            counts = [np.concatenate([p[j] for p in parts], axis=0) for j in range(3)]
            check_class(label, gw, expected_class(*counts), context)
            ran.append(label)

    gb = numconv.conv1d_grad_bias(g_special)
    nan, pos, neg = (a.sum(axis=(0, 2)) for a in indicators(g_special))
    check_class("grad_bias", gb, expected_class(nan, pos, neg), context)
    return ran


@pytest.mark.parametrize("N", [1, 4, 16, 32])
@pytest.mark.parametrize("family", ALL_PATHS)
def test_nan_and_inf_stay_local(family, N):
    """A NaN or +-Inf in x or grad_output reaches exactly the sums that read it."""
    rng = np.random.default_rng(N)
    cases = 0
    ops = set()
    for case in locality_cases(N):
        ops.update(run_locality_case(family, N, *case, rng))
        cases += 1

    assert cases == len(LOCALITY_CONVS) * len(MODES) * 3 * len(SPECIALS)
    assert ops, f"{family} ran no operation"


@pytest.mark.parametrize("family", ALL_PATHS)
def test_padding_zeros_never_turn_inf_into_nan(family):
    """Inf in x at the edges, and Inf or NaN in the weight or grad_output, meeting
    zero padding: a padded position is no input, so it adds no Inf * 0 = NaN."""
    # +Inf at both edges of x, every padding mode: the edge outputs are +Inf.
    x = np.ones((2, 3, 20), np.float32)
    x[:, :, 0] = np.inf
    x[:, :, -1] = np.inf
    w = np.full((4, 3, 5), 0.5, np.float32)
    ran = 0
    for mode in MODES:
        with maybe_forced(family):
            try:
                y = numconv.conv1d(x, w, padding=4, padding_mode=mode)
            except NotImplementedError:
                continue
        assert not np.isnan(y).any(), mode
        assert np.isposinf(y[:, :, 0]).all() and np.isposinf(y[:, :, -1]).all(), mode
        ran += 1

    # A non-finite weight tap, or grad_output value, next to zero padding.
    rng = np.random.default_rng(11)
    for (name, conv), special, k in itertools.product(
        LOCALITY_CONVS.items(), SPECIALS, ("first", "last")
    ):
        C_in, C_out, L, K, stride, dilation, (left, right), groups = conv
        kwargs = dict(
            stride=stride, padding=(left, right), dilation=dilation, groups=groups
        )
        A = tap_map(L, K, stride, dilation, left, right, "zeros")
        C_in_g, C_out_g = C_in // groups, C_out // groups
        x = nonzero_finite(rng, (3, C_in, L), np.float32)
        w = nonzero_finite(rng, (C_out, C_in_g, K), np.float32)
        g = nonzero_finite(rng, (3, C_out, A.shape[0]), np.float32)
        tap = 0 if k == "first" else K - 1
        w[0, 0, tap] = special
        g[1, C_out - 1, 0 if k == "first" else -1] = special
        context = f"[{family}, {name}, {special}, {k}]"
        with maybe_forced(family):
            try:
                y = numconv.conv1d(x, w, **kwargs)
            except NotImplementedError:
                y = None
            try:
                gw = numconv.conv1d_grad_weight(x, g, K, **kwargs)
            except NotImplementedError:
                gw = None
        groups_of = [
            (slice(q * C_in_g, (q + 1) * C_in_g), slice(q * C_out_g, (q + 1) * C_out_g))
            for q in range(groups)
        ]
        if y is not None:
            parts = [
                spread(w[co], x[:, ci], A, "ock,tki,nci->not") for ci, co in groups_of
            ]
            counts = [np.concatenate([p[j] for p in parts], axis=1) for j in range(3)]
            check_class("forward(special weight)", y, expected_class(*counts), context)
            ran += 1
        if gw is not None:
            parts = [
                spread(g[:, co], x[:, ci], A, "not,tki,nci->ock")
                for ci, co in groups_of
            ]
            counts = [np.concatenate([p[j] for p in parts], axis=0) for j in range(3)]
            check_class("grad_weight(special g)", gw, expected_class(*counts), context)
            ran += 1
    assert ran, f"{family} ran nothing"


def test_interior_is_where_no_tap_reads_padding():
    """The closed form of spec.interior agrees with the per-tap output ranges it
    stands for; the padding fix-ups above rely on it to find the edges."""
    checked = 0
    for L, K, stride, dilation, left, right in itertools.product(
        (1, 2, 5, 13), (1, 2, 3, 6), (1, 2, 3, 5), (1, 2, 4), (0, 1, 3, 7), (0, 2, 9)
    ):
        try:
            spec = build_spec(
                N=1, C_in=1, L=L, weight_shape=(1, 1, K), stride=stride,
                padding=(left, right), dilation=dilation, groups=1,
                padding_mode="zeros", dtype=np.float64, batched=True,
            )
        except ValueError:
            continue
        ranges = tap_ranges(spec)
        lo, hi = max(t0 for t0, _ in ranges), min(t1 for _, t1 in ranges)
        assert spec.interior == (lo, hi), spec
        checked += 1
    assert checked > 1000


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_outside_checks_exactly_the_edge_columns(dtype):
    shape = (2, 3, 7)
    bounds = [(0, 7), (2, 7), (0, 4), (2, 4), (5, 2), (7, 7), (0, 0), (9, 9), (3, 3)]
    for (lo, hi), special in itertools.product(bounds, (np.nan, np.inf, -np.inf)):
        assert finite_outside(np.ones(shape, dtype), lo, hi)
        for pos in np.ndindex(shape):
            a = np.ones(shape, dtype)
            a[pos] = special
            expected = bool(
                np.isfinite(a[:, :, :lo]).all() and np.isfinite(a[:, :, hi:]).all()
            )
            assert finite_outside(a, lo, hi) == expected, (lo, hi, pos)


# -- float32 accuracy against float64 --------------------------------------------------

# The bound on |float32 result - float64 reference| in units of EPS32 times the
# scale sum(|terms|) (the same operation on absolute values, in float64). It
# does not grow with the number of terms: blocked or pairwise summation stays
# within it for sums of 10**6 terms, while plain running sums of many terms
# do not (a running float32 sum of 10**6 positive terms is off by about 100).
ACCURACY_ULPS = 16


def pad64(x, left, right):
    return np.pad(x.astype(np.float64), ((0, 0), (0, 0), (left, right)))


def forward64(x, w, left, right):
    """Float64 conv1d (stride 1, groups 1, zero padding), one product per tap."""
    xp = pad64(x, left, right)
    w = w.astype(np.float64)
    K = w.shape[2]
    L_out = xp.shape[2] - K + 1
    y = np.zeros((x.shape[0], w.shape[0], L_out))
    for k in range(K):
        y += np.einsum(
            "oc,ncl->nol", w[:, :, k], xp[:, :, k : k + L_out], optimize=True
        )
    return y


def grad_input64(g, w, L, left, right):
    g = g.astype(np.float64)
    w = w.astype(np.float64)
    K = w.shape[2]
    gxp = np.zeros((g.shape[0], w.shape[1], L + left + right))
    L_out = g.shape[2]
    for k in range(K):
        gxp[:, :, k : k + L_out] += np.einsum(
            "oc,nol->ncl", w[:, :, k], g, optimize=True
        )
    return gxp[:, :, left : left + L]


def grad_weight64(x, g, K, left, right):
    xp = pad64(x, left, right)
    g = g.astype(np.float64)
    L_out = g.shape[2]
    return np.stack(
        [
            np.einsum("nol,ncl->oc", g, xp[:, :, k : k + L_out], optimize=True)
            for k in range(K)
        ],
        axis=2,
    )


ACCURACY_CASES = {
    # name: (N, C_in, C_out, L, K, distribution)
    "long_positive": (1, 1, 2, 10**6, 9, "positive"),
    "long_normal": (1, 1, 2, 10**6, 9, "normal"),
    "many_channels_positive": (2, 1024, 1024, 32, 3, "positive"),
    "many_channels_normal": (2, 1024, 1024, 32, 3, "normal"),
}


@pytest.fixture(scope="module")
def accuracy_data():
    """Inputs, float64 references and scales for every accuracy case, built once."""
    data = {}
    rng = np.random.default_rng(2024)
    for name, (N, C_in, C_out, L, K, dist) in ACCURACY_CASES.items():
        if dist == "positive":

            def draw(shape):
                return rng.random(shape, dtype=np.float32)

        else:

            def draw(shape):
                return rng.standard_normal(shape, dtype=np.float32)

        pad = K // 2
        x, w = draw((N, C_in, L)), draw((C_out, C_in, K))
        g = draw((N, C_out, L + 2 * pad - K + 1))
        ax, aw, ag = np.abs(x), np.abs(w), np.abs(g)
        data[name] = dict(
            x=x,
            w=w,
            g=g,
            pad=pad,
            forward=(forward64(x, w, pad, pad), forward64(ax, aw, pad, pad)),
            grad_input=(
                grad_input64(g, w, L, pad, pad),
                grad_input64(ag, aw, L, pad, pad),
            ),
            grad_weight=(
                grad_weight64(x, g, K, pad, pad),
                grad_weight64(ax, ag, K, pad, pad),
            ),
            grad_bias=(
                g.astype(np.float64).sum(axis=(0, 2)),
                ag.astype(np.float64).sum(axis=(0, 2)),
            ),
        )
    return data


# Known gap, measured: the direct family adds the C_in * K terms of each output
# one after another, about 0.5 * sqrt(terms) ulps of the scale when the terms
# share a sign: 32 at 3072 terms, where the gemm family and PyTorch stay within
# 4 (the failure message gives the figures of each run).
KNOWN_GAPS = {("direct", "many_channels_positive")}


@pytest.mark.parametrize("name", sorted(ACCURACY_CASES))
@pytest.mark.parametrize("family", ALL_PATHS)
def test_float32_within_rounding_of_float64(family, name, accuracy_data, request):
    if (family, name) in KNOWN_GAPS:
        request.applymarker(
            pytest.mark.xfail(reason="direct: running sums over many channels")
        )
    d = accuracy_data[name]
    x, w, g, pad = d["x"], d["w"], d["g"], d["pad"]
    K, L = w.shape[2], x.shape[2]
    ops = {
        "forward": lambda: numconv.conv1d(x, w, padding=pad),
        "grad_input": lambda: numconv.conv1d_grad_input(g, w, L, padding=pad),
        "grad_weight": lambda: numconv.conv1d_grad_weight(x, g, K, padding=pad),
        "grad_bias": lambda: numconv.conv1d_grad_bias(g),
    }
    worst = {}
    with maybe_forced(family):
        for op, call in ops.items():
            try:
                got = call()
            except NotImplementedError:
                continue
            assert got.dtype == np.float32
            ref, scale = d[op]
            worst[op] = float(np.max(np.abs(got - ref) / (EPS32 * scale)))

    assert worst, f"{family} ran no operation on {name}"
    too_far = {op: round(u, 1) for op, u in worst.items() if u > ACCURACY_ULPS}
    assert not too_far, (
        f"{family} on {name}: errors of {too_far} x eps32 x sum|terms| exceed "
        f"{ACCURACY_ULPS} (all: { {op: round(u, 2) for op, u in worst.items()} })"
    )


# -- overflow and subnormals -----------------------------------------------------------

FLT_MAX = float(np.finfo(np.float32).max)


def check_against_ieee(what, got, ref, scale, terms, tiny):
    """float32 ``got`` against the float64 ``ref`` of all-same-sign terms.

    Where |ref| exceeds float32's range the result must be Inf of ref's sign;
    where |ref| < FLT_MAX / 2 no partial sum can overflow either (the terms
    share one sign), so the result must be finite and within rounding: the
    relative bound, plus ``terms`` subnormal spacings ``tiny`` for results in
    the subnormal range. Between the two, rounding decides, so either is right.
    """
    over = np.abs(ref) > FLT_MAX * (1 + EPS32)
    assert np.array_equal(np.isinf(got) & over, over), (
        f"{what}: overflow did not give Inf"
    )
    assert (np.sign(got[over]) == np.sign(ref[over])).all(), what
    inside = np.abs(ref) < FLT_MAX / 2
    assert np.isfinite(got[inside]).all(), f"{what}: Inf or NaN where the sum fits"
    err = np.abs(got[inside].astype(np.float64) - ref[inside])
    bound = ACCURACY_ULPS * EPS32 * scale[inside] + terms * tiny
    assert (err <= bound).all(), (
        f"{what}: error {np.max(err - bound):.3g} over the bound"
    )


@pytest.mark.parametrize("family", ALL_PATHS)
def test_overflow_gives_inf_as_ieee_says(family):
    rng = np.random.default_rng(5)
    N, C_in, C_out, L, K = 2, 3, 4, 64, 5
    # Magnitudes ramp up along the signal, so early outputs fit in float32 and
    # later ones overflow; every term is positive (or, for -x, negative).
    ramp = np.linspace(0.01, 1.0, L) * 3e38
    x = (ramp * rng.uniform(0.5, 1.0, (N, C_in, L))).astype(np.float32)
    w = rng.uniform(0.2, 1.0, (C_out, C_in, K)).astype(np.float32)
    g = rng.uniform(0.2, 1.0, (N, C_out, L - K + 1)).astype(np.float32)
    g_big = (g * np.float32(3e38)).astype(np.float32)
    terms_f = C_in * K
    checked = []
    with maybe_forced(family):
        for sign in (1, -1):
            xs = (sign * x).astype(np.float32)
            try:
                y = numconv.conv1d(xs, w)
            except NotImplementedError:
                y = None
            if y is not None:
                ref = forward64(xs, w, 0, 0)
                check_against_ieee("forward", y, ref, np.abs(ref), terms_f, 0)
                checked.append("forward")
            try:
                gw = numconv.conv1d_grad_weight(xs, g, K)
            except NotImplementedError:
                gw = None
            if gw is not None:
                ref = grad_weight64(xs, g, K, 0, 0)
                check_against_ieee(
                    "grad_weight", gw, ref, np.abs(ref), N * (L - K + 1), 0
                )
                checked.append("grad_weight")
        try:
            gx = numconv.conv1d_grad_input(g_big, w, L)
        except NotImplementedError:
            gx = None
        if gx is not None:
            ref = grad_input64(g_big, w, L, 0, 0)
            check_against_ieee("grad_input", gx, ref, np.abs(ref), C_out * K, 0)
            checked.append("grad_input")
    gb = numconv.conv1d_grad_bias(g_big)
    ref = g_big.astype(np.float64).sum(axis=(0, 2))
    check_against_ieee("grad_bias", gb, ref, np.abs(ref), N * (L - K + 1), 0)

    assert checked, f"{family} ran no operation"
    # The data must really produce both outcomes, or the test proves nothing.
    assert np.isinf(y if y is not None else gx).any()
    assert np.isfinite(y if y is not None else gx).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ALL_PATHS)
def test_subnormal_inputs(family, dtype):
    """Subnormal inputs and results are computed, not flushed to zero."""
    info = np.finfo(dtype)
    tiny_normal = float(info.tiny)  # smallest normal
    spacing = float(info.smallest_subnormal)
    rng = np.random.default_rng(9)
    N, C_in, C_out, L, K, pad = 3, 4, 5, 50, 3, 1
    # Most of these are subnormal: |v| < tiny_normal.
    x_small = (rng.standard_normal((N, C_in, L)) * tiny_normal / 8).astype(dtype)
    w = rng.standard_normal((C_out, C_in, K)).astype(dtype)
    g = rng.standard_normal((N, C_out, L)).astype(dtype)
    w_small = (w * (tiny_normal / 8)).astype(dtype)
    assert (np.abs(x_small[x_small != 0]) < tiny_normal).mean() > 0.9
    eps = float(info.eps)
    terms = max(C_in * K, C_out * K, N * L)

    def check(what, got, ref, scale):
        assert got.dtype == dtype
        bound = ACCURACY_ULPS * eps * scale + 2 * terms * spacing
        err = np.abs(got.astype(np.float64) - ref)
        assert (err <= bound).all(), f"{what}: error {err.max():.3g} > bound"
        # Flushing to zero would leave these results zero.
        assert np.count_nonzero(got) > 0.9 * got.size, (
            f"{what}: results flushed to zero"
        )

    ran = []
    with maybe_forced(family):
        for what, call, ref, scale in (
            (
                "forward",
                lambda: numconv.conv1d(x_small, w, padding=pad),
                forward64(x_small, w, pad, pad),
                forward64(np.abs(x_small), np.abs(w), pad, pad),
            ),
            (
                "grad_input",
                lambda: numconv.conv1d_grad_input(g, w_small, L, padding=pad),
                grad_input64(g, w_small, L, pad, pad),
                grad_input64(np.abs(g), np.abs(w_small), L, pad, pad),
            ),
            (
                "grad_weight",
                lambda: numconv.conv1d_grad_weight(x_small, g, K, padding=pad),
                grad_weight64(x_small, g, K, pad, pad),
                grad_weight64(np.abs(x_small), np.abs(g), K, pad, pad),
            ),
        ):
            try:
                got = call()
            except NotImplementedError:
                continue
            check(what, got, ref, scale)
            ran.append(what)
    assert ran, f"{family} ran no operation"
