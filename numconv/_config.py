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
path lets Numba's TBB layer find it (also when the user names the layer).

The layer is started at import, which fixes it for the process. The choice is
skipped when the user set ``NUMBA_THREADING_LAYER`` themselves. If TBB cannot
be loaded, numconv uses ``workqueue`` and serialises every kernel launch
through ``KERNEL_LOCK``: concurrent callers then wait for one another but
cannot crash the process, and forked children still work. The lock is also
taken whenever the user's own choice turns out to be ``workqueue``.
"""

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
    """Select and start Numba's threading layer; return what was chosen."""
    # Load TBB even when the user named a layer, so NUMBA_THREADING_LAYER=tbb works.
    tbb = _tbb_layer_works() or (_load_tbb() and _tbb_layer_works())
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return "user"

    # Without TBB, workqueue with every launch serialised (see kernel_guard) is
    # both thread-safe and fork-safe. GNU OpenMP would let concurrent callers run
    # at once, but a child forked after any kernel ran aborts on its first call.
    for layer in ("tbb", "workqueue") if tbb else ("workqueue",):
        numba.config.THREADING_LAYER = layer
        try:
            # Starting the thread pool now fixes the layer for the process. Left
            # until the first compile, the choice would be lost whenever a NUMBA_
            # environment variable changed in between, as Numba then re-reads its
            # whole configuration from the environment.
            numba.get_num_threads()
        except ValueError:
            continue
        return layer
    return "default"


LAYER_CHOICE = _choose_threading_layer()

# Serialises kernel launches only when the active layer turns out not to be
# thread-safe; see ``kernel_guard``.
KERNEL_LOCK = threading.Lock()

# Kernels running now, and whether a fork is waiting for them to finish. A
# process forked while another thread runs a parallel kernel gets a copy of the
# thread pool in mid-flight: TBB then cannot shut its workers down before the
# fork (it says "Unable to join threads") and the child hangs in its first
# parallel call. So ``os.fork`` first waits for running kernels to end and holds
# new launches back until the child exists. ``_state`` guards both variables; a
# plain lock, so that a launch takes it at C speed, with a condition on the same
# lock for the rare waits.
_state = threading.Lock()
_launches = threading.Condition(_state)
_running = 0
_forking = False


def _before_fork():
    global _forking
    with _state:
        _forking = True
        _launches.wait_for(lambda: _running == 0)


def _after_fork_in_parent():
    global _forking
    with _state:
        _forking = False
        _launches.notify_all()


def _after_fork_in_child():
    # Fresh locks: one held by another thread at the fork would stay held for
    # good, since that thread does not exist in the child.
    global KERNEL_LOCK, _state, _launches, _running, _forking
    KERNEL_LOCK = threading.Lock()
    _state = threading.Lock()
    _launches = threading.Condition(_state)
    _running = 0
    _forking = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


# Whether launches must be serialised, once the loaded layer is known (it is
# fixed for the life of the process, and inherited by forked children).
_serialise = None


def needs_serialising():
    """True when the loaded threading layer cannot take concurrent launches."""
    global _serialise
    if _serialise is None:
        try:
            layer = numba.threading_layer()
        except ValueError:
            # No parallel kernel has run yet, so the layer is not known.
            return LAYER_CHOICE in ("default", "user")
        _serialise = layer == "workqueue"
    return _serialise


class kernel_guard:
    """Wrap every kernel launch: waits out a fork, and holds ``KERNEL_LOCK``
    when the layer cannot take concurrent launches.

    A small class rather than a generator-based context manager, and explicit
    acquire and release rather than ``with``: it runs several times per call,
    and small calls are dominated by such overheads.
    """

    __slots__ = ("_lock",)

    def __enter__(self):
        global _running
        _state.acquire()
        try:
            if _forking:
                _launches.wait_for(lambda: not _forking)
            _running += 1
        finally:
            _state.release()
        serialise = _serialise
        if serialise is None:
            serialise = needs_serialising()
        if serialise:
            self._lock = lock = KERNEL_LOCK
            lock.acquire()
        else:
            self._lock = None
        return self

    def __exit__(self, *exc):
        global _running
        if self._lock is not None:
            self._lock.release()
        _state.acquire()
        try:
            _running -= 1
            if _forking:
                _launches.notify_all()
        finally:
            _state.release()
        return False
