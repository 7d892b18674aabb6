"""Kernels shared by every algorithm family: reductions, padding folds and the
phases of strided taps."""

import numpy as np
from numba import njit, prange

from numconv._config import JIT_OPTIONS, SERIAL_JIT_OPTIONS

# Long sums are taken in blocks of this many terms, each block vectorised and
# then added to a running total, which keeps float32 rounding error near
# sqrt(length) ulps instead of length ulps on signals of a million samples.
SUM_BLOCK = 1024

# Reductions over fewer elements than this run on the calling thread.
SERIAL_ELEMENTS = 1 << 15


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def strided_dot(a, b, b_offset, b_step, length):
    """sum(a[t] * b[b_offset + t * b_step] for t < length), summed in blocks.

    a, b : 1D arrays of one dtype; the caller guarantees every index is in range.
    """
    total = a.dtype.type(0)
    for start in range(0, length, SUM_BLOCK):
        stop = min(start + SUM_BLOCK, length)
        block = a.dtype.type(0)
        if b_step == 1:
            for t in range(start, stop):
                block += a[t] * b[b_offset + t]
        else:
            for t in range(start, stop):
                block += a[t] * b[b_offset + t * b_step]
        total += block
    return total


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def blocked_sum(a):
    """Sum of a 1D array in blocks (see ``SUM_BLOCK``), each by ``block_sum``."""
    total = a.dtype.type(0)
    n = a.shape[0]
    for start in range(0, n, SUM_BLOCK):
        total += block_sum(a[start : min(start + SUM_BLOCK, n)])
    return total


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def block_sum(items):
    """Sum of one block of ``blocked_sum``, a loop over a fresh slice, whose
    indices LLVM knows to be in range, so the loop vectorises (a loop over
    ``a[start + t]`` did not). Kernels that take the blocks of a row apart call
    it on the same slices, so that their sums are bitwise ``blocked_sum``'s."""
    block = items.dtype.type(0)
    for t in range(items.shape[0]):
        block += items[t]
    return block


@njit(**JIT_OPTIONS)
def grad_bias(grad_output, out):
    """out[co] = sum over n and t of grad_output[n, co, t].

    grad_output : (N, C_out, L_out); out : (C_out,). Each channel is summed by
    one thread in a fixed order, so the result does not depend on threads.
    """
    N, C_out, L_out = grad_output.shape
    flat = grad_output.reshape(N * C_out * L_out)
    # Small sums stay on the calling thread: starting the pool costs more.
    if N * C_out * L_out < SERIAL_ELEMENTS:
        for co in range(C_out):
            out[co] = _channel_sum(flat, co, N, C_out, L_out)
    else:
        for co in prange(C_out):
            out[co] = _channel_sum(flat, co, N, C_out, L_out)


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _channel_sum(flat, co, N, C_out, L_out):
    """Sum of channel co of a flattened (N, C_out, L_out) array, n in order."""
    total = flat.dtype.type(0)
    for n in range(N):
        base = (n * C_out + co) * L_out
        total += blocked_sum(flat[base : base + L_out])
    return total


@njit(**JIT_OPTIONS)
def fold_rows(grad_padded, index, out):
    """out[r, index[p]] += grad_padded[r, p] for every p with index[p] >= 0.

    grad_padded : (R, L_padded); index : (L_padded,) int64 with values in
    [-1, L); out : (R, L), zero on entry. Rows are independent.
    """
    R, L_padded = grad_padded.shape
    for r in prange(R):
        for p in range(L_padded):
            i = index[p]
            if i >= 0:
                out[r, i] += grad_padded[r, p]


@njit(**JIT_OPTIONS)
def crop_rows(padded, start, out):
    """out[r, i] = padded[r, start + i]: the zero-padding fold, in parallel.

    padded : (R, L_padded); out : (R, L) with start + L <= L_padded.
    """
    R, L = out.shape
    for r in prange(R):
        src = padded[r, start : start + L]
        dst = out[r]
        for i in range(L):
            dst[i] = src[i]


@njit(**SERIAL_JIT_OPTIONS)
def tap_phases(K, stride, dilation):
    """(phases, slot): the distinct phases (k*d) % s that the taps read, in
    order of first use, and slot[k], tap k's index into them. At most
    min(K, s) phases, whatever the stride."""
    phases = np.empty(K, dtype=np.int64)
    slot = np.empty(K, dtype=np.int64)
    count = 0
    for k in range(K):
        r = (k * dilation) % stride
        i = 0
        while i < count and phases[i] != r:
            i += 1
        if i == count:
            phases[count] = r
            count += 1
        slot[k] = i
    return phases[:count], slot


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def phase_rows(xrow, start, stride, length, phases, out, width):
    """out[i*width + j] = xrow[start + j*s + phases[i]] for j < length, or 0
    past the row's end.

    The phases (from ``tap_phases``) of a row from ``start``: the stride-s
    reads of a tap of phase phases[i] are a contiguous window of row i.
    """
    L = xrow.shape[0]
    for i in range(phases.shape[0]):
        dst = out[i * width : i * width + length]
        r = phases[i]
        for j in range(length):
            p = start + j * stride + r
            dst[j] = xrow[p] if p < L else 0
