"""Proof that a ``make test-boundscheck`` run really checks bounds.

Skipped in ordinary runs. Under NUMBA_BOUNDSCHECK=1 it hands a kernel an
output array one element short and expects the out-of-bounds write to be
refused. It would pass silently if the kernels came from a cache compiled
without checks (Numba's cache key does not include NUMBA_BOUNDSCHECK), or if
the write ran on a worker thread (Numba drops an IndexError raised there).
"""

import numba
import numpy as np
import pytest

from numconv._kernels import common

pytestmark = pytest.mark.skipif(
    not numba.config.BOUNDSCHECK, reason="only under NUMBA_BOUNDSCHECK=1"
)


def test_one_thread_so_errors_reach_the_caller():
    assert numba.get_num_threads() == 1


def test_out_of_bounds_write_is_refused():
    grad_output = np.ones((2, 5, 7), np.float32)
    too_short = np.zeros(4, np.float32)  # grad_bias writes one value per channel: 5

    # Numba raises IndexError from the kernel; from a parallel region it reaches
    # Python as a SystemError whose cause is that IndexError.
    with pytest.raises((IndexError, SystemError)) as info:
        common.grad_bias(grad_output, too_short)

    err = info.value
    assert isinstance(err, IndexError) or isinstance(err.__cause__, IndexError), err
