"""BLAS-backed kernels over a block-local im2col: one deep product per block.

When the input is thin (an ECG stem: 12 leads, K = 16) or C_in/g * K is
small (64 channels, K = 3), the K shifted products of
``numconv._kernels.gemm`` have an inner dimension of only C_in/g, and BLAS
runs such products far below its peak. Here each work item instead copies the
K windows of its block of positions into a scratch block

    cols[ci*K + k, j] = xz[n, c(ci), (t0 + j)*s + k*d - shift]        (j < m)

(C_in/g * K rows, m <= ``MAX_BLOCK`` columns; xz is the input extended by
zeros, so padding costs no copy of the input), and makes one product with
inner dimension C_in/g * K. The weight, (C_out, C_in/g, K) row-major, already
lies in that order, so it needs no re-layout:

- forward: Y_block (C_out/g x m) = W_g (C_out/g x C_in/g*K) @ cols, into a
  second scratch block that is copied out with the bias;
- weight gradient: gW_g += G_block (C_out/g x m) @ cols^T, summed over the
  (sample, block) units in a fixed split of the batch, as in ``gemm``: the
  result does not depend on the thread count.

The scratch holds exactly the elements the shifted products would read, with
zeros where those read padding, so no term is added that they would not add;
every stride is read directly, without a phase split. The scratch of one item
is at most ``SCRATCH_BYTES``, so it stays in the core's L2 cache while BLAS
reads it; for deep layers that leaves short blocks, which is why
``numconv._dispatch`` (where the timings that set the rule are kept) sends
layers with a large C_in/g * K to the shifted products instead.

The input gradient is ``gemm``'s: its K products transposed write a thin
output of C_in/g rows, and gathering them through a scratch block would need a
scatter-add of K rows per input row back into the gradient.
"""

import numpy as np
from numba import njit, prange

from numconv import _blas
from numconv._blas import NO_TRANS, TRANS, gemm
from numconv._config import JIT_OPTIONS, SERIAL_JIT_OPTIONS
from numconv._kernels import gemm as shifted
from numconv._kernels.gemm import add_bias_into, merge_partials, scratch_row

# Positions per block, and the scratch one block may take.
MAX_BLOCK = 512
MIN_BLOCK = 32
SCRATCH_BYTES = 512 * 1024


def supports(spec, op):
    """Specs with at least one input and output channel whose BLAS integers fit
    in 32 bits."""
    depth = spec.C_in_per_group * spec.K
    return (
        shifted.supports(spec, op)
        and depth * MAX_BLOCK <= shifted.INT32_MAX
        # BLAS refuses a leading dimension of 0.
        and depth > 0
        and spec.C_out_per_group > 0
    )


def scratch_fits(spec):
    """True when a block of ``MIN_BLOCK`` positions fits the scratch budget.

    Beyond that depth every block would take more than ``SCRATCH_BYTES``
    (a long kernel on a thin input: C_in/g * K in the thousands), so the
    dispatcher does not choose this family.
    """
    depth = spec.C_in_per_group * spec.K
    return depth * MIN_BLOCK * spec.dtype.itemsize <= SCRATCH_BYTES


def cols_block(N, L_out, depth, itemsize):
    """Output positions per block: fits the scratch budget, splits small batches.

    A function of the shape only, so the weight gradient's summation order
    never depends on the thread count.
    """
    fit = SCRATCH_BYTES // max(depth * itemsize, 1)
    block = min(shifted.time_block(N, L_out), max(MIN_BLOCK, fit))
    return max(1, min(block, L_out))


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def fill_cols(x, n, c0, C_in_g, K, t0, m, stride, dilation, shift, cols):
    """cols[ci*K + k, j] = xz[n, c0 + ci, (t0 + j)*s + k*d - shift] for j < m.

    x : (N, C_in, L); xz is x extended by zeros on both sides.
    """
    L = x.shape[2]
    for ci in range(C_in_g):
        xrow = x[n, c0 + ci]
        for k in range(K):
            crow = cols[ci * K + k]
            p0 = t0 * stride + k * dilation - shift
            if stride == 1:
                # Columns [ja, jb) read x; the others read padding.
                ja = min(max(-p0, 0), m)
                jb = max(min(L - p0, m), ja)
                crow[:ja] = 0
                crow[ja:jb] = xrow[p0 + ja : p0 + jb]
                crow[jb:m] = 0
            else:
                for j in range(m):
                    p = p0 + j * stride
                    crow[j] = xrow[p] if 0 <= p < L else 0


