"""The direct family's fast paths: tiles, borders, polyphase, determinism, NaN.

The direct kernels cut each row into blocks of at most ``MAX_TILE`` outputs,
copy border blocks into scratch with zeros, run taps in blocks of four, and
split weight-gradient sums into shape-fixed chunks; strided layers with
K divisible by the stride run as a stride-1 convolution over phases, other
strided ones over copies of each row's phases. These tests aim at the edges
of each of those, against a vectorised float64 reference (the loop reference
in ``reference.py`` is too slow for rows longer than a tile).
"""

import numba
import numpy as np
import pytest

import numconv
from numconv import _dispatch, _polyphase
from numconv._kernels import direct
from numconv._spec import build_spec
from tolerances import assert_close, inner


def ref_forward(x, w, b, stride, left, right, dilation, groups):
    """y (N, C_out, L_out) in float64, one vectorised product per tap."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (left, right)))
    N, C_in, Lp = x.shape
    C_out, C_in_g, K = w.shape
    L_out = (Lp - dilation * (K - 1) - 1) // stride + 1
    xg = x.reshape(N, groups, C_in_g, Lp)
    wg = w.astype(np.float64).reshape(groups, C_out // groups, C_in_g, K)
    y = np.zeros((N, groups, C_out // groups, L_out))
    for k in range(K):
        start = k * dilation
        window = xg[..., start : start + (L_out - 1) * stride + 1 : stride]
        y += np.einsum("goc,ngct->ngot", wg[..., k], window)
    return y.reshape(N, C_out, L_out) + b.astype(np.float64)[None, :, None]


def ref_grads(x, w, g, stride, left, right, dilation, groups):
    """(grad_input (N, C_in, L), grad_weight) in float64."""
    L = x.shape[2]
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (left, right)))
    N, C_in, Lp = x.shape
    C_out, C_in_g, K = w.shape
    L_out = g.shape[2]
    xg = x.reshape(N, groups, C_in_g, Lp)
    wg = w.astype(np.float64).reshape(groups, C_out // groups, C_in_g, K)
    gg = g.astype(np.float64).reshape(N, groups, C_out // groups, L_out)
    gx = np.zeros_like(xg)
    gw = np.zeros_like(wg)
    for k in range(K):
        sl = slice(k * dilation, k * dilation + (L_out - 1) * stride + 1, stride)
        gx[..., sl] += np.einsum("goc,ngot->ngct", wg[..., k], gg)
        gw[..., k] = np.einsum("ngot,ngct->goc", gg, xg[..., sl])
    gx = gx.reshape(N, C_in, Lp)[:, :, left : left + L]
    return gx, gw.reshape(C_out, C_in_g, K)


# (N, C_in, C_out, L, K, stride, (left, right), dilation, groups), each aimed at
# one edge of the tiled kernels.
CASES = {
    "long_row_partial_tile": (1, 1, 1, 2 * direct.MAX_TILE + 37, 9, 1, (4, 4), 1, 1),
    "depthwise_two_tiles": (2, 3, 3, direct.MAX_TILE + 5, 31, 1, (15, 15), 1, 3),
    "k1": (2, 4, 6, 50, 1, 1, (0, 0), 1, 2),
    "huge_k": (2, 2, 2, 40, 90, 1, (60, 55), 1, 2),
    "padding_past_row": (1, 2, 3, 5, 3, 1, (9, 12), 2, 1),
    "causal_dilated": (3, 5, 5, 77, 7, 1, (24, 0), 4, 1),
    "tap_remainders": (2, 6, 4, 61, 7, 1, (3, 3), 1, 2),
    "polyphase_w2v": (2, 1, 6, 403, 10, 5, (0, 0), 1, 1),
    "polyphase_padded_groups": (2, 4, 6, 97, 4, 2, (3, 2), 1, 2),
    "strided_not_polyphase": (2, 4, 4, 51, 3, 2, (1, 1), 2, 2),
    # Strided loops over phase copies: more than one block of outputs (and of
    # input-gradient phase positions), a last partial block, taps of every
    # phase, and a phase no tap reads (K = 2 < stride = 3).
    "strided_tiles": (1, 2, 2, 2 * 2 * direct.STRIDED_TILE + 301, 5, 2, (2, 1), 1, 2),
    "strided_dilated_tiles": (1, 1, 1, 3 * direct.STRIDED_TILE + 7, 4, 3, (0, 5), 2, 1),
    "strided_phase_unread": (2, 3, 2, 40, 2, 3, (1, 1), 1, 1),
    "many_out_channels": (1, 2, 130, 33, 3, 1, (1, 1), 1, 1),
    # Few output channels (taps outermost), more than one tile in either dtype.
    "few_rows_tiles": (2, 3, 5, direct.FEW_ROWS_BYTES // 10 + 37, 6, 1, (3, 2), 1, 1),
    "few_rows_tap_blocks": (2, 7, 3, 300, 1, 1, (0, 0), 1, 1),
    # Short items with a border whose rows fit WHOLE_COPY run as one copied
    # part; others as border parts around an interior read in place.
    "border_items_whole": (2, 4, 8, 64, 3, 1, (1, 1), 1, 1),
    "border_items_split": (2, 8, 6, direct.WHOLE_COPY // 8 + 20, 5, 1, (2, 2), 1, 1),
    "border_items_split_many_rows": (1, 40, 4, 200, 3, 1, (2, 0), 2, 2),
    "border_items_split_long": (2, 1, 3, direct.WHOLE_POSITIONS + 9, 4, 1, (3, 0), 1, 1),
}


def _arrays(case, dtype, seed=0):
    N, C_in, C_out, L, K, s, pad, d, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C_in, L)).astype(dtype)
    w = rng.standard_normal((C_out, C_in // groups, K)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype)
    L_out = (L + pad[0] + pad[1] - d * (K - 1) - 1) // s + 1
    g = rng.standard_normal((N, C_out, L_out)).astype(dtype)
    return x, w, b, g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_direct_matches_reference(name, dtype):
    case = CASES[name]
    _, _, _, _, _, s, pad, d, groups = case
    x, w, b, g = _arrays(case, dtype)
    kw = dict(stride=s, padding=pad, dilation=d, groups=groups)

    with _dispatch.force("direct"):
        y = numconv.conv1d(x, w, b, **kw)
        grads = numconv.conv1d_backward(x, w, g, **kw)
    y_ref = ref_forward(x, w, b, s, pad[0], pad[1], d, groups)
    gx_ref, gw_ref = ref_grads(x, w, g, s, pad[0], pad[1], d, groups)

    ax, aw, ag = np.abs(x), np.abs(w), np.abs(g)
    zero_b = np.zeros_like(b)
    assert y.dtype == grads.input.dtype == grads.weight.dtype == np.dtype(dtype)
    assert_close(y, y_ref, ref_forward(ax, aw, np.abs(b), s, *pad, d, groups), dtype, "y")
    scale_gx, scale_gw = ref_grads(ax, aw, ag, s, pad[0], pad[1], d, groups)
    assert_close(grads.input, gx_ref, scale_gx, dtype, "grad_input")
    assert_close(grads.weight, gw_ref, scale_gw, dtype, "grad_weight")
    assert ref_forward(ax, aw, zero_b, s, *pad, d, groups).max() > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cropped_input_gradient_equals_padded_then_folded(dtype):
    from numconv._padding import fold_padding

    for name in ("huge_k", "padding_past_row", "causal_dilated", "polyphase_w2v"):
        case = CASES[name]
        N, C_in, _, L, _, s, pad, d, groups = case
        _, w, _, g = _arrays(case, dtype)
        spec = build_spec(
            N=N, C_in=C_in, L=L, weight_shape=w.shape, stride=s, padding=pad,
            dilation=d, groups=groups, padding_mode="zeros", dtype=np.dtype(dtype),
            batched=True,
        )
        with _dispatch.force("direct"):
            direct_crop = _dispatch.grad_input(g, w, spec)
            folded = fold_padding(_dispatch.grad_padded_input(g, w, spec), spec)
        np.testing.assert_array_equal(direct_crop, folded)


def test_polyphase_weight_round_trip():
    w = np.arange(3 * 2 * 12, dtype=np.float64).reshape(3, 2, 12)
    for s in (1, 2, 3, 4, 6, 12):
        wph = _polyphase.phase_weight(w, s)
        assert wph.shape == (3, 2 * s, 12 // s)
        for k in range(12):
            q, r = divmod(k, s)
            np.testing.assert_array_equal(wph[:, r::s][:, :, q], w[:, :, k])
        back = _polyphase.weight_from_phases(wph, s, w.shape[2])
        np.testing.assert_array_equal(back, w)


@pytest.mark.parametrize("pad", [(0, 0), (3, 2), (7, 0)])
def test_polyphase_split_and_interleave_are_adjoint(pad):
    # <split(x), y> == <x_padded, interleave(y)>: the interleave that carries the
    # phase-form input gradient back is the adjoint of the split.
    case = (2, 3, 3, 41, 6, 3, pad, 1, 1)
    N, C_in, _, L, K, s, _, _, _ = case
    x, w, _, _ = _arrays(case, np.float64)
    spec = build_spec(
        N=N, C_in=C_in, L=L, weight_shape=w.shape, stride=s, padding=pad,
        dilation=1, groups=1, padding_mode="zeros", dtype=np.dtype(np.float64),
        batched=True,
    )
    assert _polyphase.applies(spec, direct, "forward")
    from numconv._padding import pad_input

    xph = _polyphase.split_input(pad_input(x, spec), spec)
    assert xph.shape == (N, C_in * s, spec.L_out + K // s - 1)
    y = np.random.default_rng(1).standard_normal(xph.shape)
    back = np.empty((N, C_in, spec.L_padded))
    _polyphase._interleave(y, s, back)
    xp = np.pad(x, ((0, 0), (0, 0), pad))
    assert abs(inner(xph, y) - inner(xp, back)) <= 1e-12 * inner(abs(xph), abs(y))


def test_polyphase_is_used_only_without_structural_zeros():
    def spec_for(K, s, d):
        return build_spec(
            N=1, C_in=1, L=100, weight_shape=(1, 1, K), stride=s, padding=0,
            dilation=d, groups=1, padding_mode="zeros", dtype=np.dtype(np.float32),
            batched=True,
        )

    assert _polyphase.applies(spec_for(10, 5, 1), direct, "forward")
    assert not _polyphase.applies(spec_for(3, 2, 1), direct, "forward")
    assert not _polyphase.applies(spec_for(4, 2, 3), direct, "forward")
    assert not _polyphase.applies(spec_for(4, 1, 1), direct, "forward")


@pytest.mark.parametrize(
    "name",
    ["long_row_partial_tile", "polyphase_w2v", "causal_dilated", "strided_tiles"],
)
def test_weight_gradient_bitwise_identical_across_thread_counts(name):
    case = CASES[name]
    _, _, _, _, _, s, pad, d, groups = case
    x, w, _, g = _arrays(case, np.float32, seed=3)
    kw = dict(stride=s, padding=pad, dilation=d, groups=groups)
    previous = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            with _dispatch.force("direct"):
                grads = numconv.conv1d_backward(x, w, g, **kw)
            results.append((grads.weight.tobytes(), grads.bias.tobytes()))
    finally:
        numba.set_num_threads(previous)
    assert all(r == results[0] for r in results)


def _receptive(L_out, stride, left, dilation, K, L):
    """mask[t, i]: input position i is in output t's receptive field."""
    t = np.arange(L_out)[:, None]
    i = np.arange(L)[None, :]
    taps = (i + left - t * stride)
    return (taps >= 0) & (taps <= (K - 1) * dilation) & (taps % dilation == 0)


