"""Hostile and unusual inputs: fuzzing, odd arrays, absurd sizes, aliasing.

The fuzz tests start from a valid call (drawn by ``strategies.cases``) and
replace some of its arguments with arbitrary values and types. A call must
either return results of the documented shape and dtype that match the naive
reference, or raise TypeError, ValueError or MemoryError with a message; when
the only replaced argument has the wrong type, the message must name it. A
crash ends the test run, and a hang is ended by ``faulthandler`` with the
stacks of every thread.
"""

import faulthandler
import hashlib
import tracemalloc

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import numconv
import reference
from robust_util import SETTINGS, make_arrays
from strategies import cases
from tolerances import assert_close

DOCUMENTED = (TypeError, ValueError, MemoryError)
HANG_SECONDS = 600


@pytest.fixture(scope="module")
def hang_guard():
    """Ends the process with every thread's stack if a test runs for too long."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# -- arbitrary values ------------------------------------------------------------------

ODD_DTYPES = [
    "float16",
    "complex64",
    ">f4",
    ">f8",
    "int8",
    "uint64",
    "bool",
    "object",
    "U2",
]


def arrays_of_any_kind():
    """Arrays of odd dtypes and shapes (0 to 4 dimensions, zero-length axes)."""
    return st.builds(
        lambda shape, dtype, seed: _odd_array(shape, dtype, seed),
        st.lists(st.integers(0, 4), max_size=4),
        st.sampled_from(["float32", "float64"] + ODD_DTYPES),
        st.integers(0, 2**16),
    )


def _odd_array(shape, dtype, seed):
    values = np.random.default_rng(seed).standard_normal(shape)
    if dtype == "U2":
        return values.astype("U2")
    return values.astype(dtype)


def nested_lists():
    """Rectangular or ragged nested lists of numbers."""
    leaf = st.one_of(st.integers(-5, 5), st.floats(-5, 5))
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=24)


def any_array_argument(base):
    """Anything at all where an array is expected, including variants of ``base``."""
    variants = [
        base.astype(np.float16),
        base.astype(">f4"),
        base.astype(np.int16),
        base.astype(object),
        base[..., :0],
        base[..., ::2],
        np.asarray(base.sum()),
        base.T,
        base[None],
    ]
    return st.one_of(
        st.none(),
        st.integers(-3, 3),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.complex_numbers(max_magnitude=3),
        st.text(max_size=3),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
        nested_lists(),
        arrays_of_any_kind(),
        st.sampled_from(variants),
    )


def any_int_argument():
    """Anything where an int is expected: valid, negative, huge, or of a wrong type."""
    return st.one_of(
        st.integers(-3, 12),
        st.sampled_from([0, -1, 2**31, 2**32, 2**40, 2**63, -(2**63), 10**30]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.text(max_size=4),
        st.tuples(st.integers(-2, 6)),
        st.tuples(st.integers(-2, 6), st.integers(-2, 6)),
        st.lists(st.integers(-2, 6), max_size=3),
        st.builds(np.int64, st.integers(-3, 12)),
        st.builds(np.float32, st.floats(-3, 12, width=32)),
        st.just(np.array([2])),
        st.complex_numbers(max_magnitude=5),
    )


def any_padding_argument():
    return st.one_of(
        any_int_argument(),
        st.sampled_from(["same", "valid", "causal", "full", "", "SAME"]),
        st.tuples(st.integers(-2, 6), st.integers(-2, 6), st.integers(0, 2)),
        st.tuples(st.sampled_from([0, 2**32, -(2**40)]), st.integers(0, 3)),
    )


def any_mode_argument():
    return st.one_of(
        st.sampled_from(
            ["zeros", "reflect", "replicate", "circular", "Zeros", "", "wrap"]
        ),
        st.none(),
        st.integers(),
        st.text(max_size=8),
    )


# -- the documented forms, parsed independently of numconv -----------------------------


def parse_int(value, minimum):
    """An int or 1-sequence of one, >= minimum; None when not of that form."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            return None
        value = value[0]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    value = int(value)
    return value if value >= minimum else None


def parse_padding(padding, L, K, stride, dilation):
    if isinstance(padding, str):
        if padding not in ("valid", "same", "causal"):
            return None
        return reference.padding_pair(padding, L, K, stride, dilation)
    if isinstance(padding, (list, tuple)) and len(padding) == 2:
        pair = parse_int(padding[0], 0), parse_int(padding[1], 0)
        return None if None in pair else pair
    p = parse_int(padding, 0)
    return None if p is None else (p, p)


