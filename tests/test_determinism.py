"""Determinism: forward and every gradient bitwise the same, run after run.

For every setting of ``robust_util.SETTINGS`` and every algorithm family (and
the dispatcher's own choice), every public function runs 10 times with 2
threads and 2 more times with 1 thread; all results must be bitwise equal.
The repeated runs read copies of the inputs placed at different offsets in
memory, so a result that depended on the alignment of an array would show.
"""

import numba
import numpy as np
import pytest

from robust_util import FAMILIES, SETTINGS, first_difference, make_arrays, run_ops

REPEATS = 10


def shifted_copy(arr, shift):
    """A copy of ``arr`` that starts ``shift`` elements into a fresh buffer."""
    buf = np.empty(arr.size + shift, arr.dtype)
    out = buf[shift : shift + arr.size].reshape(arr.shape)
    out[...] = arr
    return out


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("family", [None] + FAMILIES)
def test_bitwise_repeatable_across_runs_and_threads(family, name):
    setting = SETTINGS[name]
    arrays = make_arrays(setting, seed=3)
    previous = numba.get_num_threads()
    two = min(2, numba.config.NUMBA_NUM_THREADS)
    try:
        numba.set_num_threads(two)
        first = run_ops(setting, arrays, family)
        runs = 1
        for i in range(1, REPEATS):
            again = run_ops(setting, [shifted_copy(a, i) for a in arrays], family)
            problem = first_difference(first, again)
            assert problem is None, f"run {i} with {two} threads: {problem}"
            runs += 1
        numba.set_num_threads(1)
        for i in range(2):
            again = run_ops(
                setting, [shifted_copy(a, 3 * i + 1) for a in arrays], family
            )
            problem = first_difference(first, again)
            assert problem is None, f"1 thread against {two}: {problem}"
            runs += 1
    finally:
        numba.set_num_threads(previous)

    assert runs == REPEATS + 2
    # grad_bias runs on every path; the rest only where the family can.
    assert "grad_bias" in first
