"""BLAS-backed kernels: a convolution as K shifted matrix products, no im2col.

For one sample n, group g and tap k, the forward pass adds

    y[n, co, t] += sum_ci W[co, ci, k] * xp[n, ci, t + k*d]      (stride 1)

that is, Y (C_out/g x L_out) += W_k (C_out/g x C_in/g) @ X_k, where X_k is the
window ``xp[n, channels of g, k*d : k*d + L_out]``. In BLAS's column-major terms
that window of the C-contiguous (C_in, L_padded) slab is an (L_out x C_in/g)
matrix with leading dimension L_padded, so BLAS reads it where it lies: at
stride 1 no copy of the input is made. The forward pass sums each block's K
products in a small scratch block and copies it out with the bias. The input
gradient runs the same products transposed (gX_k += W_k^T @ G), and the weight
gradient reduces G @ X_k^T over the batch.

Each kernel is a parallel loop over blocks of work; every iteration makes its
own single-threaded BLAS calls (see ``numconv._blas``). The weights are first
re-laid out as ``wt[k, co, ci] = weight[co, ci, k]`` (K, C_out, C_in/groups) so
that each tap's matrix has unit stride.

Stride s > 1: tap k reads padded position t*s + k*d = (t + q)*s + r with
r = (k*d) % s and q = (k*d) // s, that is position t + q of phase r, where
phase r of a row holds its positions r, r + s, r + 2s, ... Each work item
copies the phases its taps read (P <= min(K, s) of them, see
``common.tap_phases``) of its block of the input into a scratch block
(``phase_block``, C_in * P * (block + q_max) elements per item, never a copy
of the whole input and never more for a larger stride), where every tap is
again a unit-stride window, of one phase. No tap is added, so no structural
zero ever multiplies an input. The
input gradient gathers a block's phases in such a scratch block too: the
first product into each phase overwrites it (beta = 0), so only the columns
no tap reaches are zeroed, and one pass interleaves the phases into the
output.

Weight gradient determinism: the batch, cut into (n, time-block) units, is split
into a number of chunks that depends on the shape only, never on the thread
count. Each chunk sums its units in order into its own buffer, and the buffers
are added in chunk order, so the result is bitwise the same for any number of
threads.
"""

import numpy as np
from numba import njit, prange

from numconv import _blas
from numconv._blas import NO_TRANS, TRANS, gemm
from numconv._config import JIT_OPTIONS, SERIAL_JIT_OPTIONS
from numconv._kernels.common import phase_rows, tap_phases

# BLAS takes 32-bit integers; every dimension and leading dimension a kernel
# passes must stay below this.
INT32_MAX = 2**31 - 1

# Time positions per block of work: long enough that each matrix product runs
# near the BLAS's peak, short enough that small batches still give every thread
# blocks of work. Longer blocks lost half the speed on signals of 4096 samples
# (row strides of 16 KiB) in the forward pass and the weight gradient, and
# gained nothing elsewhere (measured on the suite's dense shapes, 128 to 4096).
MIN_BLOCK = 128
MAX_BLOCK = 512

# The weight gradient sums at most this many partial buffers (a fixed split of
# the batch, see the module docstring), and never more than fit in the
# forward output's size.
MAX_CHUNKS = 8

# Work items the parallel loops aim for, whatever the thread count: enough to
# balance 1, 2, 4 or 8 threads.
TARGET_ITEMS = 16


def supports(spec, op):
    """Every stride, dilation and grouping, with every BLAS integer within 32 bits."""
    # Offsets into arrays are 64-bit; only sizes and leading dimensions
    # (at most L_padded + stride) go to BLAS as 32-bit integers.
    largest = max(spec.L_padded + spec.stride, spec.C_in, spec.C_out)
    return largest <= INT32_MAX


