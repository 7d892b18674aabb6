"""The BLAS-backed family: agreement with the direct kernels, determinism of the
weight gradient across thread counts, the BLAS binding from a cached kernel in
a fresh process, and the precision each dtype is computed in.

The general adjoint properties run over this family too (test_properties.py);
these tests use larger shapes, which cut the work into several blocks and the
weight gradient into several chunks, as the real workloads do.
"""

import json
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numconv
from numconv import _blas, _dispatch
from numconv._kernels import gemm, tiled
from tolerances import assert_close


def _arrays(rng, N, C_in, C_out, L, K, groups, dtype):
    x = rng.standard_normal((N, C_in, L)).astype(dtype)
    w = rng.standard_normal((C_out, C_in // groups, K)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype)
    return x, w, b


def _all_results(x, w, b, kw, family):
    """Forward, input gradient and weight gradient with one family forced."""
    with _dispatch.force(family):
        y = numconv.conv1d(x, w, b, **kw)
        g = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
        gx = numconv.conv1d_grad_input(g, w, x.shape[-1], **kw)
        gw = numconv.conv1d_grad_weight(x, g, w.shape[-1], **kw)
    return y, g, gx, gw


def _check_against_direct(x, w, b, kw):
    y, g, gx, gw = _all_results(x, w, b, kw, "gemm")
    y_d, _, gx_d, gw_d = _all_results(x, w, b, kw, "direct")

    # Both families approximate the exact result; each is within the table's
    # tolerance of it, so they are within twice that of each other.
    ax, aw, ag = (np.abs(a).astype(np.float64) for a in (x, w, g))
    scale_y = numconv.conv1d(ax, aw, np.abs(b).astype(np.float64), **kw)
    scale_gx = numconv.conv1d_grad_input(ag, aw, x.shape[-1], **kw)
    scale_gw = numconv.conv1d_grad_weight(ax, ag, w.shape[-1], **kw)
    assert y.dtype == gx.dtype == gw.dtype == x.dtype
    assert_close(y, y_d, 2 * scale_y, x.dtype, "forward")
    assert_close(gx, gx_d, 2 * scale_gx, x.dtype, "grad_input")
    assert_close(gw, gw_d, 2 * scale_gw, x.dtype, "grad_weight")


# (N, C_in, C_out, L, K, padding, dilation, groups): batch of one with a long
# signal (many position blocks), empty batch, groups with dilation, a kernel
# longer than the padding, and "same" with an even kernel.
SHAPES = [
    (1, 5, 7, 900, 3, 1, 1, 1),
    (0, 4, 6, 300, 3, 1, 1, 1),
    (3, 6, 9, 400, 4, "causal", 3, 3),
    (2, 8, 4, 260, 9, 2, 2, 2),
    (5, 3, 5, 150, 6, "same", 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_agrees_with_direct_on_block_sized_shapes(shape, dtype):
    N, C_in, C_out, L, K, padding, dilation, groups = shape
    x, w, b = _arrays(np.random.default_rng(0), N, C_in, C_out, L, K, groups, dtype)
    kw = dict(padding=padding, dilation=dilation, groups=groups)

    _check_against_direct(x, w, b, kw)


@settings(max_examples=25)
@given(
    N=st.integers(0, 3),
    C_in_g=st.integers(1, 6),
    C_out_g=st.integers(1, 6),
    groups=st.integers(1, 3),
    L=st.integers(1, 300),
    K=st.integers(1, 6),
    dilation=st.integers(1, 4),
    pad=st.integers(0, 5),
    mode=st.sampled_from(["zeros", "reflect", "circular"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_agrees_with_direct_on_random_specs(
    N, C_in_g, C_out_g, groups, L, K, dilation, pad, mode, dtype, seed
):
    pad = min(pad, L - 1) if mode == "reflect" else min(pad, L)
    if L + 2 * pad < dilation * (K - 1) + 1:
        pad = (dilation * (K - 1) + 1 - L + 1) // 2
        mode = "zeros"
    rng = np.random.default_rng(seed)
    x, w, b = _arrays(rng, N, C_in_g * groups, C_out_g * groups, L, K, groups, dtype)
    kw = dict(padding=pad, dilation=dilation, groups=groups, padding_mode=mode)

    _check_against_direct(x, w, b, kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "stride, K, dilation", [(2, 3, 1), (3, 7, 2), (5, 10, 1), (4, 2, 1)]
)
def test_strided_agrees_with_direct(stride, K, dilation, dtype):
    # Taps fall into the stride's phases unevenly (K not a multiple of the
    # stride) or not at all (K < stride).
    x, w, b = _arrays(np.random.default_rng(6), 3, 8, 6, 700, K, 2, dtype)
    kw = dict(stride=stride, padding=3, dilation=dilation, groups=2)

    _check_against_direct(x, w, b, kw)


def test_strided_split_keeps_ieee_semantics():
    # An Inf outside every output's receptive field (positions 1, 3, 5... are
    # never read at stride 2 with K = 1) must not reach the output.
    x = np.zeros((1, 8, 41), np.float32)
    x[:, :, 1::2] = np.inf
    w = np.ones((8, 8, 1), np.float32)
    with _dispatch.force("gemm"):
        y = numconv.conv1d(x, w, stride=2)

    np.testing.assert_array_equal(y, np.zeros_like(y))


@pytest.mark.parametrize("stride, K", [(2, 3), (4, 2)])
def test_strided_input_gradient_writes_every_scratch_column(stride, K):
    # The phase scratch is not zeroed up front. A first call leaves NaN in the
    # freed scratch memory, which the allocator hands back to the second call;
    # any column the second call neither overwrites nor zeroes (positions no
    # output reaches, phases without taps, block tails) would show up as NaN.
    rng = np.random.default_rng(8)
    N, C_in, C_out, L = 2, 8, 6, 301
    w = rng.standard_normal((C_out, C_in, K)).astype(np.float32)
    L_out = (L - K) // stride + 1
    g = rng.standard_normal((N, C_out, L_out)).astype(np.float32)
    wt = gemm.tap_major(w)
    block = gemm.time_block(N, -(-L // stride))
    out = np.empty((N, C_in, L), np.float32)
    with _blas.single_threaded():
        gemm.grad_input_kernel(np.full_like(g, np.nan), wt, 1, stride, 1, block, out)
        assert np.isnan(out).any()
        gemm.grad_input_kernel(g, wt, 1, stride, 1, block, out)

    with _dispatch.force("direct"):
        expected = numconv.conv1d_grad_input(g, w, L, stride=stride)
    scale = numconv.conv1d_grad_input(
        np.abs(g).astype(np.float64), np.abs(w).astype(np.float64), L, stride=stride
    )
    assert np.isfinite(out).all()
    assert_close(out, expected, 2 * scale, np.float32, "grad_input")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_is_bitwise_deterministic_across_threads(dtype):
    rng = np.random.default_rng(3)
    N, C_in, C_out, L, K = 6, 12, 10, 700, 3
    x, w, _ = _arrays(rng, N, C_in, C_out, L, K, 1, dtype)
    g = rng.standard_normal((N, C_out, L - K + 1)).astype(dtype)
    # The check means something only when the batch is split into chunks.
    block = gemm.weight_block(N, L - K + 1)
    assert gemm.weight_chunks(N, C_out, L - K + 1, w.size, block) > 1

    before = numba.get_num_threads()
    results = []
    try:
        for threads in [1, min(2, numba.config.NUMBA_NUM_THREADS), 1]:
            numba.set_num_threads(threads)
            with _dispatch.force("gemm"):
                for _ in range(2):
                    results.append(numconv.conv1d_grad_weight(x, g, K))
    finally:
        numba.set_num_threads(before)

    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_float32_is_computed_in_float32():
    # Rounding the exact (float64) sums to float32 would give the float64
    # answer in nearly every element; sums accumulated in float32 differ from it
    # in most elements, by a few float32 ulps.
    rng = np.random.default_rng(4)
    x, w, _ = _arrays(rng, 2, 64, 16, 200, 3, 1, np.float32)
    with _dispatch.force("gemm"):
        y = numconv.conv1d(x, w)
    exact = numconv.conv1d(x.astype(np.float64), w.astype(np.float64))

    assert y.dtype == np.float32
    differs = np.mean(y != exact.astype(np.float32))
    assert differs > 0.2, differs
    scale = numconv.conv1d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64))
    assert_close(y, exact, scale, np.float32, "float32 forward")


def test_single_threaded_restores_the_blas_setting():
    if not _blas.can_limit_threads():
        pytest.skip("this BLAS exposes no thread-count control")
    get, set_ = _blas._CONTROLS[0]
    before = get()
    try:
        set_(2)
        with _blas.single_threaded():
            assert get() == 1
            with _blas.single_threaded():
                assert get() == 1
            assert get() == 1
        assert get() == 2
    finally:
        set_(before)


_CACHED_RUN = textwrap.dedent(
    """
    import json
    import numpy as np
    from numconv import _blas
    from numconv._kernels import gemm

    rng = np.random.default_rng(5)
    xp = rng.standard_normal((2, 3, 40)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    out = np.empty((2, 4, 36), np.float32)
    gemm.forward(xp, w, bias, 1, 1, 2, out)
    expected = bias[None, :, None] + sum(
        np.einsum("oc,nct->not", w[:, :, k], xp[:, :, 2 * k : 2 * k + 36])
        for k in range(3)
    )
    stats = gemm.forward_kernel.stats
    print(json.dumps({
        "error": float(np.max(np.abs(out - expected))),
        "hits": sum(stats.cache_hits.values()),
        "misses": sum(stats.cache_misses.values()),
    }))
    """
)


def test_cached_kernel_calls_blas_in_a_fresh_process(tmp_path):
    # Runs twice with an empty cache directory: the first process compiles and
    # saves, the second loads the compiled kernel, whose call to BLAS must be
    # bound to the second process's BLAS, not to an address from the first.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _CACHED_RUN],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))

    first, second = runs
    assert first["misses"] >= 1 and first["hits"] == 0
    assert second["hits"] >= 1 and second["misses"] == 0
    for run in runs:
        assert run["error"] < 1e-4, run


def test_dispatcher_picks_families_by_channels_per_group():
    from numconv._spec import build_spec

    def spec(C_in, C_out, groups, K=3, L=64, stride=1, dilation=1):
        return build_spec(
            N=2, C_in=C_in, L=L, weight_shape=(C_out, C_in // groups, K),
            stride=stride, padding=1, dilation=dilation, groups=groups,
            padding_mode="zeros", dtype=np.float32, batched=True,
        )

    # The forward pass and the stride-1 input gradient are products with
    # C_out/g rows (C_in/g for the input gradient) and depth C_in/g * K
    # (C_out/g * K): BLAS once both channel counts are wide (without AVX-512,
    # whose larger tiles keep those too), the register tiles in between, the
    # direct kernels for few rows or a shallow depth.
    for op in ("forward", "grad_input"):
        wide = "tiled" if tiled.AVX512 else "gemm"
        assert _dispatch.choose(spec(256, 256, 1), op) == wide
        assert _dispatch.choose(spec(256, 256, 2), op) == "tiled"
        assert _dispatch.choose(spec(32, 32, 1, K=31), op) == "tiled"
        assert _dispatch.choose(spec(128, 128, 8), op) == "tiled"
        assert _dispatch.choose(spec(25, 25, 1, K=7), op) == "tiled"
        assert _dispatch.choose(spec(12, 4, 1), op) == "direct"
        assert _dispatch.choose(spec(4, 4, 1, K=5), op) == "direct"
    assert _dispatch.choose(spec(12, 64, 1, K=16), "forward") == "tiled"
    assert _dispatch.choose(spec(2, 256, 1, K=9), "forward") == "tiled"
    assert _dispatch.choose(spec(1, 64, 1, K=7), "forward") == "direct"
    # Shallow float64 forward passes: tiled only with one input channel.
    for C_in, family in ((1, "tiled"), (4, "direct")):
        wide_f64 = build_spec(
            N=8, C_in=C_in, L=4096, weight_shape=(64, C_in, 3), stride=1, padding=1,
            dilation=1, groups=1, padding_mode="zeros", dtype=np.float64,
            batched=True,
        )
        assert _dispatch.choose(wide_f64, "forward") == family
    assert _dispatch.choose(spec(12, 64, 1, K=16), "grad_input") == "tiled"
    for C_in, K in ((2, 9), (1, 10), (4, 3)):
        assert _dispatch.choose(spec(C_in, 64, 1, K=K), "grad_input") == "direct"
    # Depthwise layers at stride 1: the tiled row kernels once there are a few
    # rows and five taps or more; the weight gradient only for kernels long
    # enough to fill its tile.
    for op in ("forward", "grad_input"):
        assert _dispatch.choose(spec(64, 64, 64, K=5), op) == "tiled"
        assert _dispatch.choose(spec(64, 64, 64, K=4), op) == "direct"
        assert _dispatch.choose(spec(1, 1, 1, K=101, L=4096), op) == "direct"
        assert _dispatch.choose(spec(64, 64, 64, stride=2), op) == "direct"
    assert _dispatch.choose(spec(64, 64, 64, K=31, L=2048), "grad_weight") == "tiled"
    assert _dispatch.choose(spec(64, 64, 64, K=4, L=2048), "grad_weight") == "direct"
    assert _dispatch.choose(spec(2, 2, 2, K=31, L=2048), "grad_weight") == "direct"
    # A strided input gradient without a polyphase form: the tiled products
    # one phase at a time from PHASEWISE_MIN_ROWS input channels and
    # PHASEWISE_MIN_WORK multiply-adds (with AVX2 the widest go to BLAS);
    # below that, the shifted BLAS products once both channel counts reach
    # BLAS_MIN_CHANNELS.
    op = "grad_input"
    assert _dispatch.choose(spec(64, 64, 1, L=4096, stride=2), op) == "tiled"
    assert _dispatch.choose(spec(3, 64, 1, K=7, L=4096, stride=2), op) == "tiled"
    wide = "tiled" if tiled.AVX512 else "gemm"
    assert _dispatch.choose(spec(256, 256, 1, L=4096, stride=2), op) == wide
    assert _dispatch.choose(spec(2, 64, 1, K=5, L=4096, stride=2), op) == "direct"
    assert _dispatch.choose(spec(64, 64, 1, stride=2), op) == "gemm"
    assert _dispatch.choose(spec(16, 64, 1, stride=2), op) == "direct"
    assert _dispatch.choose(spec(64, 64, 1, L=4096, stride=2, dilation=2), op) == "gemm"
    # With a polyphase form too, once groups have PHASEWISE_MIN_CHANNELS input
    # channels; fewer keep the phase form.
    from numconv import _polyphase

    wide_k4 = spec(64, 64, 1, K=4, L=4096, stride=2)
    assert _dispatch.choose(wide_k4, op) == "tiled"
    assert _polyphase.runs_phasewise(wide_k4, tiled, op)
    narrow_k4 = spec(16, 64, 1, K=4, L=4096, stride=2)
    assert not _polyphase.runs_phasewise(narrow_k4, tiled, op)
    # With a polyphase form and too few channels for BLAS: the tiled products
    # on the phases once they have PHASE_MIN_ROWS rows.
    op = "grad_input"
    assert _dispatch.choose(spec(1, 512, 1, K=10, L=16000, stride=5), op) == "tiled"
    assert _dispatch.choose(spec(2, 64, 1, K=4, stride=2), op) == "tiled"
    assert _dispatch.choose(spec(1, 64, 1, K=4, stride=2), op) == "direct"
    assert _dispatch.choose(spec(64, 64, 1, K=4, stride=2), op) == "gemm"

    # The weight gradient at stride 1 with rows of DOTS_MIN_LENGTH outputs or
    # more: the tiled dot products once a group has DOTS_MIN_ROWS output
    # channels, whatever its input channels or kernel length.
    op = "grad_weight"
    for C_in, C_out, groups, K in ((64, 64, 1, 3), (128, 128, 8, 3), (256, 256, 1, 3),
                                   (32, 32, 1, 31), (1, 64, 1, 7), (12, 64, 1, 1000)):
        assert _dispatch.choose(spec(C_in, C_out, groups, K=K, L=2048), op) == "tiled"
    assert _dispatch.choose(spec(64, 64, 64, L=2048), op) == "direct"
    assert _dispatch.choose(spec(32, 4, 1, L=2048), op) == "direct"
    # Rows shorter than DOTS_MIN_LENGTH: the dot products once the batch holds
    # DOTS_MIN_POSITIONS output positions in all.
    def batch(N, L_out):
        return build_spec(
            N=N, C_in=64, L=L_out, weight_shape=(64, 64, 3), stride=1, padding=1,
            dilation=1, groups=1, padding_mode="zeros", dtype=np.float32,
            batched=True,
        )

    assert _dispatch.choose(batch(64, 50), op) == "tiled"
    assert _dispatch.choose(batch(32, 64), op) == "tiled"
    assert _dispatch.choose(batch(32, 32), op) != "tiled"
    assert _dispatch.choose(batch(8, 100), op) == "tiled"
    # Short rows, or stride > 1: BLAS past BLAS_MIN_CHANNELS output channels per
    # group, im2col while its depth C_in/g * K is shallow, gemm beyond.
    assert _dispatch.choose(spec(64, 64, 1, K=1, L=2048, stride=2), op) == "im2col"
    assert _dispatch.choose(spec(256, 256, 1), op) == "gemm"
    assert _dispatch.choose(spec(256, 256, 2), op) == "gemm"
    assert _dispatch.choose(spec(32, 32, 1, K=31), op) == "gemm"
    assert _dispatch.choose(spec(128, 128, 8), op) == "direct"
    assert _dispatch.choose(spec(64, 64, 64), op) == "direct"
    assert _dispatch.choose(spec(25, 25, 1, K=7), op) == "direct"
    assert _dispatch.choose(spec(12, 64, 1, K=16), op) == "im2col"
    assert _dispatch.choose(spec(2, 256, 1, K=9), op) == "im2col"
    assert _dispatch.choose(spec(48, 64, 2, K=5), op) == "im2col"
    assert _dispatch.choose(spec(64, 64, 1), op) == "im2col"
    # A thin input with a kernel so long that one block's scratch would pass
    # its budget: the shifted products, which need no scratch.
    op_spec = spec(12, 64, 1, K=999, L=4096, stride=2, dilation=2)
    assert _dispatch.choose(op_spec, op) == "gemm"
    # A strided layer with a polyphase form and two taps or more per phase:
    # the dot products on its phases; one tap per phase stays with BLAS.
    assert _dispatch.choose(spec(1, 512, 1, K=10, L=16000, stride=5), op) == "tiled"
    assert _dispatch.choose(spec(12, 64, 1, K=1000, L=4096, stride=2), op) == "tiled"
    assert _dispatch.choose(spec(128, 128, 1, K=2, L=2048, stride=2), op) == "im2col"
    # K not a multiple of the stride: the phases with padded taps while those
    # are at most 1 / PHASE_PADDED_SHARE of all.
    assert _dispatch.choose(spec(64, 64, 1, L=2048, stride=2), op) == "tiled"
    assert _dispatch.choose(spec(3, 64, 1, K=7, L=2048, stride=2), op) == "tiled"
    assert _dispatch.choose(spec(64, 64, 1, K=7, L=2048, stride=3), op) == "tiled"
    assert _dispatch.choose(spec(64, 64, 1, K=5, L=2048, stride=4), op) == "gemm"
    assert _dispatch.choose(spec(1, 512, 1, K=10), op) == "direct"
    assert _dispatch.choose(spec(4, 128, 1, K=3), op) == "direct"
    # A strided layer without a polyphase form (a dilation) and too few
    # channels for the rule above: BLAS once groups have more than one channel
    # on a side and the call STRIDED_MIN_WORK multiply-adds, im2col while its
    # scratch fits.
    op_spec = spec(16, 16, 1, L=256, stride=2, dilation=2)
    assert _dispatch.choose(op_spec, op) == "im2col"
    assert _dispatch.choose(spec(64, 64, 32, L=256, stride=2), op) == "im2col"
    op_spec = spec(8, 8, 1, K=999, L=4096, stride=2, dilation=2)
    assert _dispatch.choose(op_spec, op) == "gemm"
    assert _dispatch.choose(spec(16, 16, 1, L=64, stride=2), op) == "direct"
    assert _dispatch.choose(spec(64, 64, 64, L=4096, stride=2), op) == "direct"
    assert _dispatch.choose(spec(16, 16, 1, K=4, L=128, stride=2), op) == "direct"
