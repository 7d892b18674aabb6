"""One tolerance table for every numerical comparison in the tests.

A computed quantity is compared with its exact value up to
``TOL[dtype] * scale``, where ``scale`` is the sum of the absolute values of the
terms that make it up (for a convolution, the same convolution of |x| and |w|).
Rounding error of a sum is bounded by (number of terms) * eps * scale; the
tests' sums have at most a few hundred terms, and the table leaves room for
that, not for wrong answers.
"""

import numpy as np

TOL = {np.dtype(np.float32): 3e-5, np.dtype(np.float64): 1e-13}


def tol(dtype):
    return TOL[np.dtype(dtype)]


def assert_close(actual, expected, scale, dtype, what=""):
    """|actual - expected| <= TOL[dtype] * scale, elementwise (scale broadcasts)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    bound = tol(dtype) * np.asarray(scale, dtype=np.float64) + 1e-300
    err = np.abs(actual - expected)
    worst = np.max(err / bound) if err.size else 0.0
    assert worst <= 1.0, f"{what}: error {np.max(err):.3g} exceeds tolerance (x{worst:.3g})"


def inner(a, b):
    """<a, b> in float64."""
    return float(np.vdot(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()))
