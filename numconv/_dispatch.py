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
``spec.dtype`` and allocates its own result.
"""

import contextlib
import threading

import numpy as np

from numconv._config import kernel_guard
from numconv._kernels import common, direct, gemm

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


def choose(spec, op):
    """Name of the family that runs ``op`` ("forward", "grad_input", "grad_weight")."""
    forced = getattr(_forced, "name", None)
    if forced is not None:
        if not FAMILIES[forced].supports(spec, op):
            raise NotImplementedError(f"algorithm {forced!r} cannot run {op} for {spec}")
        return forced
    return "direct"


def forward(xp, weight, bias, spec):
    """Forward pass on the padded input xp (N, C_in, L_padded) -> (N, C_out, L_out)."""
    out = np.empty((spec.N, spec.C_out, spec.L_out), dtype=spec.dtype)
    kernel = FAMILIES[choose(spec, "forward")].forward
    with kernel_guard():
        kernel(xp, weight, bias, spec.groups, spec.stride, spec.dilation, out)
    return out


def grad_padded_input(grad_output, weight, spec):
    """Gradient w.r.t. the padded input: (N, C_out, L_out) -> (N, C_in, L_padded)."""
    out = np.empty((grad_output.shape[0], spec.C_in, spec.L_padded), dtype=spec.dtype)
    kernel = FAMILIES[choose(spec, "grad_input")].grad_input
    with kernel_guard():
        kernel(grad_output, weight, spec.groups, spec.stride, spec.dilation, out)
    return out


def grad_weight(xp, grad_output, spec):
    """Weight gradient (C_out, C_in/groups, K) from xp and grad_output."""
    out = np.empty((spec.C_out, spec.C_in_per_group, spec.K), dtype=spec.dtype)
    kernel = FAMILIES[choose(spec, "grad_weight")].grad_weight
    with kernel_guard():
        kernel(xp, grad_output, spec.groups, spec.stride, spec.dilation, out)
    return out


def grad_bias(grad_output, dtype):
    """Bias gradient (C_out,) from grad_output (N, C_out, L_out)."""
    out = np.empty(grad_output.shape[1], dtype=dtype)
    with kernel_guard():
        common.grad_bias(grad_output, out)
    return out
