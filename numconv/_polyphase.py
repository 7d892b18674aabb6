"""Running a family's kernels for a spec: polyphase rewrite and implicit padding.

Polyphase
---------
A stride-s convolution reads padded positions ``t*s + k*d``. Split the padded
input into s phases, ``xph[n, ci*s + r, j] = xp[n, ci, j*s + r]``; with d = 1
and tap k = q*s + r the output is

    y[n, co, t] = sum_{ci, r, q} weight[co, ci, q*s + r] * xph[n, ci*s + r, t + q]

a stride-1 convolution over s * C_in phase channels with K / s taps. Groups
survive: the phases of a group's channels stay together. Its input gradient
is interleaved back into the padded positions and its weight gradient is the
original weight gradient with the taps re-ordered.

The rewrite is used only when every (phase, shift) pair is a real tap, that
is d = 1 and K divisible by s (wav2vec's first layer: K = 10, s = 5). In any
other case the phase weight would hold structural zeros, and a zero tap
multiplied by a NaN or Inf input outside an output's receptive field would
turn that output into NaN, against IEEE semantics; those specs run the
family's strided kernels instead.

The weight gradient is the exception: it can take any K >= s at d = 1. Its
taps are padded with zeros to ``ceil(K / s) * s``; the padded taps' sums,
the only ones that multiply inputs outside the receptive field, are computed
on the phase input (zeros past the input's end) and dropped, and every real
tap reads exactly the inputs it reads at stride s. Wasted work: the padded
taps, fewer than s (and than K).

The input gradient has a form without padded taps for any K at d = 1:
padded position ``j*s + r`` takes the taps k = q*s + r, so phase r of the
input gradient is the stride-1 input gradient of the sub-kernel
``weight[:, :, r::s]`` (ceil((K - r) / s) taps), one call per phase, whose
results are interleaved into the padded positions. It runs where the phase
form does not apply and, for families that say so, for groups of many input
channels.

A family opts in with a module attribute ``POLYPHASE``, the tuple of
operations ("forward", "grad_input", "grad_weight") it runs in the phase form,
with ``PADDED_TAPS``, those of them it also runs with padded taps, and with
``PHASEWISE``, the operations it runs one phase at a time where the phase
form does not apply (and, with ``PHASEWISE_MIN_CHANNELS``, from that many
input channels per group on); its kernels then see stride 1 for every spec
a rewrite applies to.

Joined batch
------------
At stride 1, a batch of short rows runs as one long row: sample n's padded
row occupies positions [n*Lp, (n+1)*Lp) of each channel (Lp = L_padded), the
forward pass over that row puts sample n's outputs at n*Lp + t, and the
(K - 1) * d outputs between samples, which read two samples, are dropped.
Every kept output reads exactly its own padded row, so the sums are the same,
in the same order. Products on rows of about a hundred positions lose part of
the register tile's width and its border handling to their ends; the two
copies cost less than that where the product is deep (see
``numconv._dispatch``).

Implicit zero padding
---------------------
``numconv._padding.pad_input`` returns a ``ZeroPadded`` for zero padding: the
input plus the padding widths, no copy. A family that treats borders itself
provides ``forward_shifted`` and ``grad_weight_shifted`` (stride 1, see
``numconv._kernels.direct``) and reads the input where it lies; other families
get the padded copy. Likewise a family with ``grad_input_shifted`` writes the
input gradient of a zero-padded spec without the padded positions, so no
cropping copy follows.
"""

import dataclasses
import math

import numpy as np
from numba import njit, prange

from numconv import _memory
from numconv._config import JIT_OPTIONS
from numconv._padding import ZeroPadded


def rewrites(spec, padded_taps=False):
    """True when ``spec`` has a polyphase form without structural zeros, or,
    with ``padded_taps``, one whose padded taps are dropped (K >= s, so that
    the phase input stays the size of the padded input)."""
    if spec.stride == 1 or spec.dilation != 1:
        return False
    if padded_taps:
        return spec.K >= spec.stride
    return spec.K % spec.stride == 0


def applies(spec, family, op):
    """True when ``family`` should run ``op`` of ``spec`` in the polyphase form."""
    if spec.stride == 1 or op not in getattr(family, "POLYPHASE", ()):
        return False
    return rewrites(spec, op in getattr(family, "PADDED_TAPS", ()))


def runs_phasewise(spec, family, op):
    """True when ``family`` runs ``op`` of ``spec`` one phase at a time: where
    the phase form does not apply, or where groups have at least the family's
    ``PHASEWISE_MIN_CHANNELS`` input channels."""
    if op not in getattr(family, "PHASEWISE", ()):
        return False
    if spec.stride == 1 or spec.dilation != 1:
        return False
    wide = spec.C_in_per_group >= getattr(family, "PHASEWISE_MIN_CHANNELS", math.inf)
    return wide or not applies(spec, family, op)


