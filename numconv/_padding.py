"""Padding as an index map from padded positions to input positions.

One map serves both directions: the forward pass gathers the padded input
through it, and the backward pass folds the gradient of the padded input back
onto the input through the same map (a scatter-add, since reflect, replicate
and circular padding read some input positions more than once).
"""

import numpy as np
from numba import njit

from numconv import _memory
from numconv._config import SERIAL_JIT_OPTIONS, kernel_guard
from numconv._kernels.common import crop_rows, fold_rows
from numconv._spec import kernel_array


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
    if spec.padding_mode == "zeros" or (spec.pad_left == 0 and spec.pad_right == 0):
        return ZeroPadded(kernel_array(x, spec.dtype), spec.pad_left, spec.pad_right)
    idx = padding_index(x.shape[2], spec.pad_left, spec.pad_right, spec.padding_mode)
    return np.ascontiguousarray(x[:, :, idx], dtype=spec.dtype)


def fold_padding(grad_padded, spec):
    """Gradient w.r.t. the input from the gradient w.r.t. the padded input.

    grad_padded : (N, C_in, L_padded) C-contiguous array, freshly allocated by the
    caller; returns (N, C_in, L), which is ``grad_padded`` itself when there is no
    padding to remove.
    """
    N, C, _ = grad_padded.shape
    if spec.pad_left == 0 and spec.pad_right == 0:
        return grad_padded
    if spec.padding_mode == "zeros" or (spec.pad_left == 0 and spec.pad_right == 0):
        # A parallel copy: NumPy's single-threaded one, into fresh pages, took
        # several times as long as the input gradient kernel on mamba_dw.
        out = _memory.empty((N, C, spec.L), dtype=grad_padded.dtype)
        with kernel_guard():
            crop_rows(
                grad_padded.reshape(N * C, spec.L_padded),
                spec.pad_left,
                out.reshape(N * C, spec.L),
            )
        return out
    idx = padding_index(spec.L, spec.pad_left, spec.pad_right, spec.padding_mode)
    out = _memory.zeros((N, C, spec.L), dtype=grad_padded.dtype)
    with kernel_guard():
        fold_rows(
            grad_padded.reshape(N * C, spec.L_padded), idx, out.reshape(N * C, spec.L)
        )
    return out


# Zero padding stands for "no input here", not for a value: a product of a
# padded position with an Inf or NaN weight (forward) or gradient (weight
# gradient) is left out of the sum instead of becoming Inf * 0 = NaN. The
# kernels multiply the padded zeros like any other value, which is right for
# every finite operand; the two helpers below redo, with the padded terms left
# out, the few sums where a non-finite operand meets the padding. They run only
# then, so they cost nothing on finite data.


def tap_ranges(spec):
    """For each tap k, the output positions [t0, t1) that read input, not padding."""
    ranges = []
    for k in range(spec.K):
        offset = k * spec.dilation - spec.pad_left
        t0 = max(0, -(offset // spec.stride))
        t1 = min(spec.L_out, (spec.L - 1 - offset) // spec.stride + 1)
        ranges.append((t0, max(t0, t1)))
    return ranges


@njit(**SERIAL_JIT_OPTIONS)
def finite_outside(a, lo, hi):
    """True when a[i, j, t] is finite for every t < lo and every t >= hi.

    a : any 3D array. With lo = hi = a.shape[2] every element is checked. One
    compiled loop costs far less than NumPy's isfinite and all on small arrays.
    """
    I, J, T = a.shape
    for i in range(I):
        for j in range(J):
            for t in range(min(lo, T)):
                if not np.isfinite(a[i, j, t]):
                    return False
            for t in range(hi, T):
                if not np.isfinite(a[i, j, t]):
                    return False
    return True


def _reads_padding(spec):
    return spec.padding_mode == "zeros" and (spec.pad_left or spec.pad_right)


def forward_without_padding_terms(x, weight, bias, spec, out):
    """Recompute ``out``'s positions that read padding when ``weight`` is not finite.

    x : (N, C_in, L) array of any numeric dtype and layout; weight :
    (C_out, C_in/groups, K); bias : (C_out,); out : (N, C_out, L_out), updated in
    place. weight, bias and out are C-contiguous arrays of ``spec.dtype``.
    """
    if not _reads_padding(spec) or finite_outside(weight, spec.K, spec.K):
        return
    x = kernel_array(x, spec.dtype)
    ranges = tap_ranges(spec)
    lo, hi = spec.interior
    border = np.array([t for t in range(spec.L_out) if t < lo or t >= hi], np.int64)
    ci_g, co_g = spec.C_in_per_group, spec.C_out_per_group
    acc = np.empty((spec.N, spec.C_out, border.size), spec.dtype)
    acc[...] = bias[None, :, None]
    for k, (t0, t1) in enumerate(ranges):
        sel = (border >= t0) & (border < t1)
        positions = border[sel] * spec.stride + k * spec.dilation - spec.pad_left
        for q in range(spec.groups):
            cin, cout = slice(q * ci_g, (q + 1) * ci_g), slice(q * co_g, (q + 1) * co_g)
            acc[:, cout, sel] += np.einsum(
                "oc,nct->not", weight[cout, :, k], x[:, cin][:, :, positions]
            )
    out[:, :, border] = acc


def grad_weight_without_padding_terms(x, grad_output, spec, out):
    """Recompute the taps of ``out`` that read padding when ``grad_output`` is not
    finite where they do.

    x : (N, C_in, L) array of any numeric dtype and layout; grad_output :
    (N, C_out, L_out); out : (C_out, C_in/groups, K), updated in place.
    grad_output and out are C-contiguous arrays of ``spec.dtype``.
    """
    if not _reads_padding(spec):
        return
    lo, hi = spec.interior
    if finite_outside(grad_output, lo, hi):
        return
    x = kernel_array(x, spec.dtype)
    ranges = tap_ranges(spec)
    ci_g, co_g = spec.C_in_per_group, spec.C_out_per_group
    for k, (t0, t1) in enumerate(ranges):
        if (t0, t1) == (0, spec.L_out):
            continue
        first = t0 * spec.stride + k * spec.dilation - spec.pad_left
        stop = first + (t1 - t0 - 1) * spec.stride + 1
        for q in range(spec.groups):
            cin, cout = slice(q * ci_g, (q + 1) * ci_g), slice(q * co_g, (q + 1) * co_g)
            if t1 == t0:
                out[cout, :, k] = 0
                continue
            out[cout, :, k] = np.einsum(
                "not,nct->oc",
                grad_output[:, cout, t0:t1],
                x[:, cin, first:stop:spec.stride],
            )