def expected_dtype(*arrays):
    """float32 when every array is float32 (any byte order), else float64."""
    kinds = [np.asarray(a).dtype for a in arrays if a is not None]
    if all(k.kind == "f" and k.itemsize == 4 for k in kinds):
        return np.float32
    return np.float64


def numeric(value):
    """value as a float64 array when it is a numeric array-like, else None."""
    if value is None or isinstance(value, (str, dict, np.ma.MaskedArray)):
        return None
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if (
        arr.dtype.kind not in "biuf"
        or arr.dtype.itemsize > 8
        or arr.dtype == np.float16
    ):
        return None
    return arr.astype(np.float64)


# -- the fuzz tests --------------------------------------------------------------------


def mutate(data, args, pools):
    """Replace none, one, or a few arguments by arbitrary values; their names.

    Most draws replace at most one argument, so that many calls stay valid or
    fail for one identifiable reason.
    """
    count = data.draw(st.sampled_from([0, 0, 1, 1, 1, 1, 2, 3]), label="replaced")
    names = data.draw(st.permutations(sorted(pools)), label="order")[:count]
    for name in names:
        args[name] = data.draw(pools[name], label=name)
    return list(names)


def wrong_type(value, kind):
    """True when ``value`` is plainly not a value of its parameter's kind."""
    if kind == "array":
        return value is None or isinstance(value, (str, dict))
    if kind == "int":
        if isinstance(value, (list, tuple)):
            return len(value) == 1 and wrong_type(value[0], "int")
        return isinstance(value, (float, complex, str, type(None), bool, np.floating))
    if kind == "padding":
        if isinstance(value, str):
            return value not in ("valid", "same", "causal")
        return wrong_type(value, "int")
    if kind == "mode":
        return not isinstance(value, str) or value not in reference_modes()
    return False


def call_and_check(fn, args, replaced, kinds):
    """Call; on error check the type and message; return the result or None."""
    try:
        result = fn(**args)
        event(f"{fn.__name__} returned")
        return result
    except DOCUMENTED as err:
        event(f"{fn.__name__} raised {type(err).__name__}")
        message = str(err)
        assert message, f"{type(err).__name__} without a message"
        if len(replaced) == 1 and wrong_type(args[replaced[0]], kinds[replaced[0]]):
            name = replaced[0]
            assert name in message or name.replace("_", " ") in message, (
                f"{type(err).__name__} for a bad {name}={args[name]!r} does not name "
                f"{name}: {message}"
            )
        return None
    except NotImplementedError:
        raise
    except Exception as err:  # anything else is a defect: report the call
        raise AssertionError(
            f"undocumented {type(err).__name__}: {err} for replaced {replaced}"
        ) from err


def hyper(args, L, K):
    """Parsed (stride, left, right, dilation, groups, mode), or None if not valid."""
    stride = parse_int(args.get("stride", 1), 1)
    dilation = parse_int(args.get("dilation", 1), 1)
    groups = parse_int(args.get("groups", 1), 1)
    mode = args.get("padding_mode", "zeros")
    if None in (stride, dilation, groups) or mode not in reference_modes():
        return None
    pair = parse_padding(args.get("padding", 0), L, K, stride, dilation)
    if pair is None:
        return None
    return stride, pair[0], pair[1], dilation, groups, mode


def reference_modes():
    return ("zeros", "reflect", "replicate", "circular")


def abs_scale(fn, *arrays):
    return fn(*[np.abs(a) for a in arrays])


def common_pools():
    return {
        "stride": any_int_argument(),
        "padding": any_padding_argument(),
        "dilation": any_int_argument(),
        "groups": any_int_argument(),
        "padding_mode": any_mode_argument(),
    }


KINDS = dict(
    x="array",
    weight="array",
    bias="array",
    grad_output="array",
    stride="int",
    dilation="int",
    groups="int",
    input_length="int",
    kernel_size="int",
    output_padding="int",
    padding="padding",
    padding_mode="mode",
)


@settings(max_examples=settings().max_examples * 2)
@given(case=cases(), data=st.data())
def test_fuzz_conv1d(case, data, hang_guard):
    args = dict(x=case.x, weight=case.weight, bias=case.bias, **case.kwargs)
    pools = dict(
        x=any_array_argument(case.x),
        weight=any_array_argument(case.weight),
        bias=any_array_argument(case.bias),
        **common_pools(),
    )
    replaced = mutate(data, args, pools)

    y = call_and_check(numconv.conv1d, args, replaced, KINDS)

    if y is None:
        return
    x, w, b = numeric(args["x"]), numeric(args["weight"]), numeric(args["bias"])
    assert x is not None and w is not None, f"accepted non-numeric input {replaced}"
    assert isinstance(y, np.ndarray) and y.dtype == expected_dtype(
        args["x"], args["weight"], args["bias"]
    )
    params = hyper(args, x.shape[-1], w.shape[-1])
    assert params is not None, f"accepted undocumented arguments {replaced}: {args}"
    xb = x if x.ndim == 3 else x[None]
    ref = reference.conv1d(xb, w, b, *params)
    scale = reference.conv1d(
        np.abs(xb), np.abs(w), None if b is None else np.abs(b), *params
    )
    ref, scale = (ref, scale) if x.ndim == 3 else (ref[0], scale[0])
    assert y.shape == ref.shape, (y.shape, ref.shape)
    finite = np.isfinite(scale)
    assert_close(y[finite], ref[finite], scale[finite], y.dtype, "fuzzed conv1d")


