"""A caching allocator for large results.

On the machines numconv is tuned on, the first write to freshly mapped memory
costs a page fault per page: filling a new 52 MB float32 output takes about
8 ms, refilling memory the process already touched about 2 ms. A training loop
allocates the same result sizes every step and frees the previous step's, so
``empty`` hands out released buffers again instead of mapping new ones.

Arrays of at least ``THRESHOLD`` bytes come from anonymous private mappings
whose sizes are rounded up to a multiple of ``SIZE_CLASS``. When the last
reference to such an array goes, its mapping returns to a pool, from which a
later ``empty`` of the same size class takes it before mapping a new one. The
pool holds at most ``max_bytes`` (``set_buffer_cache``; 1 GiB unless the
environment variable ``NUMCONV_BUFFER_CACHE`` says otherwise, read once at
import) and drops the least recently released buffers first, unmapping them.

Liveness
--------
Each array is ``np.ndarray(shape, dtype, buffer=block)``, where ``block`` is a
ctypes char array made for this allocation over the pooled mapping, and the
buffer is released by a ``weakref.finalize`` on ``block``. NumPy keeps
``block`` as the array's ``.base`` for the array's whole life, and when it
makes a view it collapses the base chain only through arrays that do not own
their data and whose own base is an ndarray: the returned array's base is not,
so every view, slice, reshape, transpose, ``arr[None]`` or ``arr[0]`` has the
returned array itself as its base, and ``memoryview(arr)`` and
``np.frombuffer(arr)`` hold the array (or a view of it). Everything that can
reach the memory therefore keeps ``block`` alive, and so does code that keeps
only ``arr.base``. The finalizer's ``atexit`` is off, so buffers of arrays
still alive at interpreter exit are never pooled (an exit handler could
otherwise be handed memory that a live array uses).

The mappings are private (``MAP_PRIVATE``, not Python's default
``MAP_SHARED``): a forked child gets copy-on-write pages, as with any other
memory, so neither process can write into the other's arrays.

Threads and fork
----------------
A finalizer runs in whichever thread drops the last reference, possibly while
that same thread is inside ``empty`` (a garbage collection can start at any
allocation). ``_release`` therefore never waits for the lock: it queues the
buffer and moves the queue into the pool only if the lock is free; whoever
holds the lock drains the queue after letting go of it. Critical sections are
list and dict operations only, and evicted mappings are dropped after the lock
is released. A forked child starts with a new lock and an empty pool: another
thread of the parent may have held the lock in the middle of an update, and a
pooled buffer would save the child nothing, since its first write to each
page is a copy-on-write fault anyway.
"""

import collections
import ctypes
import math
import mmap
import operator
import os
import threading
import warnings
import weakref

import numpy as np

THRESHOLD = 1 << 20
SIZE_CLASS = 2 << 20
DEFAULT_MAX_BYTES = 1 << 30
ENV_VAR = "NUMCONV_BUFFER_CACHE"

BufferCacheInfo = collections.namedtuple(
    "BufferCacheInfo", ["pooled_bytes", "pooled_buffers", "max_bytes", "hits", "misses"]
)
BufferCacheInfo.__doc__ = """State of numconv's cache of released result buffers.

pooled_bytes, pooled_buffers: what the pool holds now; max_bytes: its cap;
hits, misses: large results served from the pool, and those that needed a new
mapping, counted since import (a forked child goes on from its parent's counts)."""

_MAP_OPTIONS = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}
_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


def _tracemalloc_hooks():
    """PyTraceMalloc_Track and _Untrack, or None where ctypes cannot reach them."""
    try:
        track = ctypes.pythonapi.PyTraceMalloc_Track
        untrack = ctypes.pythonapi.PyTraceMalloc_Untrack
    except AttributeError:
        return None, None
    track.argtypes = (ctypes.c_uint, ctypes.c_size_t, ctypes.c_size_t)
    track.restype = ctypes.c_int
    untrack.argtypes = (ctypes.c_uint, ctypes.c_size_t)
    untrack.restype = ctypes.c_int
    return track, untrack


# Arrays handed out are reported to tracemalloc in NumPy's domain, as NumPy
# reports its own buffers, so that memory measurements (the benchmark's extra
# memory, the tests' allocation checks) see them; pooled buffers are not in use
# and are not reported, like memory given back to malloc.
_track, _untrack = _tracemalloc_hooks()
_TRACE_DOMAIN = np.lib.tracemalloc_domain


def _cap_from_environment():
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        warnings.warn(
            f"{ENV_VAR} must be a whole number of bytes >= 0 (0 disables the cache), "
            f"got {text!r}; using the default {DEFAULT_MAX_BYTES}",
            RuntimeWarning,
            stacklevel=2,
        )
        return DEFAULT_MAX_BYTES
    return value


class _Pool:
    """Released buffers by size class, and the order in which they came back."""

    def __init__(self):
        self.free = {}  # size -> [mmap], oldest release first
        self.order = collections.OrderedDict()  # id(mmap) -> size, oldest first
        self.nbytes = 0

    def take(self, size):
        """The most recently released buffer of ``size`` bytes, or None."""
        stack = self.free.get(size)
        if not stack:
            return None
        buf = stack.pop()
        if not stack:
            del self.free[size]
        del self.order[id(buf)]
        self.nbytes -= size
        return buf

    def put(self, size, buf, max_bytes, evicted):
        """Pool ``buf``, then move the oldest buffers into ``evicted`` past the cap."""
        if size > max_bytes:
            evicted.append(buf)
            return
        self.free.setdefault(size, []).append(buf)
        self.order[id(buf)] = size
        self.nbytes += size
        self.shrink(max_bytes, evicted)

    def shrink(self, max_bytes, evicted):
        while self.nbytes > max_bytes:
            key, size = self.order.popitem(last=False)
            stack = self.free[size]
            buf = stack.pop(0)
            assert id(buf) == key
            if not stack:
                del self.free[size]
            self.nbytes -= size
            evicted.append(buf)