def time_block(N, L):
    """Positions per work item of a loop over (sample, block of positions).

    Depends only on the shape, so the work split (and the weight gradient's
    summation order) never depends on the thread count.
    """
    block = MAX_BLOCK
    if N > 0:
        # Small batches: cut the signal finer so every thread gets work.
        per_sample = -(-TARGET_ITEMS // N)
        block = min(block, max(MIN_BLOCK, -(-L // per_sample)))
    return max(1, min(block, L))


@njit(**SERIAL_JIT_OPTIONS)
def tap_major(weight):
    """wt[k, co, ci] = weight[co, ci, k]: (C_out, C_in/g, K) -> (K, C_out, C_in/g)."""
    C_out, C_in_g, K = weight.shape
    wt = np.empty((K, C_out, C_in_g), dtype=weight.dtype)
    for co in range(C_out):
        for ci in range(C_in_g):
            for k in range(K):
                wt[k, co, ci] = weight[co, ci, k]
    return wt


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def scratch_row(length):
    """Row length (>= length) of a phase scratch block.

    Congruent to 8 modulo 16 elements, so the block's leading dimension
    (P * row elements for P phases) is a multiple of 4 KiB less often: with a
    4 KiB multiple every column of a BLAS tile falls into the same cache sets,
    which cost the input gradient about a tenth of its speed at blocks of 512
    positions.
    """
    return (length // 16 + 1) * 16 + 8


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def phase_block(xp, n, stride, t0, length, row, phases):
    """The phases the taps read of a block of sample n:
    out[0, c*P + i, j] = xp[n, c, (t0 + j)*s + phases[i]] (P = phases.size).

    xp : (N, C_in, L_padded); phases : from ``common.tap_phases``, so that P
    <= min(K, s) whatever the stride. Returns a new (1, C_in*P, row) array
    (row >= length, see ``scratch_row``) filled for j < length; positions past
    L_padded get 0 (no output reads them), columns from length on are never
    read.
    """
    C_in = xp.shape[1]
    P = phases.shape[0]
    out = np.empty((1, C_in * P, row), dtype=xp.dtype)
    flat = out.reshape(C_in * P * row)
    for c in range(C_in):
        phase_rows(xp[n, c], t0 * stride, stride, length, phases,
                   flat[c * P * row :], row)
    return out


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def block_source(xp, n, stride, t0, length, phases):
    """Where the products of sample n's block starting at t0 read the input.

    Returns (src, at, phase_len): the matrices start ``at`` elements into
    ``src``, the i-th phase of ``phases`` of channel c at ``at + (c*P + i) *
    phase_len``. At stride 1 that is xp itself (P = 1); otherwise a new
    ``phase_block`` of the ``length`` phase positions from t0, where each tap
    is a unit-stride window again.
    """
    C_in, L_padded = xp.shape[1], xp.shape[2]
    if stride == 1:
        return xp, n * C_in * L_padded + t0, L_padded
    phase_len = scratch_row(length)
    return phase_block(xp, n, stride, t0, length, phase_len, phases), 0, phase_len


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def add_bias_into(acc, bias, n, co0, t0, m, out):
    """out[n, co0 + j, t0 + t] = acc[j, t] + bias[co0 + j] for each row j, t < m."""
    for j in range(acc.shape[0]):
        orow = out[n, co0 + j, t0 : t0 + m]
        arow = acc[j]
        bv = bias[co0 + j]
        for t in range(m):
            orow[t] = arow[t] + bv


@njit(**JIT_OPTIONS)
def forward_kernel(xp, wt, bias, groups, stride, dilation, block, out):
    """out[n, co, t] = bias[co] + sum_{ci, k} wt[k, co, ci] * xp[n, c(ci), t*s + k*d].

    xp : (N, C_in, L_padded); wt : (K, C_out, C_in/groups) (see ``tap_major``);
    bias : (C_out,); out : (N, C_out, L_out), fully overwritten; block : output
    positions per work item (>= 1). Requires (L_out - 1) * s + (K - 1) * d <
    L_padded. Call inside ``numconv._blas.single_threaded()``.
    """
    N, C_out, L_out = out.shape
    K, _, C_in_g = wt.shape
    C_out_g = C_out // groups
    max_lag = ((K - 1) * dilation) // stride
    blocks = (L_out + block - 1) // block
    one = out.dtype.type(1)
    zero = out.dtype.type(0)
    phases, slot = tap_phases(K, stride, dilation)
    P = phases.shape[0]
    for item in prange(N * blocks):
        n = item // blocks
        t0 = (item - n * blocks) * block
        m = min(block, L_out - t0)

        src, at, phase_len = block_source(xp, n, stride, t0, m + max_lag, phases)
        ld = P * phase_len

        # Each group's block of output is summed in a scratch block and then
        # copied out with the bias: its rows, ``scratch_row`` apart, never
        # fall into the same cache sets the way rows of a long output can, and
        # the first tap overwrites it (beta = 0), so nothing needs zeroing.
        # Against summing straight into ``out`` after a bias fill, timed in
        # one process with alternating order, the suite's dense layers ran
        # 0 to 6% faster (textcnn 20.9 -> 19.7 ms, resnet1d 10.9 -> 10.7).
        acc_row = scratch_row(m)
        acc = np.empty((C_out_g, acc_row), dtype=out.dtype)
        for g in range(groups):
            x_at = at + g * C_in_g * ld
            for k in range(K):
                shift = slot[k] * phase_len + (k * dilation) // stride
                # acc^T (m x C_out/g) (+)= X_k^T (m x C_in/g) @ W_k^T (C_in/g x C_out/g)
                gemm(NO_TRANS, NO_TRANS, m, C_out_g, C_in_g,
                     one, src, x_at + shift, ld,
                     wt, (k * C_out + g * C_out_g) * C_in_g, C_in_g,
                     zero if k == 0 else one, acc, 0, acc_row)
            add_bias_into(acc, bias, n, g * C_out_g, t0, m, out)


@njit(**JIT_OPTIONS)
def grad_input_kernel(grad_output, wt, groups, stride, dilation, block, out):
    """The adjoint of ``forward_kernel`` with respect to xp.

    out[n, c, t*s + k*d] += wt[k, co, ci] * grad_output[n, co, t] over co, k, t.
    grad_output : (N, C_out, L_out); wt : (K, C_out, C_in/groups);
    out : (N, C_in, L_padded), fully overwritten (positions no output reads get
    0); block : positions per work item, counted in phase positions (padded
    positions // s). Each item owns the padded positions
    [j0*s, j1*s) and gathers every tap's contribution to them, so items never
    write the same element. At stride > 1 it gathers them per phase in a
    scratch block and interleaves that into ``out``. Call inside
    ``_blas.single_threaded()``.
    """
    N, C_in, L_padded = out.shape
    C_out, L_out = grad_output.shape[1], grad_output.shape[2]
    K, _, C_in_g = wt.shape
    C_out_g = C_out // groups
    L_phase = (L_padded + stride - 1) // stride
    blocks = (L_phase + block - 1) // block
    one = out.dtype.type(1)
    zero = out.dtype.type(0)
    phases, slot = tap_phases(K, stride, dilation)
    P = phases.shape[0]
    for item in prange(N * blocks):
        n = item // blocks
        j0 = (item - n * blocks) * block
        j1 = min(j0 + block, L_phase)

        if stride == 1:
            dst, phase_len, at = out, L_padded, n * C_in * L_padded
            for c in range(C_in):
                out[n, c, j0:j1] = 0
        else:
            # Phase position j of this block sits at column j - j0 of a row
            # of padded length, the i-th phase of ``phases`` in row c*P + i.
            # Not zeroed: the first product into each phase overwrites (beta =
            # 0) and only the columns it leaves out are zeroed.
            phase_len = scratch_row(j1 - j0)
            dst, at = np.empty((1, C_in * P, phase_len), out.dtype), -j0
        ld = P * phase_len

        for g in range(groups):
            g_at = (n * C_out + g * C_out_g) * L_out
            x_at = at + g * C_in_g * ld
            # filled[i]: the i-th phase of this group's rows holds data.
            filled = np.zeros(P, dtype=np.bool_)
            for k in range(K):
                phase, lag = slot[k], (k * dilation) // stride
                # Output positions t whose tap k lands in [j0, j1) of its phase.
                t0 = max(j0 - lag, 0)
                t1 = min(j1 - lag, L_out)
                if t1 <= t0:
                    continue
                beta = one
                if stride != 1 and not filled[phase]:
                    filled[phase] = True
                    beta = zero
                    for c in range(g * C_in_g, (g + 1) * C_in_g):
                        row = dst[0, c * P + phase]
                        row[: t0 + lag - j0] = 0
                        row[t1 + lag - j0 : j1 - j0] = 0
                # gX_k^T (m x C_in/g) (+)= G^T (m x C_out/g) @ W_k (C_out/g x C_in/g)
                gemm(NO_TRANS, TRANS, t1 - t0, C_in_g, C_out_g,
                     one, grad_output, g_at + t0, L_out,
                     wt, (k * C_out + g * C_out_g) * C_in_g, C_in_g,
                     beta, dst, x_at + phase * phase_len + lag + t0, ld)
            if stride != 1:
                for i in range(P):
                    if not filled[i]:
                        for c in range(g * C_in_g, (g + 1) * C_in_g):
                            dst[0, c * P + i] = 0

        if stride != 1:
            # Interleave: padded position (j0 + j)*s + r from column j of
            # phase r; positions of phases no tap reaches get 0.
            p0 = j0 * stride
            full = min(j1 * stride, L_padded) - p0
            for c in range(C_in):
                orow = out[n, c, p0 : p0 + full]
                if P < stride:
                    orow[:] = 0
                for i in range(P):
                    r = phases[i]
                    prow = dst[0, c * P + i]
                    for j in range((full - r + stride - 1) // stride):
                        orow[j * stride + r] = prow[j]


@njit(**JIT_OPTIONS)
def grad_weight_kernel(xp, grad_output, groups, stride, dilation, block, chunks,
                       partial):
    """partial[j, k, co, ci] = sum over chunk j's units of G @ X_k^T.

    xp : (N, C_in, L_padded); grad_output : (N, C_out, L_out);
    partial : (chunks, K, C_out, C_in/groups), fully overwritten. The units are
    (n, block of ``block`` output positions) in order; chunk j takes the j-th of
    ``chunks`` near-equal runs of them and sums them in order, so ``partial``
    does not depend on the thread count. Call inside ``_blas.single_threaded()``.
    """
    N, C_in, L_padded = xp.shape
    C_out, L_out = grad_output.shape[1], grad_output.shape[2]
    K, C_in_g = partial.shape[1], partial.shape[3]
    C_out_g = C_out // groups
    max_lag = ((K - 1) * dilation) // stride
    blocks = (L_out + block - 1) // block
    units = N * blocks
    one = partial.dtype.type(1)
    phases, slot = tap_phases(K, stride, dilation)
    P = phases.shape[0]
    for j in prange(chunks):
        acc = partial[j]
        acc[:] = 0
        acc_at = j * K * C_out * C_in_g

        for u in range(j * units // chunks, (j + 1) * units // chunks):
            n = u // blocks
            t0 = (u - n * blocks) * block
            m = min(block, L_out - t0)
            src, at, phase_len = block_source(xp, n, stride, t0, m + max_lag,
                                              phases)
            ld = P * phase_len

            for g in range(groups):
                g_at = (n * C_out + g * C_out_g) * L_out + t0
                x_at = at + g * C_in_g * ld
                for k in range(K):
                    shift = slot[k] * phase_len + (k * dilation) // stride
                    # gW_k^T (C_in/g x C_out/g) += X_k (C_in/g x m) @ G^T (m x C_out/g)
                    gemm(TRANS, NO_TRANS, C_in_g, C_out_g, m,
                         one, src, x_at + shift, ld,
                         grad_output, g_at, L_out,
                         one, partial, acc_at + (k * C_out + g * C_out_g) * C_in_g,
                         C_in_g)


@njit(**JIT_OPTIONS)
def merge_partials(partial, out):
    """out[co, ci, k] = sum_j partial[j, k, co, ci], added in order of j.

    partial : (chunks, K, C_out, C_in/groups); out : (C_out, C_in/groups, K).
    """
    chunks, K, C_out, C_in_g = partial.shape
    for co in prange(C_out):
        for ci in range(C_in_g):
            for k in range(K):
                total = partial[0, k, co, ci]
                for j in range(1, chunks):
                    total += partial[j, k, co, ci]
                out[co, ci, k] = total


def weight_block(N, L_out):
    """Output positions per unit of the weight gradient's reduction.

    Small batches are cut finer so that there are enough units to fill
    ``MAX_CHUNKS`` chunks. A function of the shape only.
    """
    if N == 0:
        return max(1, L_out)
    per_sample = -(-MAX_CHUNKS // N)
    block = min(MAX_BLOCK, max(MIN_BLOCK, -(-L_out // per_sample)))
    return max(1, min(block, L_out))


def weight_chunks(N, C_out, L_out, weight_size, block, units=None):
    """How many partial sums the weight gradient keeps: a function of the shape only.

    At most ``MAX_CHUNKS``, at most the number of work units (by default one
    per sample and block of positions), and small enough that the buffers
    take no more memory than the forward output. Powers of two keep 1, 2, 4
    or 8 threads evenly loaded.
    """
    if units is None:
        units = N * (-(-L_out // block))
    budget = max(1, (N * C_out * L_out) // max(weight_size, 1))
    chunks = 1
    while chunks * 2 <= min(MAX_CHUNKS, units, budget):
        chunks *= 2
    return chunks


def forward(xp, weight, bias, groups, stride, dilation, out):
    """Forward pass; the family's entry point (see ``numconv._dispatch``).

    xp : (N, C_in, L_padded); weight : (C_out, C_in/groups, K); bias : (C_out,);
    out : (N, C_out, L_out), fully overwritten.
    """
    N, C_out, L_out = out.shape
    block = time_block(N, L_out)
    wt = tap_major(weight)
    with _blas.single_threaded():
        forward_kernel(xp, wt, bias, groups, stride, dilation, block, out)


def grad_input(grad_output, weight, groups, stride, dilation, out):
    """Gradient w.r.t. the padded input; the family's entry point.

    grad_output : (N, C_out, L_out); weight : (C_out, C_in/groups, K);
    out : (N, C_in, L_padded), fully overwritten.
    """
    N, C_in, L_padded = out.shape
    block = time_block(N, -(-L_padded // stride))
    wt = tap_major(weight)
    with _blas.single_threaded():
        grad_input_kernel(grad_output, wt, groups, stride, dilation, block, out)


def grad_weight(xp, grad_output, groups, stride, dilation, out):
    """Weight gradient; the family's entry point.

    xp : (N, C_in, L_padded); grad_output : (N, C_out, L_out);
    out : (C_out, C_in/groups, K), fully overwritten. Bitwise identical for any
    number of threads.
    """
    C_out, C_in_g, K = out.shape
    N, _, L_out = grad_output.shape
    block = weight_block(N, L_out)
    chunks = weight_chunks(N, C_out, L_out, out.size, block)
    partial = np.empty((chunks, K, C_out, C_in_g), dtype=out.dtype)
    with _blas.single_threaded():
        grad_weight_kernel(xp, grad_output, groups, stride, dilation, block, chunks,
                           partial)
    merge_partials(partial, out)