@given(case=cases(), data=st.data())
def test_fuzz_backward(case, data, hang_guard):
    args = dict(
        x=case.x, weight=case.weight, grad_output=case.grad_output, **case.kwargs
    )
    pools = dict(
        x=any_array_argument(case.x),
        weight=any_array_argument(case.weight),
        grad_output=any_array_argument(case.grad_output),
        bias=st.one_of(
            st.booleans(), st.none(), st.integers(0, 1), st.text(max_size=2)
        ),
        **common_pools(),
    )
    replaced = mutate(data, args, pools)

    grads = call_and_check(numconv.conv1d_backward, args, replaced, KINDS)

    if grads is None:
        return
    x, w, g = (numeric(args[k]) for k in ("x", "weight", "grad_output"))
    assert all(v is not None for v in (x, w, g)), (
        f"accepted non-numeric input {replaced}"
    )
    params = hyper(args, x.shape[-1], w.shape[-1])
    assert params is not None, f"accepted undocumented arguments {replaced}: {args}"
    dtype = expected_dtype(args["x"], args["weight"], args["grad_output"])
    xb, gb = (x, g) if x.ndim == 3 else (x[None], g[None])
    ref_gx = reference.grad_input(gb, w, x.shape[-1], *params)
    ref_gw = reference.grad_weight(xb, gb, w.shape[-1], *params)
    assert grads.input.shape == x.shape and grads.input.dtype == dtype
    assert grads.weight.shape == w.shape and grads.weight.dtype == dtype
    scale_gx = reference.grad_input(np.abs(gb), np.abs(w), x.shape[-1], *params)
    scale_gw = reference.grad_weight(np.abs(xb), np.abs(gb), w.shape[-1], *params)
    gx = grads.input if x.ndim == 3 else grads.input[None]
    ok = np.isfinite(scale_gx)
    assert_close(gx[ok], ref_gx[ok], scale_gx[ok], dtype, "fuzzed grad input")
    ok = np.isfinite(scale_gw)
    assert_close(
        grads.weight[ok], ref_gw[ok], scale_gw[ok], dtype, "fuzzed grad weight"
    )
    if args.get("bias", True):
        assert grads.bias.shape == (w.shape[0],)
        assert_close(
            grads.bias,
            reference.grad_bias(gb),
            reference.grad_bias(np.abs(gb)),
            dtype,
            "fuzzed grad bias",
        )
    else:
        assert grads.bias is None


