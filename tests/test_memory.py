"""The cache of released result buffers (``numconv._memory``).

Reuse, liveness through every kind of view, the cap, switching it off, bad
arguments, the environment variable, threads, a forked child, and the
convolutions' results on reused memory.
"""

import gc
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

import numconv
from numconv import _memory

MiB = 1 << 20
SHAPE = (3, 512, 1024)  # 6 MiB of float32, one 6 MiB size class


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts from an empty pool with the default cap; the cap is restored."""
    previous = numconv.set_buffer_cache(0)
    numconv.set_buffer_cache(_memory.DEFAULT_MAX_BYTES)
    yield
    numconv.set_buffer_cache(0)
    numconv.set_buffer_cache(previous)


def floats(kept):
    """The float32 values that ``kept`` (a derivative of an array) can reach."""
    if isinstance(kept, memoryview):
        kept = np.asarray(kept)
    if not isinstance(kept, np.ndarray):
        return np.frombuffer(kept, np.float32)
    return kept.view(np.float32)


def counts():
    """(hits, misses) so far; the counters run for the whole process."""
    info = numconv.buffer_cache_info()
    return np.array([info.hits, info.misses])


# -- reuse -----------------------------------------------------------------------


def test_small_arrays_are_plain_numpy():
    a = _memory.empty((MiB // 8 - 1,), np.float64)
    assert a.base is None and a.flags.owndata
    before = numconv.buffer_cache_info()
    del a
    assert numconv.buffer_cache_info() == before


def test_large_array_is_c_contiguous_writeable_aligned():
    a = _memory.empty(SHAPE, np.float32)
    assert a.shape == SHAPE and a.dtype == np.float32
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    assert a.ctypes.data % 4096 == 0
    a[...] = 1.5
    assert a.sum(dtype=np.float64) == 1.5 * a.size


def test_released_buffer_is_reused():
    start = counts()
    a = _memory.empty(SHAPE, np.float32)
    pointer = a.ctypes.data
    assert list(counts() - start) == [0, 1]
    assert numconv.buffer_cache_info().pooled_buffers == 0

    del a
    info = numconv.buffer_cache_info()
    assert info.pooled_buffers == 1 and info.pooled_bytes == 6 * MiB

    b = _memory.empty(SHAPE, np.float32)
    assert b.ctypes.data == pointer
    assert list(counts() - start) == [1, 1]
    assert numconv.buffer_cache_info().pooled_buffers == 0


def test_reuse_needs_the_same_size_class():
    # 5.5 MiB and 6 MiB share the 6 MiB class; 7 MiB needs an 8 MiB buffer.
    start = counts()
    a = _memory.empty(6 * MiB, np.uint8)
    pointer = a.ctypes.data
    del a
    b = _memory.empty((8 * MiB - MiB,), np.uint8)
    assert b.ctypes.data != pointer
    c = _memory.empty((11, MiB // 2), np.uint8)
    assert c.ctypes.data == pointer
    assert list(counts() - start) == [1, 2]


def test_tracemalloc_sees_arrays_in_use_only():
    # As it sees NumPy's own buffers: the benchmark's extra memory and the
    # hostile tests' allocation checks rely on it.
    _memory.empty(SHAPE, np.float32)  # pooled, so the next one is a reuse
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        a = _memory.empty(SHAPE, np.float32)
        in_use = tracemalloc.get_traced_memory()[0] - base
        del a
        after = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert 6 * MiB <= in_use < 6 * MiB + 4096
    assert after < 4096


# -- liveness --------------------------------------------------------------------

DERIVED = {
    "slice": lambda a: a[1:],
    "strided slice": lambda a: a[:, ::3],
    "transpose": lambda a: a.T,
    "reshape": lambda a: a.reshape(-1),
    "ravel": lambda a: a.ravel(),
    "view as int32": lambda a: a.view(np.int32),
    "asarray of a view": lambda a: np.asarray(a[2]),
    "a[None]": lambda a: a[None],
    "a[0]": lambda a: a[0],
    "view of a view of a view": lambda a: a[1:][None].T[..., 0],
    "memoryview": lambda a: memoryview(a),
    "memoryview of a slice": lambda a: memoryview(a[1:]),
    "frombuffer": lambda a: np.frombuffer(a, np.float32),
    "as_strided": lambda a: np.lib.stride_tricks.as_strided(a, (10,), (4,)),
    "the base": lambda a: a.base,
}


def test_views_point_at_the_returned_array():
    # The invariant the design rests on: NumPy never collapses a view's base past
    # an array whose own base is not an ndarray.
    a = _memory.empty(SHAPE, np.float32)
    assert not isinstance(a.base, np.ndarray)
    views = [a[1:], a.T, a[None], a[0], a.reshape(-1), a[1:][None].T, np.asarray(a[2])]
    for view in views:
        assert view.base is a


@pytest.mark.parametrize("how", list(DERIVED))
def test_a_live_derivative_blocks_reuse(how):
    a = _memory.empty(SHAPE, np.float32)
    a[...] = 1.0
    pointer = a.ctypes.data
    kept = DERIVED[how](a)
    del a
    gc.collect()

    b = _memory.empty(SHAPE, np.float32)
    assert not np.shares_memory(b, floats(kept))
    b[...] = 2.0
    assert np.all(floats(kept) == 1.0)

    # Once the last derivative goes, the buffer is released.
    del kept
    gc.collect()
    c = _memory.empty(SHAPE, np.float32)
    assert c.ctypes.data == pointer
    del b, c


def test_arrays_in_reference_cycles_are_released_by_the_collector():
    a = _memory.empty(SHAPE, np.float32)
    pointer = a.ctypes.data
    cycle = [a]
    cycle.append(cycle)
    del a, cycle
    gc.collect()
    assert numconv.buffer_cache_info().pooled_buffers == 1
    assert _memory.empty(SHAPE, np.float32).ctypes.data == pointer


def test_zeros_are_zero_on_a_reused_buffer():
    a = _memory.empty(SHAPE, np.float32)
    a[...] = np.nan
    del a
    start = counts()
    z = _memory.zeros(SHAPE, np.float32)
    assert list(counts() - start) == [1, 0]
    assert not z.any()


# -- the cap ---------------------------------------------------------------------


def test_cap_evicts_the_least_recently_released():
    numconv.set_buffer_cache(3 * 2 * MiB)
    arrays = [_memory.empty(2 * MiB, np.uint8) for _ in range(4)]
    pointers = [a.ctypes.data for a in arrays]
    for i in range(4):
        arrays[i] = None
    info = numconv.buffer_cache_info()
    assert (info.pooled_buffers, info.pooled_bytes) == (3, 6 * MiB)

    # The three most recently released come back, most recent first.
    start = counts()
    again = [_memory.empty(2 * MiB, np.uint8) for _ in range(4)]
    assert [a.ctypes.data for a in again[:3]] == pointers[:0:-1]
    assert list(counts() - start) == [3, 1]


def test_buffers_larger_than_the_cap_are_never_pooled():
    numconv.set_buffer_cache(4 * MiB)
    a = _memory.empty(SHAPE, np.float32)
    assert a.base is None
    del a
    assert numconv.buffer_cache_info().pooled_buffers == 0


def test_lowering_the_cap_evicts():
    arrays = [_memory.empty(2 * MiB, np.uint8) for _ in range(3)]
    del arrays
    assert numconv.buffer_cache_info().pooled_bytes == 6 * MiB
    assert numconv.set_buffer_cache(2 * MiB) == _memory.DEFAULT_MAX_BYTES
    info = numconv.buffer_cache_info()
    assert (info.pooled_buffers, info.pooled_bytes) == (1, 2 * MiB)
    assert info.max_bytes == 2 * MiB


def test_zero_disables_and_empties():
    _memory.empty(SHAPE, np.float32)  # released at once
    assert numconv.buffer_cache_info().pooled_buffers == 1
    numconv.set_buffer_cache(0)
    before = numconv.buffer_cache_info()
    assert (before.pooled_buffers, before.pooled_bytes, before.max_bytes) == (0, 0, 0)

    a = _memory.empty(SHAPE, np.float32)
    assert a.base is None and a.flags.owndata
    del a
    assert numconv.buffer_cache_info() == before


def test_buffers_out_when_disabled_are_dropped_on_release():
    a = _memory.empty(SHAPE, np.float32)
    numconv.set_buffer_cache(0)
    del a
    assert numconv.buffer_cache_info().pooled_buffers == 0


@pytest.mark.parametrize("value", [-1, -(2**40)])
def test_negative_cap_raises(value):
    with pytest.raises(ValueError, match=rf"max_bytes must be >= 0 .*got {value}"):
        numconv.set_buffer_cache(value)


@pytest.mark.parametrize("value", [1.5, "1024", None, True, np.float64(8)])
def test_non_int_cap_raises(value):
    with pytest.raises(TypeError, match=r"max_bytes must be an int .*got"):
        numconv.set_buffer_cache(value)


def test_numpy_int_cap_is_accepted():
    numconv.set_buffer_cache(np.int64(8 * MiB))
    assert numconv.buffer_cache_info().max_bytes == 8 * MiB


@pytest.mark.parametrize("text", ["lots", "-5", "1.5e9"])
def test_bad_environment_value_warns_and_uses_the_default(monkeypatch, text):
    monkeypatch.setenv(_memory.ENV_VAR, text)
    with pytest.warns(RuntimeWarning, match=rf"{_memory.ENV_VAR} must be .*{text!r}"):
        assert _memory._cap_from_environment() == _memory.DEFAULT_MAX_BYTES


def test_environment_variable_is_read_at_import():
    code = "import numconv; print(numconv.buffer_cache_info().max_bytes)"
    env = dict(os.environ, NUMCONV_BUFFER_CACHE="12345678")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "12345678"


# -- threads and fork ------------------------------------------------------------


def _pool_is_consistent():
    pool = _memory._pool
    buffers = [buf for stack in pool.free.values() for buf in stack]
    sizes = sum(size * len(stack) for size, stack in pool.free.items())
    return (
        len({id(b) for b in buffers}) == len(buffers) == len(pool.order)
        and sizes == pool.nbytes
        and all(len(b) == size for size, stack in pool.free.items() for b in stack)
    )


def test_threads_allocating_and_releasing():
    # A small cap makes eviction run too; arrays dropped inside reference cycles
    # are freed by the collector at arbitrary points, in any thread, also while
    # another allocation holds the lock.
    numconv.set_buffer_cache(24 * MiB)
    start = counts()
    sizes = [(MiB,), (3 * MiB // 2,), (5 * MiB // 2,), (4 * MiB,)]
    live, live_lock = set(), threading.Lock()
    errors = []
    stop = time.monotonic() + 1.0

    def worker(seed):
        rng = np.random.default_rng(seed)
        kept = []
        token = float(seed * 10**6)
        try:
            while time.monotonic() < stop:
                token += 1
                a = _memory.empty(sizes[rng.integers(len(sizes))], np.uint8)
                with live_lock:
                    assert a.ctypes.data not in live, "a live buffer was handed out"
                    live.add(a.ctypes.data)
                b = a.view(np.float64)
                b[...] = token
                kept.append((token, b))
                if len(kept) > 3:
                    old_token, old = kept.pop(0)
                    assert (old == old_token).all(), "a live array was overwritten"
                    with live_lock:
                        live.discard(old.ctypes.data)
                    if rng.random() < 0.3:
                        cycle = [old]
                        cycle.append(cycle)
                    del old
                del a, b
        except Exception as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    gc.collect()
    assert all(counts() - start > 0)
    assert numconv.buffer_cache_info().pooled_bytes <= 24 * MiB
    assert _pool_is_consistent()


def test_a_finalizer_never_waits_for_the_lock():
    # As if another thread (or a garbage collection inside this one) were in the
    # middle of an allocation: the release is queued, not blocked, and lands in
    # the pool once the lock is free.
    a = [_memory.empty(SHAPE, np.float32)]
    dropper = threading.Thread(target=a.clear)
    with _memory._lock:
        dropper.start()
        dropper.join(timeout=5)
        finished = not dropper.is_alive()
    dropper.join()
    assert finished, "the finalizer waited for the lock"
    assert numconv.buffer_cache_info().pooled_buffers == 1


_FORK_KEPT = []


def _in_forked_child(expected):
    a = _FORK_KEPT.pop()
    pointer = a.ctypes.data
    del a  # the child's reference; the parent's array stays alive
    b = _memory.empty(SHAPE, np.float32)
    reused = b.ctypes.data == pointer
    b[...] = 7.0
    x, w = expected["x"], expected["w"]
    y = numconv.conv1d(x, w, stride=5)
    return reused, bool(np.array_equal(y, expected["y"]))


def test_forked_child_allocates():
    x, w = _w2v_first()
    y = numconv.conv1d(x, w, stride=5)
    # Held only by the list, which the child empties: a local variable would keep
    # the child's copy alive through this frame, copied by the fork.
    _FORK_KEPT.append(_memory.empty(SHAPE, np.float32))
    _FORK_KEPT[0][...] = 1.0
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            reused, same = pool.apply_async(
                _in_forked_child, ({"x": x, "w": w, "y": y},)
            ).get(timeout=120)
        # The mappings are private: the child's writes do not reach the parent.
        assert np.all(_FORK_KEPT[0] == 1.0)
    finally:
        _FORK_KEPT.clear()
    assert reused and same


# -- the convolutions on reused memory -------------------------------------------


def _w2v_first():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 16000)).astype(np.float32)
    w = rng.standard_normal((512, 1, 10)).astype(np.float32)
    return x, w


def _pool_garbage(*shapes):
    """Release NaN-filled buffers of each shape's size class (two of each)."""
    arrays = [_memory.empty(s, np.float32) for s in shapes for _ in range(2)]
    for a in arrays:
        a[...] = np.nan
    del arrays


