"""A slow, obviously correct 1D convolution, written for clarity only.

Everything here is plain Python loops over the definition, computed in float64,
and shares no code with numconv: it is the yardstick the kernels are measured
against. Layout NCL; x is (N, C_in, L), weight (C_out, C_in/groups, K).
"""

import math

import numpy as np


def padding_pair(padding, L, K, stride, dilation):
    """(left, right) padding for each form numconv accepts, from first principles."""
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return dilation * (K - 1), 0
    if padding == "same":
        # At stride 1 the output keeps the input's length; at stride s it has
        # ceil(L / s) positions. Either way the odd extra goes on the right.
        L_out = math.ceil(L / stride)
        total = max((L_out - 1) * stride + dilation * (K - 1) + 1 - L, 0)
        return total // 2, total - total // 2
    if isinstance(padding, (tuple, list)):
        if len(padding) == 1:
            return padding[0], padding[0]
        return padding[0], padding[1]
    return padding, padding


def source_index(p, L, left, mode):
    """Input position that padded position p shows, or None for a zero."""
    i = p - left
    if 0 <= i < L:
        return i
    if mode == "zeros":
        return None
    if mode == "replicate":
        return 0 if i < 0 else L - 1
    if mode == "circular":
        return i % L
    if mode == "reflect":
        # Mirror about the first and last samples, without repeating them.
        return -i if i < 0 else 2 * (L - 1) - i
    raise ValueError(mode)


def output_length(L, left, right, K, stride, dilation):
    return (L + left + right - dilation * (K - 1) - 1) // stride + 1


def _taps(n_out_t, k, stride, dilation, left, L, mode):
    """Input position read by output position t through tap k (None for zero)."""
    return source_index(n_out_t * stride + k * dilation, L, left, mode)


def conv1d(x, weight, bias, stride, left, right, dilation, groups, mode):
    """y[n, co, t] = b[co] + sum_{ci, k} w[co, ci, k] * padded_x[n, g*C_in_g + ci, t*s + k*d]."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    N, C_in, L = x.shape
    C_out, C_in_g, K = weight.shape
    C_out_g = C_out // groups
    L_out = output_length(L, left, right, K, stride, dilation)
    y = np.zeros((N, C_out, L_out))
    for n in range(N):
        for co in range(C_out):
            g = co // C_out_g
            for t in range(L_out):
                total = 0.0 if bias is None else float(bias[co])
                for ci in range(C_in_g):
                    for k in range(K):
                        i = _taps(t, k, stride, dilation, left, L, mode)
                        if i is not None:
                            total += weight[co, ci, k] * x[n, g * C_in_g + ci, i]
                y[n, co, t] = total
    return y


def grad_input(grad_output, weight, L, stride, left, right, dilation, groups, mode):
    """dL/dx: every product in the forward sum sends w * g back to the x it read."""
    g = np.asarray(grad_output, np.float64)
    weight = np.asarray(weight, np.float64)
    N, C_out, L_out = g.shape
    _, C_in_g, K = weight.shape
    C_out_g = C_out // groups
    gx = np.zeros((N, C_in_g * groups, L))
    for n in range(N):
        for co in range(C_out):
            grp = co // C_out_g
            for t in range(L_out):
                for ci in range(C_in_g):
                    for k in range(K):
                        i = _taps(t, k, stride, dilation, left, L, mode)
                        if i is not None:
                            gx[n, grp * C_in_g + ci, i] += weight[co, ci, k] * g[n, co, t]
    return gx


def grad_weight(x, grad_output, K, stride, left, right, dilation, groups, mode):
    """dL/dw: every product in the forward sum sends x * g back to the w it used."""
    x = np.asarray(x, np.float64)
    g = np.asarray(grad_output, np.float64)
    N, C_in, L = x.shape
    _, C_out, L_out = g.shape
    C_in_g = C_in // groups
    C_out_g = C_out // groups
    gw = np.zeros((C_out, C_in_g, K))
    for n in range(N):
        for co in range(C_out):
            grp = co // C_out_g
            for t in range(L_out):
                for ci in range(C_in_g):
                    for k in range(K):
                        i = _taps(t, k, stride, dilation, left, L, mode)
                        if i is not None:
                            gw[co, ci, k] += x[n, grp * C_in_g + ci, i] * g[n, co, t]
    return gw


def grad_bias(grad_output):
    g = np.asarray(grad_output, np.float64)
    N, C_out, L_out = g.shape
    gb = np.zeros(C_out)
    for co in range(C_out):
        for n in range(N):
            for t in range(L_out):
                gb[co] += g[n, co, t]
    return gb