@given(case=cases(), data=st.data())
def test_fuzz_grad_input_and_weight(case, data, hang_guard):
    args_i = dict(
        grad_output=case.grad_output,
        weight=case.weight,
        input_length=case.L,
        **case.kwargs,
    )
    args_w = dict(
        x=case.x, grad_output=case.grad_output, kernel_size=case.K, **case.kwargs
    )
    pools = common_pools()
    replaced_i = mutate(
        data,
        args_i,
        dict(
            grad_output=any_array_argument(case.grad_output),
            weight=any_array_argument(case.weight),
            input_length=any_int_argument(),
            **pools,
        ),
    )
    replaced_w = mutate(
        data,
        args_w,
        dict(
            x=any_array_argument(case.x),
            grad_output=any_array_argument(case.grad_output),
            kernel_size=any_int_argument(),
            **pools,
        ),
    )

    gx = call_and_check(numconv.conv1d_grad_input, args_i, replaced_i, KINDS)
    gw = call_and_check(numconv.conv1d_grad_weight, args_w, replaced_w, KINDS)

    if gx is not None:
        g, w = numeric(args_i["grad_output"]), numeric(args_i["weight"])
        L = parse_int(args_i["input_length"], 0)
        assert all(v is not None for v in (g, w, L)), (
            f"accepted undocumented input {replaced_i}"
        )
        params = hyper(args_i, L, w.shape[-1])
        assert params is not None, f"accepted undocumented arguments {replaced_i}"
        gb = g if g.ndim == 3 else g[None]
        ref = reference.grad_input(gb, w, L, *params)
        scale = reference.grad_input(np.abs(gb), np.abs(w), L, *params)
        got = gx if g.ndim == 3 else gx[None]
        assert got.shape == ref.shape
        assert gx.dtype == expected_dtype(args_i["grad_output"], args_i["weight"])
        ok = np.isfinite(scale)
        assert_close(got[ok], ref[ok], scale[ok], gx.dtype, "fuzzed grad_input")
    if gw is not None:
        x, g = numeric(args_w["x"]), numeric(args_w["grad_output"])
        K = parse_int(args_w["kernel_size"], 1)
        assert all(v is not None for v in (x, g, K)), (
            f"accepted undocumented input {replaced_w}"
        )
        params = hyper(args_w, x.shape[-1], K)
        assert params is not None, f"accepted undocumented arguments {replaced_w}"
        xb, gb = (x, g) if x.ndim == 3 else (x[None], g[None])
        ref = reference.grad_weight(xb, gb, K, *params)
        scale = reference.grad_weight(np.abs(xb), np.abs(gb), K, *params)
        assert gw.shape == ref.shape
        assert gw.dtype == expected_dtype(args_w["x"], args_w["grad_output"])
        ok = np.isfinite(scale)
        assert_close(gw[ok], ref[ok], scale[ok], gw.dtype, "fuzzed grad_weight")


@given(case=cases(), data=st.data())
def test_fuzz_grad_bias_and_transpose(case, data, hang_guard):
    args_b = dict(grad_output=case.grad_output)
    replaced_b = mutate(
        data, args_b, dict(grad_output=any_array_argument(case.grad_output))
    )
    gb = call_and_check(numconv.conv1d_grad_bias, args_b, replaced_b, KINDS)
    if gb is not None:
        g = numeric(args_b["grad_output"])
        assert g is not None and g.ndim in (2, 3)
        g3 = g if g.ndim == 3 else g[None]
        assert_close(
            gb,
            reference.grad_bias(g3),
            reference.grad_bias(np.abs(g3)) + 1e-300,
            gb.dtype,
            "fuzzed grad_bias",
        )

    # conv_transpose1d: grad_output plays x, the conv weight is its weight.
    kw = case.kwargs
    args_t = dict(
        x=case.grad_output,
        weight=case.weight,
        bias=None,
        stride=kw["stride"],
        padding=data.draw(st.integers(0, 3)),
        output_padding=0,
        groups=kw["groups"],
        dilation=kw["dilation"],
    )
    replaced_t = mutate(
        data,
        args_t,
        dict(
            x=any_array_argument(case.grad_output),
            weight=any_array_argument(case.weight),
            bias=any_array_argument(case.bias),
            stride=any_int_argument(),
            padding=any_padding_argument(),
            output_padding=any_int_argument(),
            groups=any_int_argument(),
            dilation=any_int_argument(),
        ),
    )
    yt = call_and_check(numconv.conv_transpose1d, args_t, replaced_t, KINDS)
    if yt is None:
        return
    x, w, b = (numeric(args_t[k]) for k in ("x", "weight", "bias"))
    stride, dilation, groups, p, op = (
        parse_int(args_t[k], m)
        for k, m in (
            ("stride", 1),
            ("dilation", 1),
            ("groups", 1),
            ("padding", 0),
            ("output_padding", 0),
        )
    )
    assert all(v is not None for v in (x, w, stride, dilation, groups, p, op)), (
        f"accepted undocumented arguments {replaced_t}: {args_t}"
    )
    xb = x if x.ndim == 3 else x[None]
    K = w.shape[-1]
    L_out = (xb.shape[-1] - 1) * stride - 2 * p + dilation * (K - 1) + op + 1
    ref = reference.grad_input(xb, w, L_out, stride, p, p, dilation, groups, "zeros")
    scale = reference.grad_input(
        np.abs(xb), np.abs(w), L_out, stride, p, p, dilation, groups, "zeros"
    )
    if b is not None:
        ref = ref + b[None, :, None]
        scale = scale + np.abs(b)[None, :, None]
    got = yt if x.ndim == 3 else yt[None]
    assert got.shape == ref.shape, (got.shape, ref.shape)
    ok = np.isfinite(scale)
    assert_close(got[ok], ref[ok], scale[ok], yt.dtype, "fuzzed conv_transpose1d")


# -- unusual arrays --------------------------------------------------------------------