@njit(**JIT_OPTIONS)
def forward_kernel(x, shift, weight, bias, groups, stride, dilation, block, out):
    """out[n, co, t] = bias[co] + sum_{ci, k} weight[co, ci, k] * xz[n, c(ci), u].

    u = t*s + k*d - shift, xz as in ``fill_cols``. x : (N, C_in, L);
    weight : (C_out, C_in/groups, K), C-contiguous; bias : (C_out,);
    out : (N, C_out, L_out), fully overwritten; block : positions per work item.
    Call inside ``numconv._blas.single_threaded()``.
    """
    N, C_out, L_out = out.shape
    _, C_in_g, K = weight.shape
    C_out_g = C_out // groups
    depth = C_in_g * K
    blocks = (L_out + block - 1) // block
    one = out.dtype.type(1)
    zero = out.dtype.type(0)
    for item in prange(N * blocks):
        n = item // blocks
        t0 = (item - n * blocks) * block
        m = min(block, L_out - t0)
        row = scratch_row(m)
        cols = np.empty((depth, row), dtype=out.dtype)
        # The product goes to a scratch block, whose rows are ``scratch_row``
        # apart (see ``numconv._kernels.gemm.forward_kernel``), and is copied
        # out with the bias.
        acc = np.empty((C_out_g, row), dtype=out.dtype)
        for g in range(groups):
            fill_cols(x, n, g * C_in_g, C_in_g, K, t0, m, stride, dilation, shift,
                      cols)
            # acc^T (m x C_out/g) = cols^T (m x depth) @ W_g^T (depth x C_out/g)
            gemm(NO_TRANS, NO_TRANS, m, C_out_g, depth,
                 one, cols, 0, row,
                 weight, g * C_out_g * depth, depth,
                 zero, acc, 0, row)
            add_bias_into(acc, bias, n, g * C_out_g, t0, m, out)


@njit(**JIT_OPTIONS)
def grad_weight_kernel(x, shift, grad_output, groups, stride, dilation, block, chunks,
                       partial):
    """partial[j, co, ci*K + k] = chunk j's share of the weight gradient.

    x : (N, C_in, L), read as in ``fill_cols``; grad_output : (N, C_out, L_out);
    partial : (chunks, C_out, C_in/groups * K), fully overwritten. Chunk j sums
    the j-th of ``chunks`` near-equal runs of the (n, block) units, in order.
    Call inside ``numconv._blas.single_threaded()``.
    """
    N, C_out, L_out = grad_output.shape
    depth = partial.shape[2]
    C_in_g = x.shape[1] // groups
    K = depth // max(C_in_g, 1)
    C_out_g = C_out // groups
    blocks = (L_out + block - 1) // block
    units = N * blocks
    one = partial.dtype.type(1)
    for j in prange(chunks):
        partial[j] = 0
        row = scratch_row(min(block, L_out))
        cols = np.empty((depth, row), dtype=partial.dtype)
        for u in range(j * units // chunks, (j + 1) * units // chunks):
            n = u // blocks
            t0 = (u - n * blocks) * block
            m = min(block, L_out - t0)
            for g in range(groups):
                fill_cols(x, n, g * C_in_g, C_in_g, K, t0, m, stride, dilation,
                          shift, cols)
                # gW_g^T (depth x C_out/g) += cols (depth x m) @ G^T (m x C_out/g)
                gemm(TRANS, NO_TRANS, depth, C_out_g, m,
                     one, cols, 0, row,
                     grad_output, (n * C_out + g * C_out_g) * L_out + t0, L_out,
                     one, partial, (j * C_out + g * C_out_g) * depth, depth)


def _forward(x, shift, weight, bias, groups, stride, dilation, out):
    N, C_out, L_out = out.shape
    weight = np.ascontiguousarray(weight)
    block = cols_block(N, L_out, weight.shape[1] * weight.shape[2], out.itemsize)
    with _blas.single_threaded():
        forward_kernel(x, shift, weight, bias, groups, stride, dilation, block, out)


def forward(xp, weight, bias, groups, stride, dilation, out):
    """Forward pass; the family's entry point (see ``numconv._dispatch``).

    xp : (N, C_in, L_padded); weight : (C_out, C_in/groups, K); bias : (C_out,);
    out : (N, C_out, L_out), fully overwritten.
    """
    _forward(xp, 0, weight, bias, groups, stride, dilation, out)


def forward_shifted(x, shift, weight, bias, groups, dilation, out):
    """Stride-1 forward pass of x zero-padded by ``shift`` on the left, no copy."""
    _forward(x, shift, weight, bias, groups, 1, dilation, out)


def _grad_weight(x, shift, grad_output, groups, stride, dilation, out):
    C_out, C_in_g, K = out.shape
    N, _, L_out = grad_output.shape
    depth = C_in_g * K
    block = cols_block(N, L_out, depth, out.itemsize)
    # Chunks as in the shifted products' weight gradient: a function of the shape.
    chunks = shifted.weight_chunks(N, C_out, L_out, out.size, block)
    partial = np.empty((chunks, C_out, depth), dtype=out.dtype)
    with _blas.single_threaded():
        grad_weight_kernel(x, shift, grad_output, groups, stride, dilation, block,
                           chunks, partial)
    # merge_partials sums (chunks, K, C_out, C_in/g) into (C_out, C_in/g, K); the
    # partial buffers here are that with K = 1 and C_in/g * K columns.
    merge_partials(
        partial.reshape(chunks, 1, C_out, depth), out.reshape(C_out, depth, 1)
    )


def grad_weight(xp, grad_output, groups, stride, dilation, out):
    """Weight gradient; the family's entry point. Bitwise the same for any
    number of threads.

    xp : (N, C_in, L_padded); grad_output : (N, C_out, L_out);
    out : (C_out, C_in/groups, K), fully overwritten.
    """
    _grad_weight(xp, 0, grad_output, groups, stride, dilation, out)


def grad_weight_shifted(x, shift, grad_output, groups, dilation, out):
    """Stride-1 weight gradient of x zero-padded by ``shift`` on the left."""
    _grad_weight(x, shift, grad_output, groups, 1, dilation, out)


grad_input = shifted.grad_input