@pytest.mark.parametrize(
    "name", ["polyphase_w2v", "strided_not_polyphase", "causal_dilated", "huge_k",
             "long_row_partial_tile", "strided_tiles", "strided_dilated_tiles"]
)
def test_nan_reaches_exactly_its_receptive_field(name):
    case = CASES[name]
    N, C_in, C_out, L, K, s, pad, d, groups = case
    x, w, b, g = _arrays(case, np.float32)
    kw = dict(stride=s, padding=pad, dilation=d, groups=groups)
    where = [0, L // 2, L - 1]
    x[0, 0, where] = [np.nan, np.inf, np.nan]
    g[-1, -1, g.shape[2] // 3] = np.nan

    with _dispatch.force("direct"):
        y = numconv.conv1d(x, w, b, **kw)
        gx = numconv.conv1d_grad_input(g, w, L, **kw)

    field = _receptive(y.shape[2], s, pad[0], d, K, L)
    hit = field[:, where].any(axis=1)
    group_out = slice(0, C_out // groups)
    assert np.array_equal(~np.isfinite(y[0, group_out]), np.broadcast_to(hit, y[0, group_out].shape))
    assert np.isfinite(y[0, C_out // groups :]).all() and np.isfinite(y[1:]).all()
    t = g.shape[2] // 3
    group_in = slice(C_in - C_in // groups, C_in)
    assert np.array_equal(np.isnan(gx[-1, group_in]), np.broadcast_to(field[t], gx[-1, group_in].shape))
    assert np.isfinite(gx[:-1]).all() and np.isfinite(gx[-1, : C_in - C_in // groups]).all()


@pytest.mark.parametrize("family", ["direct", "tiled"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_bias_from_the_weight_pass_is_grad_bias(family, dtype):
    # A depthwise layer with many groups: one weight-gradient chunk per group
    # and one block per row, so both families take the bias sums from their
    # weight-gradient pass.
    case = (3, 40, 40, 500, 17, 1, (16, 0), 1, 40)
    x, w, _, g = _arrays(case, dtype)
    kw = dict(padding=(16, 0), groups=40)
    with _dispatch.force(family):
        grads = numconv.conv1d_backward(x, w, g, **kw)
    np.testing.assert_array_equal(grads.bias, numconv.conv1d_grad_bias(g))
    exact = g.astype(np.float64).sum(axis=(0, 2))
    scale = np.abs(g).astype(np.float64).sum(axis=(0, 2))
    assert np.all(np.abs(grads.bias - exact) <= 64 * np.finfo(dtype).eps * scale)


def test_direct_fuses_the_bias_sums_only_in_row_order():
    rng = np.random.default_rng(3)
    for (N, C, groups, L), fused in (((3, 40, 40, 500), True), ((8, 4, 1, 300), False)):
        x = rng.standard_normal((N, C, L))
        g = rng.standard_normal((N, C, L - 2))
        gw = np.empty((C, C // groups, 3))
        gb = np.full(C, np.nan)
        assert direct._weight_and_bias(x, 0, g, groups, 1, gw, gb) == fused
        if fused:
            np.testing.assert_array_equal(gb, numconv.conv1d_grad_bias(g))
        else:
            assert np.isnan(gb).all()
