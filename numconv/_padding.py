"""Padding as an index map from padded positions to input positions.

One map serves both directions: the forward pass gathers the padded input
through it, and the backward pass folds the gradient of the padded input back
onto the input through the same map (a scatter-add, since reflect, replicate
and circular padding read some input positions more than once).
"""

import numpy as np

from numconv._config import kernel_guard
from numconv._kernels.common import crop_rows, fold_rows


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


class ZeroPadded:
    """An input with its zero padding left implicit: no padded copy is made.

    Kernels that treat borders themselves read ``x`` where it lies (see
    ``numconv._polyphase``); any other consumer calls ``materialise``.

    Attributes
    ----------
    x : (N, C_in, L) C-contiguous, aligned, writeable array of the spec's dtype
        (it may be the caller's array: kernels only read it).
    pad_left, pad_right : int, zeros before and after each row.
    """

    __slots__ = ("x", "pad_left", "pad_right")

    def __init__(self, x, pad_left, pad_right):
        self.x = x
        self.pad_left = pad_left
        self.pad_right = pad_right

    @property
    def shape(self):
        N, C, L = self.x.shape
        return (N, C, self.pad_left + L + self.pad_right)

    @property
    def dtype(self):
        return self.x.dtype

    def materialise(self):
        """The padded input (N, C_in, L_padded) as a new C-contiguous array."""
        N, C, L = self.x.shape
        xp = np.empty(self.shape, dtype=self.x.dtype)
        xp[:, :, : self.pad_left] = 0
        xp[:, :, self.pad_left : self.pad_left + L] = self.x
        xp[:, :, self.pad_left + L :] = 0
        return xp

    def __array__(self, dtype=None, copy=None):
        xp = self.materialise()
        return xp if dtype is None else xp.astype(dtype, copy=False)


def pad_input(x, spec):
    """The padded input: a ``ZeroPadded`` for zero padding, else an array.

    x : (N, C_in, L) array. The array result is (N, C_in, L_padded),
    C-contiguous, of ``spec.dtype``, and never aliases x.
    """
    N, C, L = x.shape
    if spec.padding_mode == "zeros" or (spec.pad_left == 0 and spec.pad_right == 0):
        x = np.require(x, dtype=spec.dtype, requirements=["C", "A", "W"])
        return ZeroPadded(x, spec.pad_left, spec.pad_right)
    idx = padding_index(L, spec.pad_left, spec.pad_right, spec.padding_mode)
    return np.ascontiguousarray(x[:, :, idx], dtype=spec.dtype)


def fold_padding(grad_padded, spec):
    """Gradient w.r.t. the input from the gradient w.r.t. the padded input.

    grad_padded : (N, C_in, L_padded) C-contiguous array; returns (N, C_in, L).
    """
    N, C, _ = grad_padded.shape
    if spec.padding_mode == "zeros" or (spec.pad_left == 0 and spec.pad_right == 0):
        # A parallel copy: NumPy's single-threaded one, into fresh pages, took
        # several times as long as the input gradient kernel on mamba_dw.
        out = np.empty((N, C, spec.L), dtype=grad_padded.dtype)
        with kernel_guard():
            crop_rows(
                grad_padded.reshape(N * C, spec.L_padded),
                spec.pad_left,
                out.reshape(N * C, spec.L),
            )
        return out
    idx = padding_index(spec.L, spec.pad_left, spec.pad_right, spec.padding_mode)
    out = np.zeros((N, C, spec.L), dtype=grad_padded.dtype)
    with kernel_guard():
        fold_rows(
            grad_padded.reshape(N * C, spec.L_padded), idx, out.reshape(N * C, spec.L)
        )
    return out
