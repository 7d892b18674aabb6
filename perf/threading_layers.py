"""What numconv's choice of Numba threading layer costs: tbb against omp and workqueue.

Each layer runs in a fresh subprocess with ``NUMBA_THREADING_LAYER`` set, since a
process can load only one layer. In each, for a few shapes, the script times one
training step (``conv1d`` then ``conv1d_backward``) two ways:

- one caller: the median over repeated steps from a single Python thread;
- concurrent callers: ``--callers`` Python threads stepping at once on their own
  data, reported as steps per second over the whole run.

Under ``workqueue`` numconv serialises kernel launches through a lock (the layer
aborts the process on concurrent launches), so its concurrent figure is the
cost of that lock. Under ``omp`` (GNU OpenMP) concurrent launches each start
their own thread team, oversubscribing the cores. The layers are measured one
after another, so on a shared machine compare the ratios printed at the end,
not the absolute times; ``--rounds`` repeats the whole sweep, interleaving the
layers, and reports the median of each figure over the rounds.

Run ``python -m perf.threading_layers -h`` for the options.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

LAYERS = ("tbb", "omp", "workqueue")

# name: (N, C_in, C_out, L, K, padding). "small" is dominated by launch overhead,
# "dense" by arithmetic, "long" by one long single-channel signal.
SHAPES = {
    "small": (4, 8, 8, 256, 5, 2),
    "dense": (16, 64, 64, 1024, 5, 2),
    "long": (1, 1, 4, 200_000, 31, 15),
}

REPO_DIR = Path(__file__).resolve().parent.parent


def _step(numconv, x, w, b, padding):
    y = numconv.conv1d(x, w, b, padding=padding)
    numconv.conv1d_backward(x, w, y, padding=padding)


def _data(shape, seed):
    N, C_in, C_out, L, K, padding = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C_in, L), dtype=np.float32)
    w = rng.standard_normal((C_out, C_in, K), dtype=np.float32)
    b = rng.standard_normal(C_out, dtype=np.float32)
    return x, w, b, padding


def _time_one_caller(numconv, args, min_seconds):
    _step(numconv, *args)
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        _step(numconv, *args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def _time_callers(numconv, shape, callers, min_seconds):
    data = [_data(shape, seed) for seed in range(callers)]
    counts = [0] * callers
    errors = []
    stop = threading.Event()
    barrier = threading.Barrier(callers + 1)

    def run(i):
        try:
            barrier.wait()
            while not stop.is_set():
                _step(numconv, *data[i])
                counts[i] += 1
        except Exception as err:  # reported, not swallowed
            errors.append(repr(err))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(min_seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(errors[0])
    return sum(counts) / elapsed, sum(counts)


def worker(callers, min_seconds):
    """Measure every shape under the layer named by NUMBA_THREADING_LAYER."""
    import numba

    import numconv

    results = {}
    for name, shape in SHAPES.items():
        median, reps = _time_one_caller(numconv, _data(shape, 0), min_seconds)
        rate, steps = _time_callers(numconv, shape, callers, min_seconds)
        results[name] = dict(
            one_caller_ms=median * 1e3,
            one_caller_reps=reps,
            concurrent_steps_per_s=rate,
            concurrent_steps=steps,
        )
    layer = numba.threading_layer()
    print(
        json.dumps(dict(layer=layer, threads=numba.get_num_threads(), results=results))
    )


def measure(layer, callers, min_seconds):
    """Run ``worker`` in a fresh process with the layer forced; its parsed result."""
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    cmd = [
        sys.executable,
        "-m",
        "perf.threading_layers",
        "--worker",
        "--callers",
        str(callers),
        "--seconds",
        str(min_seconds),
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO_DIR, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(layer=layer, error=proc.stderr.strip().splitlines()[-1:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_runs(rounds):
    """One run per layer whose figures are the medians over ``rounds``."""
    merged = []
    for layer_runs in zip(*rounds):
        ok = [r for r in layer_runs if "results" in r]
        if not ok:
            merged.append(layer_runs[0])
            continue
        results = {}
        for name in ok[0]["results"]:
            figures = [r["results"][name] for r in ok]
            results[name] = {
                key: statistics.median(f[key] for f in figures) for key in figures[0]
            }
        merged.append(dict(ok[0], results=results, rounds=len(ok)))
    return merged


def report(runs):
    """Table of every layer's figures, with the ratio to tbb's in the same run."""
    base = next((r for r in runs if r.get("layer") == "tbb" and "results" in r), None)
    lines = [
        f"{'layer':10} {'shape':6} {'1 caller ms':>12} {'vs tbb':>7} "
        f"{'concurrent steps/s':>19} {'vs tbb':>7}"
    ]
    for run in runs:
        if "results" not in run:
            lines.append(f"{run['layer']:10} failed to run: {run.get('error')}")
            continue
        for name, r in run["results"].items():
            one = r["one_caller_ms"]
            many = r["concurrent_steps_per_s"]
            if base:
                b = base["results"][name]
                one_ratio = f"{one / b['one_caller_ms']:.2f}"
                many_ratio = f"{many / b['concurrent_steps_per_s']:.2f}"
            else:
                one_ratio = many_ratio = "-"
            lines.append(
                f"{run['layer']:10} {name:6} {one:12.3f} {one_ratio:>7} "
                f"{many:19.1f} {many_ratio:>7}"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=LAYERS)
    parser.add_argument("--callers", type=int, default=4, help="concurrent threads")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="sweeps, interleaved")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.callers, args.seconds)
        return

    rounds = [
        [measure(layer, args.callers, args.seconds) for layer in args.layers]
        for _ in range(args.rounds)
    ]
    runs = median_runs(rounds)
    print(f"one training step (conv1d + conv1d_backward), float32, shapes {SHAPES}")
    print(
        f"concurrent: {args.callers} Python threads; each figure >= {args.seconds} s; "
        f"median over {args.rounds} round(s)"
    )
    print(report(runs))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = dict(shapes=SHAPES, runs=runs, rounds=rounds)
        args.out.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