X = np.random.default_rng(1).standard_normal((3, 4, 30)).astype(np.float32)
W = np.random.default_rng(2).standard_normal((6, 4, 5)).astype(np.float32)
B = np.random.default_rng(3).standard_normal(6).astype(np.float32)
G = np.random.default_rng(4).standard_normal((3, 6, 29)).astype(np.float32)
KW = dict(padding=(2, 1), stride=1, dilation=1)


def all_results(x, w, b, g, **kw):
    """Every public function on one set of arrays (conv_transpose1d of g with w)."""
    kw = {**KW, **kw}
    grads = numconv.conv1d_backward(x, w, g, **kw)
    return {
        "forward": numconv.conv1d(x, w, b, **kw),
        "grad_input": numconv.conv1d_grad_input(g, w, np.shape(x)[-1], **kw),
        "grad_weight": numconv.conv1d_grad_weight(x, g, np.shape(w)[-1], **kw),
        "grad_bias": numconv.conv1d_grad_bias(g),
        "backward.input": grads.input,
        "backward.weight": grads.weight,
        "backward.bias": grads.bias,
        "transpose": numconv.conv_transpose1d(g, w, None, padding=1),
    }


EXPECTED = all_results(X, W, B, G)


def assert_same_results(got, what):
    for name, ref in EXPECTED.items():
        np.testing.assert_array_equal(got[name], ref, err_msg=f"{what}: {name}")


def file_digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
def test_memory_mapped_inputs(tmp_path, mode):
    """Read-only, read-write and copy-on-write maps: same results, files unchanged."""
    maps = {}
    for name, arr in dict(x=X, w=W, b=B, g=G).items():
        path = tmp_path / f"{name}.bin"
        arr.tofile(path)
        maps[name] = (
            path,
            file_digest(path),
            np.memmap(path, arr.dtype, mode, shape=arr.shape),
        )

    got = all_results(*(maps[k][2] for k in ("x", "w", "b", "g")))

    assert_same_results(got, f"memmap mode {mode}")
    for name, (path, digest, mm) in maps.items():
        del mm
        assert file_digest(path) == digest, f"{name}'s file changed"


def unaligned(arr):
    """A copy of arr whose data starts one byte off its dtype's alignment."""
    buf = np.zeros(arr.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, arr.dtype, arr.size, offset=1).reshape(arr.shape)
    out[...] = arr
    return out


def read_only(arr):
    out = arr.copy()
    out.flags.writeable = False
    return out


def fortran(arr):
    return np.asfortranarray(arr)


def strided(arr):
    """A non-contiguous view with the same values (every other element)."""
    buf = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), arr.dtype)
    buf[..., ::2] = arr
    return buf[..., ::2]


def reversed_view(arr):
    """A view with negative strides on the last axis that reads arr's values."""
    return arr[..., ::-1].copy()[..., ::-1]


def big_endian(arr):
    return arr.astype(arr.dtype.newbyteorder(">"))


@pytest.mark.parametrize(
    "layout", [read_only, unaligned, fortran, strided, reversed_view, big_endian]
)
def test_unusual_layouts_give_identical_results(layout):
    got = all_results(layout(X), layout(W), layout(B), layout(G))

    assert_same_results(got, layout.__name__)


def test_nested_lists_and_integer_input():
    """Rectangular nested lists compute like arrays; ints and bools give float64."""
    got = all_results(X.tolist(), W.tolist(), B.tolist(), G.tolist())
    for name, ref in EXPECTED.items():
        assert got[name].dtype == np.float64
        assert_close(got[name], ref, np.abs(ref) + 1, np.float32, name)

    xi = (X * 4).astype(np.int32)
    y = numconv.conv1d(xi, W, padding=2)
    assert y.dtype == np.float64
    np.testing.assert_allclose(
        y,
        numconv.conv1d(xi.astype(np.float64), W.astype(np.float64), padding=2),
        rtol=0,
        atol=0,
    )
    yb = numconv.conv1d(X > 0, W > 0, padding=2)
    ref = reference.conv1d(
        (X > 0).astype(float), (W > 0).astype(float), None, 1, 2, 2, 1, 1, "zeros"
    )
    np.testing.assert_array_equal(yb, ref)


BAD_VALUES = [
    # (argument, value, exception)
    ("x", None, TypeError),
    ("x", 1.5, ValueError),
    ("x", np.float32(2), ValueError),
    ("x", np.ones(()), ValueError),
    ("x", [[1.0, 2.0, 3.0], [1.0, 2.0]], ValueError),
    ("x", [[[1.0, 2.0], [1.0, 2.0, 3.0]]], ValueError),
    ("x", "text", TypeError),
    ("x", {"a": 1}, TypeError),
    ("x", np.ma.masked_array(X, X > 0), TypeError),
    ("x", X.astype(np.float16), TypeError),
    ("x", X.astype(np.complex64), TypeError),
    ("weight", None, TypeError),
    ("weight", 2.0, ValueError),
    ("weight", np.ones(()), ValueError),
    ("weight", [[[1.0, 2.0]], [[1.0]]], ValueError),
    ("bias", 0.5, ValueError),
    ("bias", np.ones(()), ValueError),
    ("bias", [1.0, [2.0]], ValueError),
    ("bias", "b", (TypeError, ValueError)),
]