def _without_cache(fn):
    previous = numconv.set_buffer_cache(0)
    try:
        return fn()
    finally:
        numconv.set_buffer_cache(previous)


def test_conv1d_on_reused_memory():
    x, w = _w2v_first()
    expected = _without_cache(lambda: numconv.conv1d(x, w, stride=5))
    assert expected.nbytes > MiB

    _pool_garbage(expected.shape)
    start = counts()
    y = numconv.conv1d(x, w, stride=5)
    assert list(counts() - start) == [1, 0]
    np.testing.assert_array_equal(y, expected)

    y2 = numconv.conv1d(x, w, stride=5)
    assert not np.shares_memory(y, y2)
    np.testing.assert_array_equal(y2, expected)


@pytest.mark.parametrize(
    "padding, mode", [((3, 0), "zeros"), (2, "reflect"), (0, "zeros")]
)
def test_conv1d_backward_on_reused_memory(padding, mode):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 64, 2048)).astype(np.float32)
    w = rng.standard_normal((64, 1, 4)).astype(np.float32)
    kw = dict(padding=padding, padding_mode=mode, groups=64)
    y = numconv.conv1d(x, w, **kw)
    g = rng.standard_normal(y.shape).astype(np.float32)
    expected = _without_cache(lambda: numconv.conv1d_backward(x, w, g, **kw))
    assert expected.input.nbytes > MiB

    _pool_garbage(x.shape, (4, 64, 2048 + 8))
    start = counts()
    got = numconv.conv1d_backward(x, w, g, **kw)
    assert (counts() - start)[0] >= 1
    for name in ("input", "weight", "bias"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))

    again = numconv.conv1d_backward(x, w, g, **kw)
    assert not np.shares_memory(got.input, again.input)
    np.testing.assert_array_equal(again.input, expected.input)


def test_conv_transpose1d_on_reused_memory():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 64, 2048)).astype(np.float32)
    w = rng.standard_normal((64, 1, 5)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    kw = dict(padding=2, groups=64)
    expected = _without_cache(lambda: numconv.conv_transpose1d(x, w, b, **kw))

    _pool_garbage(expected.shape, (4, 64, 2048 + 8))
    got = numconv.conv_transpose1d(x, w, b, **kw)
    np.testing.assert_array_equal(got, expected)


def test_channel_free_results_on_reused_memory():
    # No input channel: the output is the bias. No output channel: zero gradient.
    x = np.ones((8, 0, 4096), np.float32)
    w = np.ones((128, 0, 3), np.float32)
    b = np.arange(128, dtype=np.float32)
    start = counts()
    _pool_garbage((8, 128, 4094))
    y = numconv.conv1d(x, w, b)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None], y.shape))

    w0 = np.ones((0, 128, 3), np.float32)
    g0 = np.ones((8, 0, 4094), np.float32)
    _pool_garbage((8, 128, 4096))
    gx = numconv.conv1d_grad_input(g0, w0, 4096)
    assert gx.shape == (8, 128, 4096) and not gx.any()
    assert (counts() - start)[0] >= 2
