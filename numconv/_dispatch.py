"""Choice of algorithm for each ConvSpec, in one place.

Every entry point takes C-contiguous, writeable, aligned arrays of
``spec.dtype`` and allocates its own result.
"""

import numpy as np

from numconv._config import kernel_guard
from numconv._kernels import common, direct


def forward(xp, weight, bias, spec):
    """Forward pass on the padded input xp (N, C_in, L_padded) -> (N, C_out, L_out)."""
    out = np.empty((spec.N, spec.C_out, spec.L_out), dtype=spec.dtype)
    with kernel_guard():
        direct.forward(xp, weight, bias, spec.groups, spec.stride, spec.dilation, out)
    return out


def grad_padded_input(grad_output, weight, spec):
    """Gradient w.r.t. the padded input: (N, C_out, L_out) -> (N, C_in, L_padded)."""
    out = np.empty((grad_output.shape[0], spec.C_in, spec.L_padded), dtype=spec.dtype)
    with kernel_guard():
        direct.grad_input(
            grad_output, weight, spec.groups, spec.stride, spec.dilation, out
        )
    return out


def grad_weight(xp, grad_output, spec):
    """Weight gradient (C_out, C_in/groups, K) from xp and grad_output."""
    out = np.empty((spec.C_out, spec.C_in_per_group, spec.K), dtype=spec.dtype)
    with kernel_guard():
        direct.grad_weight(xp, grad_output, spec.groups, spec.stride, spec.dilation, out)
    return out


def grad_bias(grad_output, dtype):
    """Bias gradient (C_out,) from grad_output (N, C_out, L_out)."""
    out = np.empty(grad_output.shape[1], dtype=dtype)
    with kernel_guard():
        common.grad_bias(grad_output, out)
    return out
