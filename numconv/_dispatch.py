"""Choice of algorithm for each ConvSpec, in one place.

An algorithm family provides three kernels with one calling convention:

- ``forward(xp, weight, bias, groups, stride, dilation, out)``
- ``grad_input(grad_output, weight, groups, stride, dilation, out)``
- ``grad_weight(xp, grad_output, groups, stride, dilation, out)``

with the shapes documented in ``numconv._kernels.direct``, and a predicate
``supports(spec, op)`` saying which specs it can run. ``choose`` picks the
family for a spec and an operation; ``force`` overrides the choice, so tests can
run every family on every spec it supports.

Every entry point below takes C-contiguous, writeable, aligned arrays of
``spec.dtype`` (the padded input may instead be a ``numconv._padding.ZeroPadded``)
and allocates its own result. ``numconv._polyphase`` runs the chosen family:
it rewrites stride > 1 as stride 1 for families with ``POLYPHASE = True``, and
hands zero-padded input unpadded to families that provide the optional
stride-1 kernels ``forward_shifted`` and ``grad_weight_shifted``.
"""

import contextlib
import threading

import numpy as np

from numconv import _polyphase
from numconv._config import kernel_guard
from numconv._kernels import common, direct, gemm
from numconv._padding import fold_padding

FAMILIES = {"direct": direct, "gemm": gemm}

_forced = threading.local()


@contextlib.contextmanager
def force(name):
    """Use the family ``name`` for every operation in this thread while active."""
    if name not in FAMILIES:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(FAMILIES)}")
    previous = getattr(_forced, "name", None)
    _forced.name = name
    try:
        yield
    finally:
        _forced.name = previous


# Channels per group (both C_in/groups and C_out/groups) from which the
# BLAS-backed family is chosen. Measured float32, 2 threads, N=16, L=2048, K=5,
# CPU time of direct / gemm (above 1: gemm faster), forward / grad_input /
# grad_weight, per (C_in/g, C_out/g, groups):
#   (64, 64, 1) 1.5 / 1.7 / 1.8    (32, 32, 1) 1.5 / 1.6 / 1.6
#   (16, 16, 8) 1.6 / 1.4 / 1.7    (16, 16, 1) 1.5 / 1.5 / 1.9
#   (8, 8, 8)   1.4 / 1.3 / 2.1    (8, 64, 1)  1.3 / 1.8 / 1.9
#   (4, 64, 1)  0.7 / 1.5 / 1.4    (2, 64, 1)  0.4 / 1.7 / 1.4
#   (1, 1, 64)  0.6 / 0.4 / 0.9    (5, 512, 1) 0.5 / 0.8 / 0.6
# With 8 or more channels on both sides every operation ran faster through
# BLAS; below that the direct kernels win at least one operation, and the
# per-operation results do not follow one simple rule, so they keep all three.
GEMM_MIN_CHANNELS = 8


def choose(spec, op):
    """Name of the family that runs ``op`` ("forward", "grad_input", "grad_weight")."""
    forced = getattr(_forced, "name", None)
    if forced is not None:
        if not FAMILIES[forced].supports(spec, op):
            raise NotImplementedError(f"algorithm {forced!r} cannot run {op} for {spec}")
        return forced
    channels = min(spec.C_in_per_group, spec.C_out_per_group)
    if channels >= GEMM_MIN_CHANNELS and gemm.supports(spec, op):
        return "gemm"
    return "direct"


def forward(xp, weight, bias, spec):
    """Forward pass on the padded input xp (N, C_in, L_padded) -> (N, C_out, L_out)."""
    out = np.empty((spec.N, spec.C_out, spec.L_out), dtype=spec.dtype)
    family = FAMILIES[choose(spec, "forward")]
    with kernel_guard():
        _polyphase.run_forward(family, xp, weight, bias, spec, out)
    return out


def grad_padded_input(grad_output, weight, spec):
    """Gradient w.r.t. the padded input: (N, C_out, L_out) -> (N, C_in, L_padded)."""
    out = np.empty((grad_output.shape[0], spec.C_in, spec.L_padded), dtype=spec.dtype)
    family = FAMILIES[choose(spec, "grad_input")]
    with kernel_guard():
        _polyphase.run_grad_input(family, grad_output, weight, spec, out)
    return out


def grad_input(grad_output, weight, spec):
    """Gradient w.r.t. the input: (N, C_out, L_out) -> (N, C_in, L), padding folded.

    Same result as ``fold_padding(grad_padded_input(...))``, without the padded
    intermediate when the family can write the cropped gradient itself.
    """
    family = FAMILIES[choose(spec, "grad_input")]
    if not _polyphase.crops_directly(family, spec):
        return fold_padding(grad_padded_input(grad_output, weight, spec), spec)
    out = np.empty((grad_output.shape[0], spec.C_in, spec.L), dtype=spec.dtype)
    with kernel_guard():
        _polyphase.run_grad_input_cropped(family, grad_output, weight, spec, out)
    return out


def grad_weight(xp, grad_output, spec):
    """Weight gradient (C_out, C_in/groups, K) from xp and grad_output."""
    out = np.empty((spec.C_out, spec.C_in_per_group, spec.K), dtype=spec.dtype)
    family = FAMILIES[choose(spec, "grad_weight")]
    with kernel_guard():
        _polyphase.run_grad_weight(family, xp, grad_output, spec, out)
    return out


def grad_bias(grad_output, dtype):
    """Bias gradient (C_out,) from grad_output (N, C_out, L_out)."""
    out = np.empty(grad_output.shape[1], dtype=dtype)
    with kernel_guard():
        common.grad_bias(grad_output, out)
    return out
