"""Shared pieces of the robustness tests: a spread of settings and one call of each.

``SETTINGS`` covers what changes the code path: stride, dilation, groups
(depthwise included), every padding mode and padding form, both dtypes,
unbatched input, long and short signals. ``run_ops`` calls every public
function once for a setting and returns the results by name, so tests can
compare them bitwise between runs, threads and processes.
"""

import contextlib
import hashlib

import numpy as np

import numconv
from numconv import _dispatch

FAMILIES = sorted(_dispatch.FAMILIES)

# name: (N, C_in, C_out, L, K, kwargs, dtype, batched)
SETTINGS = {
    "plain32": (4, 3, 5, 200, 5, dict(padding=2), np.float32, True),
    "plain64": (4, 3, 5, 200, 5, dict(padding=2), np.float64, True),
    "strided": (3, 4, 6, 301, 7, dict(stride=3, padding=(1, 4)), np.float32, True),
    "dilated": (2, 2, 4, 257, 3, dict(dilation=4, padding="same"), np.float32, True),
    "grouped": (2, 6, 9, 150, 4, dict(groups=3, padding="causal"), np.float32, True),
    "depthwise": (3, 8, 8, 513, 9, dict(groups=8, padding=4), np.float32, True),
    "reflect": (
        2,
        3,
        2,
        90,
        5,
        dict(padding=4, padding_mode="reflect"),
        np.float32,
        True,
    ),
    "replicate": (
        2,
        2,
        3,
        64,
        6,
        dict(padding=(5, 1), padding_mode="replicate", stride=2),
        np.float64,
        True,
    ),
    "circular": (
        2,
        3,
        3,
        70,
        3,
        dict(padding=2, padding_mode="circular"),
        np.float32,
        True,
    ),
    "unbatched": (1, 3, 4, 128, 5, dict(padding="same", dilation=2), np.float32, False),
    "long": (1, 1, 2, 20_000, 31, dict(padding=15), np.float32, True),
    "wide": (8, 32, 32, 256, 3, dict(padding=1), np.float32, True),
}


def make_arrays(setting, seed=0):
    """x, weight, bias and a grad_output for one setting, from a fixed seed."""
    N, C_in, C_out, L, K, kwargs, dtype, batched = setting
    rng = np.random.default_rng(seed)
    groups = kwargs.get("groups", 1)
    x = rng.standard_normal((N, C_in, L)).astype(dtype)
    w = rng.standard_normal((C_out, C_in // groups, K)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype)
    y = numconv.conv1d(x, w, **kwargs)
    g = rng.standard_normal(y.shape).astype(dtype)
    if not batched:
        x, g = x[0], g[0]
    return x, w, b, g


@contextlib.contextmanager
def maybe_forced(family):
    """Force ``family`` (None: let the dispatcher choose)."""
    if family is None:
        yield
    else:
        with _dispatch.force(family):
            yield


def run_ops(setting, arrays, family=None):
    """Every public function once; {name: result}. Skips what ``family`` cannot run.

    A forced family signals an operation it does not support with
    NotImplementedError; that operation is left out of the result.
    """
    _, _, _, L, K, kwargs, _, _ = setting
    x, w, b, g = arrays
    ops = {
        "forward": lambda: numconv.conv1d(x, w, b, **kwargs),
        "grad_input": lambda: numconv.conv1d_grad_input(g, w, L, **kwargs),
        "grad_weight": lambda: numconv.conv1d_grad_weight(x, g, K, **kwargs),
        "grad_bias": lambda: numconv.conv1d_grad_bias(g),
    }
    if kwargs.get("padding_mode", "zeros") == "zeros" and isinstance(
        kwargs.get("padding", 0), int
    ):
        # conv_transpose1d of g with the same weight: the input gradient's kernel.
        ct_kwargs = {
            k: kwargs[k] for k in ("stride", "dilation", "groups") if k in kwargs
        }
        ops["transpose"] = lambda: numconv.conv_transpose1d(
            g, w, None, padding=kwargs.get("padding", 0), **ct_kwargs
        )
    ops["backward"] = lambda: numconv.conv1d_backward(x, w, g, **kwargs)
    out = {}
    with maybe_forced(family):
        for name, op in ops.items():
            try:
                result = op()
            except NotImplementedError:
                continue
            if isinstance(result, tuple):
                out.update(
                    {f"{name}.{field}": r for field, r in zip(result._fields, result)}
                )
            else:
                out[name] = result
    return out


def digest(results):
    """A hash of every result's bytes, dtype and shape, to compare across processes."""
    h = hashlib.sha256()
    for name in sorted(results):
        arr = np.ascontiguousarray(results[name])
        h.update(name.encode())
        h.update(str((arr.dtype.str, arr.shape)).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def first_difference(a, b):
    """Describe where two results differ bitwise (None when identical)."""
    if set(a) != set(b):
        return f"different operations: {sorted(a)} vs {sorted(b)}"
    for name in a:
        x, y = a[name], b[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"{name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        if x.tobytes() != y.tobytes():
            as_int = {4: np.int32, 8: np.int64}[x.dtype.itemsize]
            xi = np.ascontiguousarray(x).ravel().view(as_int)
            yi = np.ascontiguousarray(y).ravel().view(as_int)
            diff = np.flatnonzero(xi != yi)
            i = int(diff[0])
            return (
                f"{name}: {diff.size} elements differ, first at flat index {i}: "
                f"{x.ravel()[i]!r} vs {y.ravel()[i]!r}"
            )
    return None