_lock = threading.Lock()
_returned = collections.deque()  # (size, mmap) released, not yet in the pool
_pool = _Pool()
_max_bytes = _cap_from_environment()
_hits = 0
_misses = 0


def _release(size, buf, address):
    """Finalizer of an allocation: give its buffer back; never waits for the lock."""
    if _untrack is not None:
        _untrack(_TRACE_DOMAIN, address)
    _returned.append((size, buf))
    _settle()


def _settle():
    """Move returned buffers into the pool, unless another caller holds the lock.

    That caller calls this after releasing the lock, so nothing stays queued.
    """
    while _returned:
        if not _lock.acquire(blocking=False):
            return
        evicted = []
        try:
            while _returned:
                size, buf = _returned.popleft()
                _pool.put(size, buf, _max_bytes, evicted)
        finally:
            _lock.release()
        # The evicted mappings are unmapped here, outside the lock.
        del evicted


def _map(size):
    try:
        buf = mmap.mmap(-1, size, **_MAP_OPTIONS)
    except OSError as err:
        raise MemoryError(f"could not map {size} bytes for a result: {err}") from err
    if _HUGEPAGE is not None:
        try:
            buf.madvise(_HUGEPAGE)
        except OSError:
            pass
    return buf


def _size_class(shape, dtype):
    """Bytes of the mapping an array of ``shape`` gets, or None for np.empty's."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < THRESHOLD:
        return None
    size = -(-nbytes // SIZE_CLASS) * SIZE_CLASS
    return size if size <= _max_bytes else None


def _shape(shape):
    # Cheap on purpose: every result goes through here, also the tiny ones.
    return tuple(map(operator.index, shape)) if isinstance(shape, (tuple, list)) else (
        operator.index(shape),
    )


def empty(shape, dtype):
    """A new C-contiguous, writeable, aligned array, like ``np.empty(shape, dtype)``.

    Arrays of at least ``THRESHOLD`` bytes reuse the memory of released ones
    while the cache is on. The array shares memory with nothing else alive.
    """
    global _hits, _misses
    # numconv's own callers pass tuples of ints; anything else is normalised.
    if type(shape) is not tuple:
        shape = _shape(shape)
    dtype = np.dtype(dtype)
    size = _size_class(shape, dtype)
    if size is None:
        return np.empty(shape, dtype)

    with _lock:
        buf = _pool.take(size)
        if buf is None:
            _misses += 1
        else:
            _hits += 1
    _settle()
    if buf is None:
        buf = _map(size)

    block = (ctypes.c_char * size).from_buffer(buf)
    out = np.ndarray(shape, dtype, buffer=block)
    address = ctypes.addressof(block)
    weakref.finalize(block, _release, size, buf, address).atexit = False
    if _track is not None:
        _track(_TRACE_DOMAIN, address, out.nbytes)
    return out


def zeros(shape, dtype):
    """Like ``np.zeros(shape, dtype)``, from ``empty``'s memory when it is pooled."""
    shape, dtype = _shape(shape), np.dtype(dtype)
    if _size_class(shape, dtype) is None:
        # np.zeros gets fresh zero pages without writing them.
        return np.zeros(shape, dtype)
    out = empty(shape, dtype)
    out.fill(0)
    return out


def set_buffer_cache(max_bytes):
    """Set how many bytes of released result buffers numconv keeps for reuse.

    Parameters
    ----------
    max_bytes : int >= 0
        The cap (default 1 GiB, or ``NUMCONV_BUFFER_CACHE`` bytes). Results of
        at least 1 MiB whose arrays have all been freed are kept, up to the
        cap, the least recently released dropped first, and handed out again
        for results of the same size (rounded up to 2 MiB). 0 turns the cache
        off and empties it.

    Returns
    -------
    int, the previous cap.
    """
    if isinstance(max_bytes, (bool, np.bool_)) or not isinstance(
        max_bytes, (int, np.integer)
    ):
        raise TypeError(
            f"max_bytes must be an int number of bytes, got {max_bytes!r} of type "
            f"{type(max_bytes).__name__}"
        )
    max_bytes = int(max_bytes)
    if max_bytes < 0:
        raise ValueError(
            f"max_bytes must be >= 0 (0 turns the buffer cache off), got {max_bytes}"
        )

    global _max_bytes
    evicted = []
    with _lock:
        previous, _max_bytes = _max_bytes, max_bytes
        _pool.shrink(max_bytes, evicted)
    del evicted
    _settle()
    return previous


def buffer_cache_info():
    """The cache's state: ``BufferCacheInfo(pooled_bytes, pooled_buffers,
    max_bytes, hits, misses)``."""
    _settle()
    with _lock:
        info = BufferCacheInfo(
            _pool.nbytes, len(_pool.order), _max_bytes, _hits, _misses
        )
    _settle()
    return info


def _after_fork_in_child():
    global _lock, _returned, _pool
    _lock = threading.Lock()
    _returned = collections.deque()
    _pool = _Pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
