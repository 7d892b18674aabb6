"""Padding as an index map from padded positions to input positions.

One map serves both directions: the forward pass gathers the padded input
through it, and the backward pass folds the gradient of the padded input back
onto the input through the same map (a scatter-add, since reflect, replicate
and circular padding read some input positions more than once).
"""

import numpy as np

from numconv._config import kernel_guard
from numconv._kernels.common import fold_rows


def padding_index(L, pad_left, pad_right, padding_mode):
    """Input position read by each padded position, or -1 for a zero.

    Returns an int64 array of length ``pad_left + L + pad_right``. Validation
    guarantees the mode's limits (reflect: padding < L; circular: padding <= L).
    """
    i = np.arange(-pad_left, L + pad_right, dtype=np.int64)
    if padding_mode == "zeros":
        return np.where((i >= 0) & (i < L), i, -1)
    if padding_mode == "reflect":
        i = np.abs(i)
        return np.where(i >= L, 2 * (L - 1) - i, i)
    if padding_mode == "replicate":
        return np.clip(i, 0, L - 1)
    if padding_mode == "circular":
        return np.mod(i, L)
    raise AssertionError(padding_mode)


def pad_input(x, spec):
    """Return the padded input (N, C_in, L_padded), C-contiguous, never aliasing x.

    x : (N, C_in, L) array of ``spec.dtype``.
    """
    N, C, L = x.shape
    if spec.padding_mode == "zeros" or (spec.pad_left == 0 and spec.pad_right == 0):
        xp = np.zeros((N, C, spec.L_padded), dtype=spec.dtype)
        xp[:, :, spec.pad_left : spec.pad_left + L] = x
        return xp
    idx = padding_index(L, spec.pad_left, spec.pad_right, spec.padding_mode)
    return np.ascontiguousarray(x[:, :, idx], dtype=spec.dtype)


def fold_padding(grad_padded, spec):
    """Gradient w.r.t. the input from the gradient w.r.t. the padded input.

    grad_padded : (N, C_in, L_padded) C-contiguous array; returns (N, C_in, L).
    """
    N, C, _ = grad_padded.shape
    if spec.padding_mode == "zeros" or (spec.pad_left == 0 and spec.pad_right == 0):
        return np.ascontiguousarray(
            grad_padded[:, :, spec.pad_left : spec.pad_left + spec.L]
        )
    idx = padding_index(spec.L, spec.pad_left, spec.pad_right, spec.padding_mode)
    out = np.zeros((N, C, spec.L), dtype=grad_padded.dtype)
    with kernel_guard():
        fold_rows(
            grad_padded.reshape(N * C, spec.L_padded), idx, out.reshape(N * C, spec.L)
        )
    return out