@pytest.mark.parametrize("arg, value, exc", BAD_VALUES, ids=lambda v: repr(v)[:20])
def test_scalars_none_and_ragged_lists_are_refused_by_name(arg, value, exc):
    args = dict(x=X, weight=W, bias=B)
    args[arg] = value
    with pytest.raises(exc) as info:
        numconv.conv1d(**args)
    assert arg in str(info.value)


@pytest.mark.parametrize(
    "fn_name",
    ["conv1d_grad_bias", "conv1d_grad_input", "conv1d_backward", "conv_transpose1d"],
)
@pytest.mark.parametrize("value", [None, 1.0, np.ones(()), [[1.0], [1.0, 2.0]], "g"])
def test_bad_grad_output_and_transpose_input_refused(fn_name, value):
    fn = getattr(numconv, fn_name)
    calls = {
        "conv1d_grad_bias": lambda: fn(value),
        "conv1d_grad_input": lambda: fn(value, W, 30),
        "conv1d_backward": lambda: fn(X, W, value),
        "conv_transpose1d": lambda: fn(value, W),
    }
    with pytest.raises((TypeError, ValueError)) as info:
        calls[fn_name]()
    name = "x" if fn_name == "conv_transpose1d" else "grad_output"
    assert name in str(info.value)


def test_zero_length_axes():
    """Empty batch, channels or signal: results of the right shape, or a clear error."""
    f32 = np.float32
    rng = np.random.default_rng(0)
    checked = 0
    shapes = [
        # (N, C_in, C_out, L, K, padding)
        (0, 4, 6, 30, 5, 2),
        (3, 0, 6, 30, 5, 2),
        (3, 4, 0, 30, 5, 2),
        (3, 4, 6, 0, 5, 3),
        (0, 0, 0, 0, 1, 0),
    ]
    for N, C_in, C_out, L, K, pad in shapes:
        x = rng.standard_normal((N, C_in, L)).astype(f32)
        w = rng.standard_normal((C_out, C_in, K)).astype(f32)
        b = rng.standard_normal(C_out).astype(f32)
        L_out = L + 2 * pad - K + 1
        if L_out < 1:
            with pytest.raises(ValueError, match="output length"):
                numconv.conv1d(x, w, b, padding=pad)
            checked += 1
            continue
        g = rng.standard_normal((N, C_out, L_out)).astype(f32)
        y = numconv.conv1d(x, w, b, padding=pad)
        ref = reference.conv1d(x, w, b, 1, pad, pad, 1, 1, "zeros")
        assert y.shape == ref.shape == (N, C_out, L_out)
        assert_close(y, ref, np.abs(ref) + 1, f32, "zero-length forward")
        grads = numconv.conv1d_backward(x, w, g, padding=pad)
        assert grads.input.shape == x.shape and grads.weight.shape == w.shape
        assert grads.bias.shape == (C_out,)
        ref_gw = reference.grad_weight(x, g, K, 1, pad, pad, 1, 1, "zeros")
        ref_gx = reference.grad_input(g, w, L, 1, pad, pad, 1, 1, "zeros")
        assert_close(grads.weight, ref_gw, np.abs(ref_gw) + 1, f32, "zero-length gw")
        assert_close(grads.input, ref_gx, np.abs(ref_gx) + 1, f32, "zero-length gx")
        assert_close(grads.bias, reference.grad_bias(g), 1.0, f32, "zero-length gb")
        checked += 1
        if L == 0:
            # Non-zero padding modes need something to reflect, repeat or wrap.
            for mode in ("reflect", "replicate", "circular"):
                with pytest.raises(ValueError, match="padding_mode"):
                    numconv.conv1d(x, w, b, padding=pad, padding_mode=mode)
                checked += 1
    assert checked == len(shapes) + 3


