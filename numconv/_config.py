"""Numba options and the threading layer, defined once for every kernel.

Kernels are compiled with ``JIT_OPTIONS``. The fastmath set allows contraction
into FMA and reassociation (so reductions vectorise) but leaves out ``nnan`` and
``ninf``: NaN and Inf propagate as IEEE 754 says.

Threading layer
---------------
Numba's ``workqueue`` layer aborts the process when two Python threads run
parallel kernels at once, and the GNU OpenMP layer is not safe across ``fork``.
numconv therefore prefers Intel TBB, which is both thread-safe and fork-safe.
The ``tbb`` wheel installs ``libtbb.so.12`` into the environment's ``lib/``
folder, which the dynamic loader does not search; loading it here by its full
path lets Numba's TBB layer find it. The choice is skipped when the user set
``NUMBA_THREADING_LAYER`` themselves. If TBB cannot be loaded, Numba is asked
for any thread-safe layer (OpenMP), and if none exists every kernel call is
serialised through ``KERNEL_LOCK`` so that concurrent callers still cannot
crash the process.
"""

import contextlib
import ctypes
import glob
import os
import sys
import threading

import numba

FASTMATH = frozenset({"contract", "reassoc", "nsz", "arcp"})

JIT_OPTIONS = dict(parallel=True, cache=True, fastmath=set(FASTMATH), nogil=True)
SERIAL_JIT_OPTIONS = dict(cache=True, fastmath=set(FASTMATH), nogil=True)


def _load_tbb():
    """Load the TBB runtime by path so Numba's TBB layer can import; True on success."""
    prefixes = [sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(sys.executable))]
    for prefix in prefixes:
        for path in sorted(glob.glob(os.path.join(prefix, "lib", "libtbb.so.12*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return True
    return False


def _tbb_layer_works():
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def _choose_threading_layer():
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return "user"
    if _tbb_layer_works() or (_load_tbb() and _tbb_layer_works()):
        numba.config.THREADING_LAYER = "tbb"
        return "tbb"
    try:
        from numba.np.ufunc import omppool  # noqa: F401
    except ImportError:
        return "default"
    numba.config.THREADING_LAYER = "threadsafe"
    return "threadsafe"


LAYER_CHOICE = _choose_threading_layer()

# Serialises kernel launches only when the active layer turns out not to be
# thread-safe; see ``kernel_guard``.
KERNEL_LOCK = threading.Lock()


_active_layer = []


def needs_serialising():
    """True when the loaded threading layer cannot take concurrent launches."""
    if not _active_layer:
        try:
            _active_layer.append(numba.threading_layer())
        except ValueError:
            # No parallel kernel has run yet, so the layer is not known.
            return LAYER_CHOICE in ("default", "user")
    return _active_layer[0] == "workqueue"


@contextlib.contextmanager
def kernel_guard():
    """Hold ``KERNEL_LOCK`` around a kernel launch when the layer needs it."""
    if needs_serialising():
        with KERNEL_LOCK:
            yield
    else:
        yield