def phase_taps(spec):
    """Taps per phase: ceil(K / s)."""
    return -(-spec.K // spec.stride)


def phase_spec(spec):
    """The stride-1 spec of the phase form: s*C_in channels, ceil(K/s) taps, no
    padding."""
    K_phase = phase_taps(spec)
    s = spec.stride
    return dataclasses.replace(
        spec,
        C_in=spec.C_in * s,
        K=K_phase,
        L=spec.L_out + K_phase - 1,
        stride=1,
        pad_left=0,
        pad_right=0,
        padding_mode="zeros",
    )


@njit(**JIT_OPTIONS)
def _split(x, shift, stride, out):
    """out[n, ci*s + r, j] = xz[n, ci, j*s + r - shift] (0 outside x).

    x : (N, C_in, L); out : (N, C_in*s, L_phase), fully overwritten.
    """
    N, C_in, L = x.shape
    L_phase = out.shape[2]
    for row in prange(N * C_in):
        n = row // C_in
        ci = row - n * C_in
        xrow = x[n, ci]
        for r in range(stride):
            orow = out[n, ci * stride + r]
            for j in range(L_phase):
                p = j * stride + r - shift
                orow[j] = xrow[p] if 0 <= p < L else 0


@njit(**JIT_OPTIONS)
def _interleave(gph, stride, out):
    """out[n, ci, j*s + r] = gph[n, ci*s + r, j]; positions past the phases get 0.

    gph : (N, C_in*s, L_phase); out : (N, C_in, L_padded), fully overwritten.
    """
    N, C_in, L_padded = out.shape
    L_phase = gph.shape[2]
    for row in prange(N * C_in):
        n = row // C_in
        ci = row - n * C_in
        orow = out[n, ci]
        for p in range(L_padded):
            j = p // stride
            orow[p] = gph[n, ci * stride + p - j * stride, j] if j < L_phase else 0


@njit(**JIT_OPTIONS)
def _interleave_phases(flat, lengths, stride, out):
    """out[n, c, j*s + r] = phase r's gph[n, c, j]; other positions get 0.

    flat holds phases 0 to P - 1 (P = lengths.size <= s, the phases with
    taps) one after another, phase r as (N, C, lengths[r]) in C order; out :
    (N, C, L_padded), fully overwritten. Positions of phases r >= P, or past
    a phase's length, get 0.
    """
    N, C, L_padded = out.shape
    P = lengths.shape[0]
    offsets = np.zeros(P, dtype=np.int64)
    for r in range(1, P):
        offsets[r] = offsets[r - 1] + N * C * lengths[r - 1]
    for row in prange(N * C):
        n = row // C
        orow = out[n, row - n * C]
        if P < stride:
            for p in range(L_padded):
                orow[p] = 0
        for r in range(P):
            m = lengths[r]
            src = flat[offsets[r] + row * m : offsets[r] + (row + 1) * m]
            for j in range((L_padded - r + stride - 1) // stride):
                orow[j * stride + r] = src[j] if j < m else 0


def _grad_input_by_phase(family, grad_output, weight, spec, out):
    """``run_grad_input`` one phase at a time (see the module docstring).

    At d = 1 only phases r < K have taps: min(s, K) kernel calls, whatever
    the stride.
    """
    s = spec.stride
    N, _, L_out = grad_output.shape
    C_in = out.shape[1]
    P = min(s, spec.K)
    lengths = np.array(
        [L_out + len(range(r, spec.K, s)) - 1 for r in range(P)], dtype=np.int64
    )
    flat = _memory.empty(N * C_in * int(lengths.sum()), dtype=spec.dtype)
    start = 0
    for r in range(P):
        size = N * C_in * int(lengths[r])
        gph = flat[start : start + size].reshape(N, C_in, int(lengths[r]))
        w_r = np.ascontiguousarray(weight[:, :, r::s])
        family.grad_input(grad_output, w_r, spec.groups, 1, 1, gph)
        start += size
    _interleave_phases(flat, lengths, s, out)


@njit(**JIT_OPTIONS)
def _join_rows(x, left, segment, out):
    """out[0, c, n*segment + left + t] = x[n, c, t]; zeros elsewhere.

    x : (N, C, L); out : (1, C, W), fully overwritten (the last segment may be
    cut short by W or followed by zeros).
    """
    N, C, L = x.shape
    W = out.shape[2]
    for row in prange(C * N):
        c = row // N
        n = row - c * N
        start = n * segment
        stop = min(start + segment, W) if n < N - 1 else W
        dst = out[0, c, start:stop]
        for j in range(min(left, stop - start)):
            dst[j] = 0
        for t in range(L):
            dst[left + t] = x[n, c, t]
        for j in range(left + L, stop - start):
            dst[j] = 0


@njit(**JIT_OPTIONS)
def _split_rows(joined, segment, start, out):
    """out[n, c, t] = joined[0, c, n*segment + start + t]; out : (N, C, L)."""
    N, C, L = out.shape
    for row in prange(N * C):
        n = row // C
        c = row - n * C
        src = joined[0, c, n * segment + start : n * segment + start + L]
        dst = out[n, c]
        for t in range(L):
            dst[t] = src[t]


# Joined rows a multiple of this many bytes long get a few more zeros at the
# end: such rows fall into a few of L1's sets (see
# ``numconv._kernels.tiled.GATHER_STRIDE_BYTES``).
JOIN_ALIGNMENT_BYTES = 1024


def _joined_length(length, itemsize):
    if (length * itemsize) % JOIN_ALIGNMENT_BYTES == 0:
        return length + 64 // itemsize
    return length


# Input bytes joined at a time: the batch runs in chunks of samples whose
# joined rows take at most this much (at least two samples), so that the two
# joined buffers stay well under one padded copy of the input and the output.
JOIN_CHUNK_BYTES = 4 << 20


def run_forward_joined(family, xp, weight, bias, spec, out):
    """``run_forward`` on the joined batch (see the module docstring); stride 1."""
    if isinstance(xp, ZeroPadded):
        x, left = xp.x, xp.pad_left
    else:
        x, left = xp, 0
    N, C_in, _ = x.shape
    segment = spec.L_padded
    itemsize = spec.dtype.itemsize
    per_sample = C_in * segment * itemsize
    chunk = min(N, max(2, JOIN_CHUNK_BYTES // per_sample))
    span = (spec.K - 1) * spec.dilation
    widest = _joined_length(chunk * segment, itemsize) + 64 // itemsize
    # Both from the buffer cache: fresh pages would cost a fault each.
    joined_buf = _memory.empty(C_in * widest, dtype=spec.dtype)
    y_buf = _memory.empty(spec.C_out * widest, dtype=spec.dtype)
    for n0 in range(0, N, chunk):
        n1 = min(N, n0 + chunk)
        width = _joined_length((n1 - n0) * segment, itemsize)
        joined = joined_buf[: C_in * width].reshape(1, C_in, width)
        _join_rows(x[n0:n1], left, segment, joined)
        y = y_buf[: spec.C_out * (width - span)].reshape(1, spec.C_out, width - span)
        family.forward(joined, weight, bias, spec.groups, 1, spec.dilation, y)
        _split_rows(y, segment, 0, out[n0:n1])


def split_input(xp, spec):
    """Phase input (N, C_in*s, L_out + ceil(K/s) - 1) of a padded or ZeroPadded
    input."""
    pspec = phase_spec(spec)
    if isinstance(xp, ZeroPadded):
        x, shift = xp.x, xp.pad_left
    else:
        x, shift = xp, 0
    out = np.empty((x.shape[0], pspec.C_in, pspec.L), dtype=spec.dtype)
    _split(x, shift, spec.stride, out)
    return out


def phase_weight(weight, stride):
    """(C_out, C_in_g, K) -> (C_out, C_in_g*s, K/s): tap q*s + r to phase r, shift q."""
    C_out, C_in_g, K = weight.shape
    w = weight.reshape(C_out, C_in_g, K // stride, stride).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(w.reshape(C_out, C_in_g * stride, K // stride))


def weight_from_phases(gw_phase, stride, K):
    """Inverse of ``phase_weight``: (C_out, C_in_g*s, ceil(K/s)) -> (C_out,
    C_in_g, K), the padded taps dropped."""
    C_out, rows, K_phase = gw_phase.shape
    w = gw_phase.reshape(C_out, rows // stride, stride, K_phase).transpose(0, 1, 3, 2)
    return w.reshape(C_out, rows // stride, K_phase * stride)[:, :, :K]


def run_forward(family, xp, weight, bias, spec, out):
    """Fill out (N, C_out, L_out) with the forward pass, in the family's best form."""
    if applies(spec, family, "forward"):
        xph = split_input(xp, spec)
        wph = phase_weight(weight, spec.stride)
        family.forward(xph, wph, bias, spec.groups, 1, 1, out)
    elif isinstance(xp, ZeroPadded) and spec.stride == 1 and hasattr(
        family, "forward_shifted"
    ):
        family.forward_shifted(
            xp.x, xp.pad_left, weight, bias, spec.groups, spec.dilation, out
        )
    else:
        xp = xp.materialise() if isinstance(xp, ZeroPadded) else xp
        family.forward(xp, weight, bias, spec.groups, spec.stride, spec.dilation, out)


def run_grad_input(family, grad_output, weight, spec, out):
    """Fill out (N, C_in, L_padded) with the gradient w.r.t. the padded input."""
    if runs_phasewise(spec, family, "grad_input"):
        _grad_input_by_phase(family, grad_output, weight, spec, out)
    elif applies(spec, family, "grad_input"):
        pspec = phase_spec(spec)
        gph = np.empty((grad_output.shape[0], pspec.C_in, pspec.L), dtype=spec.dtype)
        wph = phase_weight(weight, spec.stride)
        family.grad_input(grad_output, wph, spec.groups, 1, 1, gph)
        _interleave(gph, spec.stride, out)
    else:
        family.grad_input(
            grad_output, weight, spec.groups, spec.stride, spec.dilation, out
        )


def crops_directly(family, spec):
    """True when ``family`` can write the unpadded input gradient itself."""
    zero_padded = spec.padding_mode == "zeros" or spec.pad_left == spec.pad_right == 0
    return (
        zero_padded
        and spec.stride == 1
        and hasattr(family, "grad_input_shifted")
    )


def run_grad_input_cropped(family, grad_output, weight, spec, out):
    """Fill out (N, C_in, L) with the input gradient; needs ``crops_directly``."""
    family.grad_input_shifted(
        grad_output, weight, spec.groups, spec.dilation, spec.pad_left, out
    )


def fuses_backward(family, spec):
    """True when ``family`` computes both gradients of ``spec`` in its phase
    form from one pass over grad_output (``run_backward``)."""
    return (
        applies(spec, family, "grad_input")
        and not runs_phasewise(spec, family, "grad_input")
        and applies(spec, family, "grad_weight")
        and hasattr(family, "backward_shifted")
        and family.fuses_backward(phase_spec(spec))
    )


def run_backward(family, xp, grad_output, weight, spec, gx, gw, bias_out):
    """Fill gx (N, C_in, L_padded) with the gradient w.r.t. the padded input,
    gw (C_out, C_in/groups, K) with the weight gradient and bias_out (C_out,)
    with the bias gradient (None for none); needs ``fuses_backward``. The
    results are bitwise those of ``run_grad_input`` and ``run_grad_weight``.
    """
    pspec = phase_spec(spec)
    xph = split_input(xp, spec)
    wph = phase_weight(weight, spec.stride)
    gph = np.empty((grad_output.shape[0], pspec.C_in, pspec.L), dtype=spec.dtype)
    gw_phase = np.empty(pspec.weight_shape, dtype=spec.dtype)
    family.backward_shifted(xph, 0, grad_output, wph, 1, gw_phase, bias_out, gph)
    _interleave(gph, spec.stride, gx)
    gw[...] = weight_from_phases(gw_phase, spec.stride, spec.K)


def run_grad_weight(family, xp, grad_output, spec, out, bias_out=None):
    """Fill out (C_out, C_in/groups, K) with the weight gradient.

    Given ``bias_out`` (C_out,), also fills it with the bias gradient when the
    family has the optional stride-1 kernel ``grad_weight_bias_shifted`` for
    this spec or its phases (which takes the sums from its weight pass where it
    can, else from a pass of its own); returns whether it filled bias_out.
    """
    if applies(spec, family, "grad_weight"):
        pspec = phase_spec(spec)
        xph = split_input(xp, spec)
        gw_phase = np.empty(pspec.weight_shape, dtype=spec.dtype)
        fused = bias_out is not None and hasattr(family, "grad_weight_bias_shifted")
        if fused:
            family.grad_weight_bias_shifted(xph, 0, grad_output, spec.groups, 1,
                                            gw_phase, bias_out)
        else:
            family.grad_weight(xph, grad_output, spec.groups, 1, 1, gw_phase)
        out[...] = weight_from_phases(gw_phase, spec.stride, spec.K)
        return fused
    elif isinstance(xp, ZeroPadded) and spec.stride == 1 and hasattr(
        family, "grad_weight_shifted"
    ):
        if bias_out is not None and hasattr(family, "grad_weight_bias_shifted"):
            family.grad_weight_bias_shifted(
                xp.x, xp.pad_left, grad_output, spec.groups, spec.dilation, out,
                bias_out,
            )
            return True
        family.grad_weight_shifted(
            xp.x, xp.pad_left, grad_output, spec.groups, spec.dilation, out
        )
    else:
        xp = xp.materialise() if isinstance(xp, ZeroPadded) else xp
        family.grad_weight(
            xp, grad_output, spec.groups, spec.stride, spec.dilation, out
        )
    return False