@pytest.mark.parametrize("batched", [True, False])
def test_conv_transpose_with_every_position_padded_away(batched):
    # L_out = (1 - 1)*1 - 2*3 + (6 - 1) + 0 + 1 = 0: the empty result, as PyTorch
    # gives in float32 (its float64 path refuses); a negative length is refused.
    x = np.ones((2, 2, 1) if batched else (2, 1))
    w = np.ones((2, 3, 6))
    got = numconv.conv_transpose1d(x, w, np.ones(3), padding=3)
    assert got.shape == ((2, 3, 0) if batched else (3, 0))
    assert got.dtype == np.float64
    with pytest.raises(ValueError, match="output length would be -2 < 0"):
        numconv.conv_transpose1d(x, w, np.ones(3), padding=4)
    with pytest.raises(ValueError, match="bias must have shape"):
        numconv.conv_transpose1d(x, w, np.ones(2), padding=3)


# -- inputs untouched, outputs not aliased ---------------------------------------------


def snapshot(arr):
    return (arr.tobytes(), arr.shape, arr.strides, arr.dtype, arr.flags.writeable)


ALIAS_SETTINGS = dict(SETTINGS)
ALIAS_SETTINGS.update(
    {
        # Shapes where a shortcut could hand back an input or a view of one.
        "identity_1x1": (2, 3, 3, 16, 1, dict(), np.float32, True),
        "k1_unbatched": (1, 4, 4, 9, 1, dict(), np.float64, False),
        "length_one": (2, 2, 2, 1, 1, dict(), np.float32, True),
        "depthwise_k1": (2, 5, 5, 12, 1, dict(groups=5), np.float32, True),
    }
)


@pytest.mark.parametrize("name", sorted(ALIAS_SETTINGS))
def test_inputs_unchanged_and_outputs_never_alias(name):
    setting = ALIAS_SETTINGS[name]
    _, _, _, L, K, kwargs, _, _ = setting
    x, w, b, g = make_arrays(setting, seed=5)
    inputs = dict(x=x, weight=w, bias=b, grad_output=g)
    before = {k: snapshot(v) for k, v in inputs.items()}

    results = {
        "forward": numconv.conv1d(x, w, b, **kwargs),
        "forward_no_bias": numconv.conv1d(x, w, **kwargs),
        "grad_input": numconv.conv1d_grad_input(g, w, L, **kwargs),
        "grad_weight": numconv.conv1d_grad_weight(x, g, K, **kwargs),
        "grad_bias": numconv.conv1d_grad_bias(g),
    }
    grads = numconv.conv1d_backward(x, w, g, **kwargs)
    results.update({f"backward.{k}": v for k, v in zip(grads._fields, grads)})
    if isinstance(kwargs.get("padding", 0), int) and "padding_mode" not in kwargs:
        ct = {k: v for k, v in kwargs.items() if k in ("stride", "dilation", "groups")}
        results["transpose"] = numconv.conv_transpose1d(
            g, w, None, padding=kwargs.get("padding", 0), **ct
        )

    for k, v in inputs.items():
        assert snapshot(v) == before[k], f"{k} was modified"
    for rname, r in results.items():
        assert isinstance(r, np.ndarray), rname
        for k, v in inputs.items():
            assert not np.shares_memory(r, v), f"{rname} shares memory with {k}"
    backward = [v for k, v in results.items() if k.startswith("backward.")]
    for i, a in enumerate(backward):
        for c in backward[i + 1 :]:
            assert not np.shares_memory(a, c), "backward results share memory"


# -- huge valid strides -----------------------------------------------------------------

# Strides up to 2**31 - 1 are valid (here one output per row): every family
# that takes them must do work and take memory in proportion to the data, not
# the stride (at 2**22, scratch sized by the stride would pass 16 MiB).
HUGE_STRIDE_LAYERS = {
    "dense": (2, 4, 6, 20, 3, 1, 1),
    "dilated": (2, 4, 6, 20, 3, 2, 1),
    "depthwise": (2, 4, 4, 20, 3, 1, 4),
    "k_above_s_phases": (2, 8, 16, 40, 9, 1, 1),
}


