"""Concurrency and processes: Python threads, fork and spawn children, thread counts.

The stress and process checks run in a child Python process, so an abort (as
Numba's ``workqueue`` layer does on concurrent launches) or a deadlock shows up
as a failed test with the child's output, not as a dead or hung test run. The
same file is the child's script: ``python test_concurrency.py MODE ...``.

``NUMCONV_STRESS_SECONDS`` sets the length of the main stress run (default 20).
"""

import os
import sys

if os.environ.get("NUMCONV_TEST_HIDE_TBB"):
    # Makes Numba's TBB layer unimportable, as on a machine without TBB. Set
    # only for child processes of these tests, before numconv is imported.
    sys.modules["numba.np.ufunc.tbbpool"] = None

import json  # noqa: E402
import multiprocessing  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import numconv  # noqa: E402
from numconv import _config  # noqa: E402
from robust_util import (  # noqa: E402
    FAMILIES,
    SETTINGS,
    digest,
    first_difference,
    make_arrays,
    maybe_forced,
    run_ops,
)

HERE = os.path.dirname(os.path.abspath(__file__))
STRESS_SECONDS = float(os.environ.get("NUMCONV_STRESS_SECONDS", "20"))
N_THREADS = 8


def tasks():
    """Every (setting, family) pair; family None lets the dispatcher choose."""
    return [(name, family) for name in SETTINGS for family in [None] + FAMILIES]


def task_results(task, seed=0):
    name, family = task
    setting = SETTINGS[name]
    return run_ops(setting, make_arrays(setting, seed), family)


def task_digest(task):
    """Run in a child process: the digest of one task's results."""
    return digest(task_results(task))


# -- child process modes ---------------------------------------------------------


