"""Direct loop kernels: forward, input gradient and weight gradient.

These read the padded input ``xp`` (N, C_in, L_padded) and make no copies. Each
parallel loop gives every thread whole output rows that it alone writes, so
nothing races and every result is independent of the thread count.

Index arithmetic shared by all three: output position t of channel co reads
padded position ``t * stride + k * dilation`` of every input channel in co's
group, for k < K. Channel c of the input belongs to group ``c // C_in_per_group``;
output channel co to group ``co // C_out_per_group``.
"""

from numba import njit, prange

from numconv._config import JIT_OPTIONS
from numconv._kernels.common import strided_dot


def supports(spec, op):
    """The direct kernels handle every valid ConvSpec and every operation."""
    return True


@njit(**JIT_OPTIONS)
def forward(xp, weight, bias, groups, stride, dilation, out):
    """out[n, co, t] = bias[co] + sum_{ci, k} weight[co, ci, k] * xp[n, c(ci), t*s + k*d].

    xp : (N, C_in, L_padded); weight : (C_out, C_in/groups, K); bias : (C_out,)
    (zeros for no bias); out : (N, C_out, L_out), fully overwritten.
    Requires (L_out - 1) * stride + (K - 1) * dilation < L_padded.
    """
    N, C_out, L_out = out.shape
    C_in_g = weight.shape[1]
    K = weight.shape[2]
    C_out_g = C_out // groups
    for r in prange(N * C_out):
        n = r // C_out
        co = r - n * C_out
        c0 = (co // C_out_g) * C_in_g
        row = out[n, co]
        b = bias[co]
        for t in range(L_out):
            row[t] = b
        for ci in range(C_in_g):
            xrow = xp[n, c0 + ci]
            for k in range(K):
                wv = weight[co, ci, k]
                off = k * dilation
                if stride == 1:
                    for t in range(L_out):
                        row[t] += wv * xrow[off + t]
                else:
                    for t in range(L_out):
                        row[t] += wv * xrow[off + t * stride]


@njit(**JIT_OPTIONS)
def grad_input(grad_output, weight, groups, stride, dilation, out):
    """Transposed convolution: the adjoint of ``forward`` with respect to xp.

    out[n, c, t*s + k*d] += weight[co, ci, k] * grad_output[n, co, t], summed over
    the output channels co of c's group.

    grad_output : (N, C_out, L_out); weight : (C_out, C_in/groups, K);
    out : (N, C_in, L_padded), fully overwritten; positions no output reads get 0.
    Requires (L_out - 1) * stride + (K - 1) * dilation < L_padded.
    """
    N, C_in, L_padded = out.shape
    C_out = grad_output.shape[1]
    L_out = grad_output.shape[2]
    C_in_g = weight.shape[1]
    K = weight.shape[2]
    C_out_g = C_out // groups
    for r in prange(N * C_in):
        n = r // C_in
        c = r - n * C_in
        group = c // C_in_g
        ci = c - group * C_in_g
        row = out[n, c]
        for p in range(L_padded):
            row[p] = 0
        for j in range(C_out_g):
            co = group * C_out_g + j
            grow = grad_output[n, co]
            for k in range(K):
                wv = weight[co, ci, k]
                off = k * dilation
                if stride == 1:
                    for t in range(L_out):
                        row[off + t] += wv * grow[t]
                else:
                    for t in range(L_out):
                        row[off + t * stride] += wv * grow[t]


@njit(**JIT_OPTIONS)
def grad_weight(xp, grad_output, groups, stride, dilation, out):
    """out[co, ci, k] = sum_{n, t} grad_output[n, co, t] * xp[n, c(ci), t*s + k*d].

    xp : (N, C_in, L_padded); grad_output : (N, C_out, L_out);
    out : (C_out, C_in/groups, K), fully overwritten. Each (co, ci) pair is
    summed by one thread over n in order, so the result is deterministic.
    """
    C_out, C_in_g, K = out.shape
    N = grad_output.shape[0]
    L_out = grad_output.shape[2]
    C_out_g = C_out // groups
    for r in prange(C_out * C_in_g):
        co = r // C_in_g
        ci = r - co * C_in_g
        c = (co // C_out_g) * C_in_g + ci
        for k in range(K):
            total = out.dtype.type(0)
            for n in range(N):
                total += strided_dot(
                    grad_output[n, co], xp[n, c], k * dilation, stride, L_out
                )
            out[co, ci, k] = total