@pytest.mark.parametrize("s", [2**22, 2**31 - 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["auto", "direct", "gemm", "im2col", "tiled"])
@pytest.mark.parametrize("name", sorted(HUGE_STRIDE_LAYERS))
def test_huge_valid_stride(name, family, dtype, s):
    from contextlib import nullcontext

    from numconv import _dispatch

    N, C_in, C_out, L, K, d, groups = HUGE_STRIDE_LAYERS[name]
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, C_in, L)).astype(dtype)
    w = rng.standard_normal((C_out, C_in // groups, K)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype)
    g = rng.standard_normal((N, C_out, 1)).astype(dtype)
    kw = dict(stride=s, dilation=d, groups=groups)
    args = (s, 0, 0, d, groups, "zeros")
    expected = {
        "forward": (reference.conv1d(x, w, b, *args),
                    reference.conv1d(np.abs(x), np.abs(w), np.abs(b), *args)),
        "grad_input": (reference.grad_input(g, w, L, *args),
                       reference.grad_input(np.abs(g), np.abs(w), L, *args)),
        "grad_weight": (reference.grad_weight(x, g, K, *args),
                        reference.grad_weight(np.abs(x), np.abs(g), K, *args)),
    }
    calls = {
        "forward": lambda: numconv.conv1d(x, w, b, **kw),
        "grad_input": lambda: numconv.conv1d_grad_input(g, w, L, **kw),
        "grad_weight": lambda: numconv.conv1d_grad_weight(x, g, K, **kw),
    }
    ran = 0
    for op, call in calls.items():
        context = nullcontext() if family == "auto" else _dispatch.force(family)
        try:
            with context:
                # The first call may load or compile kernels, whose Python
                # objects tracemalloc would count; the second is measured.
                call()
                tracemalloc.start()
                result = call()
                _, peak = tracemalloc.get_traced_memory()
        except NotImplementedError:
            continue
        finally:
            tracemalloc.stop()
        assert peak < 16 * 2**20, f"{op}: {peak} bytes at stride {s}"
        ran += 1
        ref, scale = expected[op]
        assert_close(result, ref, scale, dtype, op)
    if family == "auto":
        assert ran == 3
        grads = numconv.conv1d_backward(x, w, g, **kw)
        assert_close(grads.input, *expected["grad_input"], dtype, "backward")
        assert_close(grads.weight, *expected["grad_weight"], dtype, "backward")


# -- absurd sizes ----------------------------------------------------------------------

ABSURD = [
    # (id, call, words the message must contain)
    ("stride_2**32", lambda: numconv.conv1d(X, W, stride=2**32), ["stride"]),
    ("dilation_2**32", lambda: numconv.conv1d(X, W, dilation=2**32), ["dilation"]),
    ("padding_2**40", lambda: numconv.conv1d(X, W, padding=2**40), ["padding"]),
    (
        "padding_pair_2**40",
        lambda: numconv.conv1d(X, W, padding=(0, 2**40)),
        ["padding"],
    ),
    (
        "padding_2**40_empty_batch",
        lambda: numconv.conv1d(X[:0], W, padding=2**40),
        ["padding"],
    ),
    (
        "output_beyond_memory",
        lambda: numconv.conv1d(
            np.ones((1, 1, 30), np.float32),
            np.ones((4096, 1, 5), np.float32),
            padding=2**20,
        ),
        ["output", "padding"],
    ),
    (
        "replicate_index_map_empty_batch",
        lambda: numconv.conv1d_grad_input(
            np.ones((0, 6, 2**32 + 24), np.float32),
            W,
            30,
            padding=2**31 - 1,
            padding_mode="replicate",
        ),
        ["padding index map", "padding="],
    ),
    (
        "backward_stride",
        lambda: numconv.conv1d_backward(X, W, G, stride=2**40),
        ["stride"],
    ),
    (
        "grad_input_length",
        lambda: numconv.conv1d_grad_input(G, W, 2**45),
        ["input_length"],
    ),
    (
        "grad_input_huge_L",
        lambda: numconv.conv1d_grad_input(G[:, :, :1], W, 2**38, stride=2**20),
        ["L=274877906944"],
    ),
    (
        "grad_weight_kernel",
        lambda: numconv.conv1d_grad_weight(X, G, 2**40),
        ["kernel_size"],
    ),
    (
        "transpose_stride",
        lambda: numconv.conv_transpose1d(G, W, stride=2**32),
        ["stride"],
    ),
    (
        "transpose_output",
        lambda: numconv.conv_transpose1d(
            np.ones((64, 6, 4000), np.float32), W, stride=2**24
        ),
        ["output", "stride"],
    ),
    ("groups_2**63", lambda: numconv.conv1d(X, W, groups=2**63), ["groups"]),
]


@pytest.mark.parametrize(
    "call, words", [a[1:] for a in ABSURD], ids=[a[0] for a in ABSURD]
)
def test_absurd_sizes_refused_before_allocating(call, words, monkeypatch):
    # The same verdicts on any machine: pretend it has 8 GiB.
    monkeypatch.setattr(numconv._spec, "physical_memory", lambda: 2**33)
    tracemalloc.start()
    try:
        with pytest.raises((ValueError, MemoryError)) as info:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    for word in words:
        assert word in str(info.value), (word, str(info.value))
    # Refused before allocating anything of the absurd size (the test's own
    # small inputs excepted).
    assert peak < 32 * 2**20, f"{peak} bytes allocated before the refusal"