def stress(seconds, n_threads):
    """n_threads Python threads run every task for ``seconds``; compare bitwise.

    References are computed first, single-threaded, with the default thread
    count. Each worker thread then alternates between 1 and 2 Numba threads
    (``numba.set_num_threads`` is per calling thread) and starts at its own
    offset in the task list, so different settings, dtypes and forced families
    run at the same time.
    """
    all_tasks = tasks()
    arrays = {name: make_arrays(SETTINGS[name], seed=1) for name in SETTINGS}
    refs = {t: run_ops(SETTINGS[t[0]], arrays[t[0]], t[1]) for t in all_tasks}
    max_threads = numba.config.NUMBA_NUM_THREADS
    calls = [0] * n_threads
    mismatches = []
    errors = []
    stop = threading.Event()

    def work(i):
        k = i
        try:
            while not stop.is_set():
                task = all_tasks[k % len(all_tasks)]
                numba.set_num_threads(1 + (k // len(all_tasks) + i) % max_threads)
                got = run_ops(SETTINGS[task[0]], arrays[task[0]], task[1])
                problem = first_difference(refs[task], got)
                if problem:
                    mismatches.append((str(task), numba.get_num_threads(), problem))
                calls[i] += len(got)
                k += 1
        except BaseException as err:  # reported to the parent test
            errors.append(f"thread {i}: {err!r}")

    workers = [
        threading.Thread(target=work, args=(i,), daemon=True) for i in range(n_threads)
    ]
    start = time.perf_counter()
    for t in workers:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in workers:
        t.join(timeout=120)
    stuck = sum(t.is_alive() for t in workers)
    return dict(
        layer=numba.threading_layer(),
        choice=_config.LAYER_CHOICE,
        seconds=time.perf_counter() - start,
        calls=calls,
        tasks=len(all_tasks),
        stuck=stuck,
        mismatches=mismatches[:5],
        n_mismatches=len(mismatches),
        errors=errors[:5],
    )


def processes():
    """Parent digests, then the same tasks in fork and spawn children.

    Two threads keep running kernels in the parent while it forks, the way a
    training loop keeps computing while a data loader starts its workers.
    """
    all_tasks = tasks()
    parent = {t: task_digest(t) for t in all_tasks}
    stop = threading.Event()

    def busy():
        setting = SETTINGS["wide"]
        arrays = make_arrays(setting)
        while not stop.is_set():
            run_ops(setting, arrays)

    busy_threads = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
    for t in busy_threads:
        t.start()
    report = dict(layer=numba.threading_layer(), children={})
    try:
        for method in ("fork", "spawn"):
            ctx = multiprocessing.get_context(method)
            with ctx.Pool(2) as pool:
                got = pool.map_async(task_digest, all_tasks).get(timeout=300)
            bad = [str(t) for t, d in zip(all_tasks, got) if d != parent[t]]
            report["children"][method] = dict(tasks=len(all_tasks), mismatched=bad)
    finally:
        stop.set()
        for t in busy_threads:
            t.join(timeout=60)
    return report


def digests(with_ticks=False):
    """Digest of every task under this process's thread count, and optionally
    the CPU ticks of the calling thread and of all others in a few large calls."""
    result = dict(
        threads=numba.get_num_threads(),
        digests={str(t): task_digest(t) for t in tasks()},
    )
    if with_ticks:
        result["ticks"] = {family: work_by_thread(family) for family in FAMILIES}
    return result


def run_child(mode, *args, env=None, timeout=900):
    """Run this file as ``mode`` in a fresh interpreter; its JSON report."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), mode, *map(str, args)],
        env=full_env,
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"child {mode} exited with {proc.returncode}\n{proc.stderr[-3000:]}"
    )
    # The report is the child's last JSON line. Other lines can follow it: TBB
    # writes its fork warning to stdout through C's buffered stdio, which a
    # pipe flushes only at exit.
    reports = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert reports, f"child {mode} printed no report:\n{proc.stdout[-3000:]}"
    return json.loads(reports[-1])


# -- tests --------------------------------------------------------------------------


def check_stress(report, seconds):
    assert report["stuck"] == 0, f"{report['stuck']} threads never finished: {report}"
    assert not report["errors"], report["errors"]
    assert report["n_mismatches"] == 0, report["mismatches"]
    assert report["seconds"] < seconds + 120, report
    # Every thread made progress: no thread was starved or blocked for good.
    assert min(report["calls"]) > 0, report["calls"]


def test_eight_threads_match_single_threaded():
    report = run_child("stress", STRESS_SECONDS, N_THREADS)

    check_stress(report, STRESS_SECONDS)
    # TBB wherever it can load; otherwise numconv's serialised fallback.
    assert report["layer"] == "tbb" or report["choice"] == "workqueue", report
    print(
        f"\n{N_THREADS} threads, {report['seconds']:.1f} s, layer {report['layer']}: "
        f"{sum(report['calls'])} calls ({report['calls']}), all bitwise equal"
    )


def test_workqueue_layer_is_serialised():
    """The user asks for workqueue: numconv must take its lock, not abort."""
    report = run_child(
        "stress", 3, N_THREADS, env={"NUMBA_THREADING_LAYER": "workqueue"}
    )

    assert report["layer"] == "workqueue" and report["choice"] == "user", report
    check_stress(report, 3)


def test_without_tbb_falls_back_to_serialised_workqueue():
    """With TBB unloadable, numconv picks workqueue plus its lock and still forks."""
    hide_tbb = {"NUMCONV_TEST_HIDE_TBB": "1"}
    report = run_child("stress", 3, N_THREADS, env=hide_tbb)

    assert report["layer"] == "workqueue" and report["choice"] == "workqueue", report
    check_stress(report, 3)

    report = run_child("processes", env=hide_tbb)
    assert report["layer"] == "workqueue"
    for method, child in report["children"].items():
        assert child["mismatched"] == [], (method, child)


def test_fork_and_spawn_children_match_parent():
    report = run_child("processes")

    assert set(report["children"]) == {"fork", "spawn"}
    for method, child in report["children"].items():
        assert child["tasks"] == len(tasks())
        assert child["mismatched"] == [], (method, child)


def thread_ticks():
    """CPU clock ticks used so far by each OS thread of this process."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(tid)] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def work_by_thread(family):
    """Ticks of the calling thread and of all others during a few large calls."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 64, 4096), dtype=np.float32)
    w = rng.standard_normal((64, 64, 5), dtype=np.float32)
    kwargs = dict(padding=2)
    with maybe_forced(family):
        numconv.conv1d(x, w, **kwargs)
        time.sleep(0.3)  # let workers of earlier calls go idle
        before = thread_ticks()
        # Enough calls for well over 10 ticks (10 ms each) of one thread's work
        # on a fast core: three took exactly 10 on a Zen 5.
        for _ in range(8):
            y = numconv.conv1d(x, w, **kwargs)
            numconv.conv1d_grad_input(y, w, x.shape[-1], **kwargs)
            numconv.conv1d_grad_weight(x, y, w.shape[-1], **kwargs)
        after = thread_ticks()
    me = threading.get_native_id()
    used = {t: after[t] - before.get(t, 0) for t in after}
    return used.pop(me, 0), sum(used.values())


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("family", FAMILIES)
def test_set_num_threads_is_followed(family):
    """One Numba thread: no other OS thread (Numba's or BLAS's) does any work."""
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        mine, others = work_by_thread(family)
        assert mine > 10, "the calls were too short to measure"
        assert others <= 2, (
            f"other threads used {others} ticks with 1 thread (mine {mine})"
        )
        if numba.config.NUMBA_NUM_THREADS >= 2:
            numba.set_num_threads(2)
            mine, others = work_by_thread(family)
            assert others > 0, "with 2 threads no other thread did any work"
    finally:
        numba.set_num_threads(previous)


def test_numba_num_threads_environment():
    """NUMBA_NUM_THREADS=1 and =3 in fresh processes: same bits as this process."""
    here = digests()
    for n in (1, 3):
        child = run_child("digests", int(n == 1), env={"NUMBA_NUM_THREADS": str(n)})
        assert child["threads"] == n
        differ = [t for t, d in child["digests"].items() if d != here["digests"][t]]
        assert differ == [], f"NUMBA_NUM_THREADS={n} changed the results of {differ}"

        if n == 1:
            for family, (mine, others) in child["ticks"].items():
                assert mine > 10 and others <= 2, (family, mine, others)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "stress":
        result = stress(float(sys.argv[2]), int(sys.argv[3]))
    elif mode == "processes":
        result = processes()
    elif mode == "digests":
        result = digests(with_ticks=bool(int(sys.argv[2])))
    else:
        raise SystemExit(f"unknown mode {mode}")
    sys.stdout.flush()
    print(json.dumps(result))
