"""The tiled family's kernels called directly, inside fenced buffers.

The micro-kernel is emitted LLVM code that no bounds check reaches, even under
NUMBA_BOUNDSCHECK=1, so these tests aim at its edges (partial row tiles and
panels, several depth chunks, border panels read where they lie) and surround
every array it touches with sentinel rows: a read past an input brings NaN
into the result, and a write past an output changes a sentinel.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numconv._kernels import tiled
from test_direct_fast import ref_forward, ref_grads
from tolerances import assert_close

SENTINEL = 12345.0


def fenced(array, fill):
    """A copy of ``array`` in rows 1..N of an (N + 2, ...) buffer of ``fill``.

    The copy is C-contiguous, and its neighbours in memory on both sides are
    the fill rows. Returns (buffer, copy).
    """
    buf = np.full((array.shape[0] + 2,) + array.shape[1:], fill, dtype=array.dtype)
    buf[1:-1] = array
    return buf, buf[1:-1]


def assert_fence_kept(buf):
    assert (buf[0] == SENTINEL).all() and (buf[-1] == SENTINEL).all(), "wrote past"


@st.composite
def layers(draw, max_stride=3):
    groups = draw(st.integers(1, 3))
    if draw(st.integers(0, 3)) == 0:
        # Depthwise: the kernels of their own.
        C_in_g = C_out_g = 1
    else:
        C_in_g = draw(st.integers(1, 9))
        # Row tiles of MR rows: whole, half-height, partial and several.
        C_out_g = draw(st.integers(1, 3 * tiled.MR + 1))
    K = draw(st.integers(1, 5))
    dilation = draw(st.integers(1, 3))
    stride = draw(st.integers(1, max_stride))
    left = draw(st.integers(0, (K - 1) * dilation + 2))
    right = draw(st.integers(0, (K - 1) * dilation + 2))
    span = (K - 1) * dilation
    # Output rows from one position to several panels of NR columns (8 to 32),
    # or rows of 1 KiB in one of the dtypes (read from a copy).
    L = draw(st.one_of(st.integers(max(1, span + 1 - left - right), 90),
                       st.sampled_from([128, 256])))
    N = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    return N, groups, C_in_g, C_out_g, K, dilation, stride, left, right, L, dtype, seed


def _arrays(layer):
    N, groups, C_in_g, C_out_g, K, d, s, left, right, L, dtype, seed = layer
    rng = np.random.default_rng(seed)
    L_out = (L + left + right - (K - 1) * d - 1) // s + 1
    x = rng.standard_normal((N, groups * C_in_g, L)).astype(dtype)
    w = rng.standard_normal((groups * C_out_g, C_in_g, K)).astype(dtype)
    b = rng.standard_normal(groups * C_out_g).astype(dtype)
    g = rng.standard_normal((N, groups * C_out_g, L_out)).astype(dtype)
    return x, w, b, g


def _check_forward(layer):
    N, groups, _, _, K, d, s, left, right, L, dtype, _ = layer
    x, w, b, g = _arrays(layer)
    _, xf = fenced(x, np.nan)
    buf, out = fenced(np.zeros_like(g), SENTINEL)
    tiled._forward(xf, left, w, b, groups, s, d, out)
    assert_fence_kept(buf)
    scale = ref_forward(np.abs(x), np.abs(w), np.abs(b), s, left, right, d, groups)
    assert_close(out, ref_forward(x, w, b, s, left, right, d, groups), scale, dtype,
                 "forward")


def _check_gradients(layer):
    N, groups, _, _, K, d, s, left, right, L, dtype, _ = layer
    x, w, _, g = _arrays(layer)
    _, xf = fenced(x, np.nan)
    _, gf = fenced(g, np.nan)
    gx_ref, gw_ref = ref_grads(x, w, g, s, left, right, d, groups)
    scale_gx, scale_gw = ref_grads(np.abs(x), np.abs(w), np.abs(g), s, left, right, d,
                                   groups)
    if s == 1:
        # At other strides both gradients are the gemm family's.
        gw_buf, gw = fenced(np.zeros_like(w), SENTINEL)
        tiled.grad_weight_shifted(xf, left, gf, groups, d, gw)
        assert_fence_kept(gw_buf)
        assert_close(gw, gw_ref, scale_gw, dtype, "grad_weight")
        gx_buf, gx = fenced(np.zeros_like(x), SENTINEL)
        tiled.grad_input_shifted(gf, w, groups, d, left, gx)
        assert_fence_kept(gx_buf)
        assert_close(gx, gx_ref, scale_gx, dtype, "grad_input")


@given(layers())
def test_forward_stays_inside_its_arrays(layer):
    _check_forward(layer)


@given(layers(max_stride=1))
def test_gradients_stay_inside_their_arrays(layer):
    _check_gradients(layer)


@st.composite
def long_depthwise_layers(draw):
    """Depthwise layers with kernels of one to five vectors of taps, where the
    row tiles and the weight gradient share loads across taps k, k + V, ..."""
    groups = draw(st.integers(1, 3))
    K = draw(st.integers(6, 80))
    dilation = draw(st.sampled_from([1, 1, 1, 2]))
    left = draw(st.integers(0, (K - 1) * dilation + 2))
    right = draw(st.integers(0, (K - 1) * dilation + 2))
    span = (K - 1) * dilation
    L = draw(st.integers(max(1, span + 1 - left - right), span + 400))
    N = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    return N, groups, 1, 1, K, dilation, 1, left, right, L, dtype, seed


@given(long_depthwise_layers())
def test_long_depthwise_kernels_stay_inside_their_arrays(layer):
    _check_forward(layer)
    _check_gradients(layer)


# (N, groups, C_in_g, C_out_g, K, dilation, stride, left, right, L, dtype, seed):
# depths past one DEPTH_CHUNK (and past several of the shorter chunks of a
# single row tile, the last one partial), rows a multiple of 1 KiB long (read
# from a copy), long rows of many blocks (with row lengths that leave a
# partial vector), stride 2 (panels packed from pairs of vectors) and 3
# (gathered), a kernel wider than the input, depthwise rows of several tiles
# (kernels that share loads across taps k, k + V, ...), and depthwise layers
# of more rows than one work item takes, whose last tile is several narrow ones.
EDGE_LAYERS = {
    "several_depth_chunks": (2, 1, 130, 13, 3, 1, 1, 1, 1, 70, np.float32, 1),
    "chunks_grouped_f64": (1, 2, 90, 7, 3, 2, 1, 2, 2, 41, np.float64, 2),
    "single_tile_short_chunks": (2, 1, 50, 5, 3, 1, 1, 1, 1, 90, np.float32, 11),
    "rows_of_1024_bytes": (2, 2, 5, 17, 3, 2, 1, 3, 1, 256, np.float32, 14),
    "rows_of_1024_bytes_f64": (3, 1, 4, 2 * tiled.MR, 4, 1, 1, 0, 5, 128, np.float64,
                               15),
    "rows_of_2048_bytes_one_tap": (1, 1, 7, 3 * tiled.MR - 1, 1, 1, 1, 0, 0, 512,
                                   np.float32, 16),
    "long_rows": (1, 1, 3, 8, 5, 1, 1, 2, 2, 5003, np.float32, 3),
    "long_rows_f64": (2, 2, 5, 9, 3, 3, 1, 6, 0, 4099, np.float64, 6),
    "long_rows_strided": (2, 1, 2, 9, 4, 1, 3, 1, 0, 3001, np.float64, 4),
    "strided_pairs": (2, 1, 3, 9, 4, 1, 2, 2, 1, 301, np.float32, 10),
    "kernel_past_input": (2, 1, 4, 6, 9, 2, 1, 10, 9, 3, np.float32, 5),
    "depthwise_long": (2, 5, 1, 1, 31, 1, 1, 15, 15, 1000, np.float32, 7),
    "depthwise_many_rows": (3, 7, 1, 1, 5, 1, 1, 2, 2, 180, np.float32, 17),
    "depthwise_many_rows_f64": (3, 7, 1, 1, 5, 2, 1, 4, 4, 180, np.float64, 18),
    "depthwise_dilated_f64": (1, 4, 1, 1, 4, 3, 1, 9, 0, 301, np.float64, 8),
    "depthwise_shared_loads_f64": (2, 3, 1, 1, 31, 1, 1, 15, 15, 700, np.float64, 11),
    "depthwise_shared_loads_uneven": (2, 3, 1, 1, 20, 1, 1, 19, 0, 500, np.float32, 12),
    "depthwise_shared_loads_three": (3, 2, 1, 1, 21, 1, 1, 10, 10, 333, np.float64, 13),
    "depthwise_kernel_past_input": (3, 2, 1, 1, 9, 2, 1, 8, 10, 5, np.float32, 9),
}


@pytest.mark.parametrize("name", sorted(EDGE_LAYERS))
def test_edge_layers(name):
    layer = EDGE_LAYERS[name]
    _check_forward(layer)
    _check_gradients(layer)


@given(
    t0=st.integers(0, 200), m=st.integers(1, 200), nr=st.sampled_from([8, 16]),
    span=st.integers(0, 60), shift=st.integers(0, 70), L=st.integers(1, 300),
)
def test_interior_panels_read_inside_the_input(t0, m, nr, span, shift, L):
    lo, hi = tiled.interior_panels(t0, m, nr, span, shift, L)
    interior = range(lo, hi)
    for j in range(m // nr):
        first = t0 + j * nr - shift
        inside = first >= 0 and first + nr - 1 + span <= L - 1
        # Every interior panel reads inside the input, and the panels left
        # out really read outside it.
        assert (j in interior) == inside, (j, lo, hi)
    # Only whole panels can be interior.
    assert all(0 <= j < m // nr for j in interior)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_on_the_phases_of_a_strided_layer(dtype):
    import numconv
    from numconv import _dispatch, _polyphase
    from numconv._spec import build_spec

    layer = (2, 2, 3, 9, 6, 1, 3, 2, 1, 401, dtype, 11)
    N, groups, C_in_g, _, K, d, s, left, right, L, _, _ = layer
    x, w, _, g = _arrays(layer)
    spec = build_spec(
        N=N, C_in=groups * C_in_g, L=L, weight_shape=w.shape, stride=s,
        padding=(left, right), dilation=d, groups=groups, padding_mode="zeros",
        dtype=np.dtype(dtype), batched=True,
    )
    assert _polyphase.applies(spec, tiled, "grad_weight")
    assert _polyphase.applies(spec, tiled, "grad_input")
    with _dispatch.force("tiled"):
        gw = numconv.conv1d_grad_weight(x, g, K, stride=s, padding=(left, right),
                                        groups=groups)
        gx = numconv.conv1d_grad_input(g, w, L, stride=s, padding=(left, right),
                                       groups=groups)
    gx_ref, gw_ref = ref_grads(x, w, g, s, left, right, d, groups)
    scale_gx, scale = ref_grads(np.abs(x), np.abs(w), np.abs(g), s, left, right, d,
                                groups)
    assert_close(gw, gw_ref, scale, dtype, "grad_weight")
    assert_close(gx, gx_ref, scale_gx, dtype, "grad_input")


# Weight gradients of strided layers whose K is not a multiple of the stride,
# on the phases with padded taps: (N, groups, C_in/g, C_out/g, K, stride,
# left, right, L). The input ends in positions that no real tap reads
# (stride - 1 of them past the last window, at most) and those hold NaN: the
# padded taps read them, and their sums must be dropped.
PADDED_TAP_LAYERS = {
    "k3_s2": (2, 1, 3, 9, 3, 2, 1, 0, 403),
    "k7_s3_groups": (2, 2, 3, 8, 7, 3, 2, 0, 301),
    "k5_s2_long": (1, 1, 4, 13, 5, 2, 2, 0, 3 * 4096 + 10),
    "k3_s4": (3, 1, 2, 8, 3, 4, 0, 0, 205),
    # K a multiple of the stride, but groups wide enough for one phase at a
    # time (tiled.PHASEWISE_MIN_CHANNELS).
    "k4_s2_wide_groups": (2, 2, 32, 3, 4, 2, 1, 0, 203),
}
# With K < s the padded taps would outnumber the real ones (and the phase
# input pass the padded input's size): that weight gradient keeps BLAS.


def _padded_tap_layer(name, dtype, seed):
    """(x, w, g, spec) of PADDED_TAP_LAYERS[name], zero padding, d = 1."""
    from numconv._spec import build_spec

    N, groups, C_in_g, C_out_g, K, s, left, right, L = PADDED_TAP_LAYERS[name]
    layer = (N, groups, C_in_g, C_out_g, K, 1, s, left, right, L, dtype, seed)
    x, w, _, g = _arrays(layer)
    spec = build_spec(
        N=N, C_in=groups * C_in_g, L=L, weight_shape=w.shape, stride=s,
        padding=(left, right), dilation=1, groups=groups, padding_mode="zeros",
        dtype=np.dtype(dtype), batched=True,
    )
    return x, w, g, spec


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name",
    sorted(name for name, layer in PADDED_TAP_LAYERS.items()
           if layer[4] >= layer[5] and layer[4] % layer[5]),
)
def test_weight_gradient_on_phases_with_padded_taps(name, dtype):
    import numconv
    from numconv import _dispatch, _polyphase

    x, w, g, spec = _padded_tap_layer(name, dtype, seed=3)
    _, groups, _, _, K, s, left, right, L = PADDED_TAP_LAYERS[name]
    assert spec.K % s != 0
    assert _polyphase.applies(spec, tiled, "grad_weight")
    assert not _polyphase.applies(spec, tiled, "grad_input")
    # Padded positions up to (L_out - 1) * s + K - 1 are read; the rest of x
    # is not, and gets NaN.
    unread = left + L - ((spec.L_out - 1) * s + K)
    assert unread > 0
    x[:, :, L - unread:] = np.nan
    with _dispatch.force("tiled"):
        gw = numconv.conv1d_grad_weight(x, g, K, stride=s, padding=(left, right),
                                        groups=groups)
        gw_bias = numconv.conv1d_backward(x, w, g, stride=s, padding=(left, right),
                                          groups=groups)
    x_read = np.nan_to_num(x, nan=0.0)
    _, gw_ref = ref_grads(x_read, w, g, s, left, right, 1, groups)
    _, scale = ref_grads(np.abs(x_read), np.abs(w), np.abs(g), s, left, right, 1,
                         groups)
    assert np.isfinite(gw).all()
    assert_close(gw, gw_ref, scale, dtype, "grad_weight")
    np.testing.assert_array_equal(gw_bias[1], gw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(PADDED_TAP_LAYERS))
def test_input_gradient_one_phase_at_a_time(name, dtype):
    import numconv
    from numconv import _dispatch, _polyphase

    # The same layers: each phase its own sub-kernel, a phase without taps
    # (K = 3 < stride = 4) all zeros, and NaN in grad_output reaching exactly
    # the inputs its output reads.
    x, w, g, spec = _padded_tap_layer(name, dtype, seed=5)
    _, groups, C_in_g, _, K, s, left, right, L = PADDED_TAP_LAYERS[name]
    assert _polyphase.runs_phasewise(spec, tiled, "grad_input")
    assert _polyphase.applies(spec, tiled, "grad_weight") == (K >= s)
    assert not _polyphase.fuses_backward(tiled, spec)
    kwargs = dict(stride=s, padding=(left, right), groups=groups)
    with _dispatch.force("tiled"):
        gx = numconv.conv1d_grad_input(g, w, L, **kwargs)
    gx_ref, _ = ref_grads(x, w, g, s, left, right, 1, groups)
    scale, _ = ref_grads(np.abs(x), np.abs(w), np.abs(g), s, left, right, 1, groups)
    assert_close(gx, gx_ref, scale, dtype, "grad_input")

    t = spec.L_out // 2
    g[0, 0, t] = np.nan
    with _dispatch.force("tiled"):
        gx = numconv.conv1d_grad_input(g, w, L, **kwargs)
    reached = {t * s + k - left for k in range(K)} & set(range(L))
    for c in range(groups * C_in_g):
        bad = set(np.flatnonzero(np.isnan(gx[0, c])))
        assert bad == (reached if c < C_in_g else set()), (c, bad, reached)
    assert not np.isnan(gx[1:]).any()


# (N, C_in, C_out, L, K, stride, padding): rows cut into units of several
# SUM_BLOCK blocks, a unit of one block, and the phases of a strided layer.
BIAS_LAYERS = {
    "units_of_4096": (2, 8, 8, 9000, 3, 1, 1),
    "units_of_1024": (2, 128, 128, 3000, 3, 1, 1),
    "phases": (3, 1, 16, 12001, 10, 5, 0),
}


@pytest.mark.parametrize("name", sorted(BIAS_LAYERS))
def test_backward_takes_the_bias_from_the_weight_pass(name):
    import numconv
    from numconv import _dispatch

    N, C_in, C_out, L, K, s, p = BIAS_LAYERS[name]
    rng = np.random.default_rng(14)
    x = rng.standard_normal((N, C_in, L)).astype(np.float32)
    w = rng.standard_normal((C_out, C_in, K)).astype(np.float32)
    L_out = (L + 2 * p - K) // s + 1
    g = rng.standard_normal((N, C_out, L_out)).astype(np.float32)
    T, _ = tiled.dots_block(N, C_in * s if s > 1 else C_in, C_out, L_out, 4)
    assert T % 1024 == 0 or T >= L_out
    with _dispatch.force("tiled"):
        grads = numconv.conv1d_backward(x, w, g, stride=s, padding=p, bias=True)
        gw = numconv.conv1d_grad_weight(x, g, K, stride=s, padding=p)
    np.testing.assert_array_equal(grads.bias, numconv.conv1d_grad_bias(g))
    np.testing.assert_array_equal(grads.weight, gw)
    _, gw_ref = ref_grads(x, w, g, s, p, p, 1, 1)
    _, scale = ref_grads(np.abs(x), np.abs(w), np.abs(g), s, p, p, 1, 1)
    assert_close(gw, gw_ref, scale, np.float32, "grad_weight")


@given(L=st.integers(1, 5000), row_tiles=st.integers(1, 4), stride=st.integers(1, 3),
       block=st.integers(1, 40).map(lambda b: 32 * b), span=st.integers(0, 300),
       itemsize=st.sampled_from([4, 8]))
def test_gather_width(L, row_tiles, stride, block, span, itemsize):
    width = tiled.gather_width(L, row_tiles, stride, block, span, itemsize)
    bad = (L * itemsize) % tiled.GATHER_STRIDE_BYTES == 0
    if not (bad and stride == 1 and row_tiles >= 2):
        assert width == 0
        return
    # Room for every panel's reads, in rows that do not repeat the bad stride.
    assert width >= block + span
    assert (width * itemsize) % tiled.GATHER_STRIDE_BYTES



# (N, C_in, C_out, L, K, stride, padding, padding_mode, dtype): strided layers
# whose backward pass takes both gradients from one pass over grad_output
# (their phase form, one group): several samples per unit, rows of several
# units (the last one also writing the row's last positions of the input
# gradient), phase rows a multiple of 1 KiB long read from a copy (10 phase
# rows: two row tiles), reflected padding and float64.
FUSED_LAYERS = {
    "samples_per_unit": (3, 1, 20, 3000, 10, 5, 0, "zeros", np.float32),
    "units_per_row": (2, 2, 128, 5201, 4, 2, 1, "zeros", np.float32),
    "phase_rows_of_1024_bytes": (2, 5, 7, 512, 2, 2, 0, "zeros", np.float32),
    "reflect_f64": (2, 3, 6, 401, 6, 3, 2, "reflect", np.float64),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", sorted(FUSED_LAYERS))
def test_backward_in_one_pass_matches_the_single_gradients(name, bias):
    import numconv
    from numconv import _dispatch, _polyphase
    from numconv._spec import build_spec

    N, C_in, C_out, L, K, s, p, mode, dtype = FUSED_LAYERS[name]
    rng = np.random.default_rng(21)
    x = rng.standard_normal((N, C_in, L)).astype(dtype)
    w = rng.standard_normal((C_out, C_in, K)).astype(dtype)
    kw = dict(stride=s, padding=p, padding_mode=mode)
    spec = build_spec(N=N, C_in=C_in, L=L, weight_shape=w.shape, stride=s, padding=p,
                      dilation=1, groups=1, padding_mode=mode, dtype=np.dtype(dtype),
                      batched=True)
    assert _polyphase.fuses_backward(tiled, spec)
    g = rng.standard_normal(spec.output_shape).astype(dtype)
    with _dispatch.force("tiled"):
        grads = numconv.conv1d_backward(x, w, g, bias=bias, **kw)
        gx = numconv.conv1d_grad_input(g, w, L, **kw)
        gw = numconv.conv1d_grad_weight(x, g, K, **kw)
    np.testing.assert_array_equal(grads.input, gx)
    np.testing.assert_array_equal(grads.weight, gw)
    if bias:
        np.testing.assert_array_equal(grads.bias, numconv.conv1d_grad_bias(g))
    else:
        assert grads.bias is None
    if mode == "zeros":
        gx_ref, gw_ref = ref_grads(x, w, g, s, p, p, 1, 1)
        scale_gx, scale = ref_grads(np.abs(x), np.abs(w), np.abs(g), s, p, p, 1, 1)
        assert_close(gx, gx_ref, scale_gx, dtype, "grad_input")
        assert_close(gw, gw_ref, scale, dtype, "grad_weight")


# Forward passes on the joined batch (each sample's padded row after the
# last): (N, groups, C_in/g, C_out/g, K, dilation, padding, padding_mode, L,
# dtype), each deep enough and with rows short enough to be joined.
JOINED_LAYERS = {
    "textcnn_like": (5, 1, 103, 9, 5, 1, 2, "zeros", 100, np.float32),
    "dilated_groups": (2, 2, 130, 5, 4, 2, (3, 1), "zeros", 120, np.float32),
    "reflect": (2, 1, 103, 11, 5, 1, 2, "reflect", 100, np.float64),
    "circular_valid_tail": (4, 1, 260, 3, 2, 1, (0, 1), "circular", 60, np.float64),
}


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("name", sorted(JOINED_LAYERS))
def test_forward_on_the_joined_batch(name, chunked, monkeypatch):
    import numconv
    from numconv import _dispatch, _polyphase
    from numconv._spec import build_spec

    if chunked:
        # Two samples joined at a time, the last chunk of one when N is odd.
        monkeypatch.setattr(_polyphase, "JOIN_CHUNK_BYTES", 1)

    N, groups, C_in_g, C_out_g, K, d, padding, mode, L, dtype = JOINED_LAYERS[name]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, groups * C_in_g, L)).astype(dtype)
    w = rng.standard_normal((groups * C_out_g, C_in_g, K)).astype(dtype)
    b = rng.standard_normal(groups * C_out_g).astype(dtype)
    spec = build_spec(
        N=N, C_in=groups * C_in_g, L=L, weight_shape=w.shape, stride=1,
        padding=padding, dilation=d, groups=groups, padding_mode=mode,
        dtype=np.dtype(dtype), batched=True,
    )
    assert _dispatch._joins_batch(spec, tiled)
    kwargs = dict(padding=padding, dilation=d, groups=groups, padding_mode=mode)
    # NaN at the start of every sample but the first, and at the end of every
    # sample but the last: the outputs between samples read both, and are
    # dropped; no other output of a neighbouring sample may see them.
    x[1:, :, 0] = np.nan
    x[:-1, :, -1] = np.nan
    with _dispatch.force("tiled"):
        joined = numconv.conv1d(x, w, b, **kwargs)
        monkeypatch.setattr(_dispatch, "JOIN_MIN_DEPTH", 10**9)
        assert not _dispatch._joins_batch(spec, tiled)
        own = numconv.conv1d(x, w, b, **kwargs)
    np.testing.assert_array_equal(joined, own)
    # Each sample's outputs as a batch of one, which is never joined (its
    # blocks may differ, and with them the rounding): the same NaN, the same
    # values to rounding.
    rtol = 1e-4 if dtype == np.float32 else 1e-12
    for n in range(N):
        alone = numconv.conv1d(x[n : n + 1], w, b, **kwargs)
        scale = np.nanmax(np.abs(alone))
        np.testing.assert_allclose(joined[n : n + 1], alone, rtol=rtol,
                                   atol=rtol * scale)
    assert np.isfinite(joined).any() and np.isnan(joined).any()
