"""``make perf``: numconv against PyTorch CPU on layer shapes from real models.

For every shape of ``perf.shapes`` (float32, and float64 for a subset) the harness
times the forward pass and the backward pass (input, weight and bias gradients
in one call) of numconv and of PyTorch, in one process, interleaved, with the
same thread count. It measures the machine's limits in the same run (BLAS matrix
product for compute, a streaming copy for memory), the peak extra memory numconv
allocates per call, and the compile cost of a fresh process with a cold and a
warm Numba cache. Results go to ``perf/results/`` as JSON plus a PNG chart of
the ratios; a table is printed at the end.

numconv is timed only through its public API. Run ``python -m perf.bench -h``
for the options.
"""

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

# numconv first: importing it chooses Numba's threading layer.
import numconv
import numba
from numba import njit, prange
from perf.shapes import BY_NAME, SHAPES

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

PERF_DIR = Path(__file__).resolve().parent
RESULTS_DIR = PERF_DIR / "results"
REPO_DIR = PERF_DIR.parent

# What the PyTorch figures time, stated once and written into the results.
TORCH_METHOD = {
    "forward": (
        "torch.nn.functional.conv1d with the padding passed in the call when it is "
        "symmetric; for causal and asymmetric 'same' padding (torch has no causal "
        "mode) F.pad first, then conv1d with padding=0, the pad timed with it"
    ),
    "backward": (
        "torch.ops.aten.convolution_backward (the op autograd calls), computing the "
        "input, weight and bias gradients in one call; for shapes padded with F.pad "
        "it runs on the padded input autograd would have saved, and the input "
        "gradient is un-padded by F.pad with negative padding, as autograd does"
    ),
}

MEMORY_METHOD = (
    "tracemalloc peak during one call outside the timed runs, minus the traced "
    "memory before the call, minus the bytes of the arrays the call returns. "
    "NumPy registers its array buffers with tracemalloc and Numba's runtime "
    "allocates through PyMem_RawMalloc, which tracemalloc also sees; "
    "memory_probe checks both on this run. Memory a library takes with its own "
    "allocator (for example BLAS work buffers) is not seen."
)


# -- machine ----------------------------------------------------------------------


def cpu_details():
    """Model name, family/model numbers and vector extensions of the first CPU.

    A hypervisor may report only a vendor name such as "AMD EPYC"; the family
    and model numbers and the SIMD flags still say which generation it is.
    """
    fields = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    simd = [f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16") if f in flags]
    name = fields.get("model name") or platform.processor() or platform.machine()
    return {
        "cpu_model": name,
        "cpu_family_model": [fields.get("cpu family"), fields.get("model")],
        "cpu_simd": simd,
    }


def git_commit():
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("internal_api", "version", "architecture", "num_threads", "filepath")
    return [{k: info.get(k) for k in keys} for info in threadpool_info()]


def machine_info(threads):
    return {
        **cpu_details(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numconv": numconv.__version__,
        "numconv_commit": git_commit(),
        "torch": torch.__version__ if torch is not None else None,
        "threads": threads,
        "numba_threading_layer": numba.threading_layer(),
        "blas": blas_info(),
        # Left as the environment set it; OpenBLAS picks its kernels by it.
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }


# -- limits -----------------------------------------------------------------------


def blas_peak(dtype, n, repeats):
    """GFLOP/s of an n x n matrix product through NumPy's BLAS (best of repeats)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    np.matmul(a, b, out=c)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / min(times) / 1e9, times


@njit(parallel=True, cache=True)
def _stream_copy(src, dst):
    for i in prange(src.shape[0]):
        dst[i] = src[i]


def stream_bandwidth(n_bytes, repeats):
    """GB/s of a parallel streaming copy, counting each byte read and written once.

    Both buffers are written before timing so no page fault is timed. The best
    of a Numba ``prange`` copy and NumPy's (single-threaded) copy is taken.
    """
    src = np.ones(n_bytes // 8)
    dst = np.zeros_like(src)
    out = {}
    copies = {"numba_prange": _stream_copy, "numpy": lambda s, d: np.copyto(d, s)}
    for name, copy in copies.items():
        copy(src, dst)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            copy(src, dst)
            times.append(time.perf_counter() - start)
        out[name] = 2.0 * src.nbytes / min(times) / 1e9
    return max(out.values()), out


def measure_limits(effort):
    """Compute peak per dtype and copy bandwidth, measured now.

    effort : "quick" (small and few, for smoke tests: the figures are low),
    "default" or "long".
    """
    n = 1024 if effort == "quick" else 2048
    repeats = {"quick": 2, "default": 5, "long": 10}[effort]
    mib = 64 if effort == "quick" else 256
    limits = {"peak_gflops": {}, "peak_detail": {}}
    for dtype in ("float32", "float64"):
        gflops, times = blas_peak(dtype, n, repeats)
        limits["peak_gflops"][dtype] = gflops
        limits["peak_detail"][dtype] = {
            "what": f"np.matmul {n} x {n}, best of {repeats}",
            "times_s": times,
        }
    bandwidth, detail = stream_bandwidth(mib * 2**20, 2 * repeats)
    limits["bandwidth_gbs"] = bandwidth
    limits["bandwidth_detail"] = {
        "what": f"copy of {mib} MiB, (read + write bytes) / best time",
        "GB/s": detail,
    }
    return limits


def best_limits(first, last):
    """The higher of two measurements of each limit, with both kept.

    Other work on the machine can only lower a measured ceiling, so the better
    of the measurements at the start and at the end of the run is the closer one.
    """
    return {
        "peak_gflops": {
            d: max(first["peak_gflops"][d], last["peak_gflops"][d])
            for d in first["peak_gflops"]
        },
        "bandwidth_gbs": max(first["bandwidth_gbs"], last["bandwidth_gbs"]),
        "rule": "the higher of the measurements at the start and at the end",
        "start": first,
        "end": last,
    }


# -- memory -----------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _allocate_in_threads(n, out):
    for i in prange(out.shape[0]):
        scratch = np.ones(n)
        out[i] = scratch.sum()


def memory_probe():
    """Check that tracemalloc sees NumPy and Numba allocations on this machine."""
    n = 2**20
    out = np.zeros(4)
    _allocate_in_threads(4, out)
    seen = {}
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        np.ones(n)
        seen["numpy"] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        _allocate_in_threads(n, out)
        seen["numba_threads"] = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    expected = {"numpy": 8 * n, "numba_threads": 8 * n}
    ok = all(seen[k] >= expected[k] for k in expected)
    return {"expected_at_least": expected, "seen": seen, "ok": ok}


# -- the cases --------------------------------------------------------------------


def make_inputs(shape, dtype):
    rng = np.random.default_rng(0)
    C_in_g = shape.C_in // shape.groups
    scale = 1.0 / math.sqrt(C_in_g * shape.K)
    x = rng.standard_normal((shape.N, shape.C_in, shape.L)).astype(dtype)
    w = (scale * rng.standard_normal((shape.C_out, C_in_g, shape.K))).astype(dtype)
    b = rng.standard_normal(shape.C_out).astype(dtype)
    g = rng.standard_normal((shape.N, shape.C_out, shape.L_out)).astype(dtype)
    return x, w, b, g


def numconv_calls(shape, x, w, b, g):
    opts = dict(
        stride=shape.stride,
        padding=shape.padding,
        dilation=shape.dilation,
        groups=shape.groups,
    )

    def forward():
        return numconv.conv1d(x, w, b, **opts)

    def backward():
        return tuple(numconv.conv1d_backward(x, w, g, bias=True, **opts))

    return forward, backward


def torch_calls(shape, x, w, b, g):
    """PyTorch's forward and backward for a shape, and how padding was passed."""
    tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, g))
    left, right = shape.pads()
    symmetric = left == right
    conv_pad = left if symmetric else 0
    if symmetric:
        saved_x = tx
        call = f"F.conv1d(x, w, b, padding={left})"
    else:
        saved_x = F.pad(tx, (left, right))
        call = f"F.conv1d(F.pad(x, ({left}, {right})), w, b, padding=0)"
    args = ([shape.stride], [conv_pad], [shape.dilation])

    def forward():
        xin = tx if symmetric else F.pad(tx, (left, right))
        return F.conv1d(
            xin, tw, tb, shape.stride, conv_pad, shape.dilation, shape.groups
        )

    def backward():
        gx, gw, gb = torch.ops.aten.convolution_backward(
            tg, saved_x, tw, [shape.C_out], *args, False, [0], shape.groups,
            [True, True, True],
        )
        if not symmetric:
            gx = F.pad(gx, (-left, -right))
        return gx, gw, gb

    return forward, backward, call


def relative_error(ours, theirs):
    """max |ours - theirs| / max |theirs| over every returned array."""
    if isinstance(ours, np.ndarray):
        ours, theirs = (ours,), (theirs,)
    worst = 0.0
    for a, t in zip(ours, theirs):
        t = t.numpy()
        scale = float(np.max(np.abs(t))) or 1.0
        worst = max(worst, float(np.max(np.abs(a - t))) / scale)
    return worst


def _nbytes(result):
    if isinstance(result, np.ndarray):
        return result.nbytes
    return sum(_nbytes(r) for r in result if r is not None)


def traced_call(fn):
    """Call fn once under tracemalloc: (seconds, peak bytes beyond what it returns)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return seconds, max(peak - base - _nbytes(result), 0)


# Pause before each timed run (see ``time_pair``).
SETTLE_S = 0.05


def time_runs(fn, inner):
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def time_pair(contenders, settings):
    """Time each contender; timed runs interleaved, median seconds per call.

    contenders : {name: callable}. Each contender is called once to warm up
    (the first call compiles; its result is kept for the accuracy check) and
    once more to choose ``inner``, the calls per timed run that make a run last
    about ``settings["min_time"]`` (numconv's second call runs under
    tracemalloc, for its extra memory). Then come ``settings["repeats"]`` timed
    runs, the contenders alternating which goes first, so neither always runs
    right after the other. When one call of either contender takes longer than
    ``settings["slow_call"]`` seconds, ``settings["slow_repeats"]`` timed runs
    are made instead, and PyTorch's second untimed call is skipped, to keep the
    whole suite's time bounded.
    """
    out = {}
    for name, fn in contenders.items():
        start = time.perf_counter()
        first = fn()
        warm_up = time.perf_counter() - start
        if name == "numconv":
            once, extra = traced_call(fn)
        elif warm_up > settings["slow_call"]:
            # Nothing compiles here, so a slow first call means one call per run;
            # a second untimed call would only cost time.
            once, extra = warm_up, None
        else:
            # PyTorch allocates outside tracemalloc's sight: no memory figure.
            once, extra = time_runs(fn, 1), None
        out[name] = {
            "result": first,
            "extra_bytes": extra,
            "once_s": once,
            "calls_per_run": max(1, math.ceil(settings["min_time"] / max(once, 1e-7))),
            "runs_s": [],
        }
    slowest = max(stats["once_s"] for stats in out.values())
    repeats = settings["repeats"]
    if slowest > settings["slow_call"]:
        repeats = min(repeats, settings["slow_repeats"])

    names = list(contenders)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            inner = out[name]["calls_per_run"]
            # Worker threads spin for a while after a parallel call before they
            # sleep (PyTorch's OpenMP ones noticeably): a run started straight
            # after the other contender's shares the cores with them. Measured
            # on resnet1d: whichever ran right after PyTorch took 30% longer,
            # and a pause of 10 ms removed the difference. After the pause,
            # fast calls get one untimed call to wake their own threads.
            time.sleep(SETTLE_S)
            if inner > 1:
                contenders[name]()
            out[name]["runs_s"].append(time_runs(contenders[name], inner))
    for stats in out.values():
        stats["median_s"] = statistics.median(stats["runs_s"])
    return out, repeats


def array_bytes(shape, dtype, direction):
    """Bytes a pass must at least read and write: each input and output once."""
    item = np.dtype(dtype).itemsize
    C_in_g = shape.C_in // shape.groups
    x = shape.N * shape.C_in * shape.L
    w = shape.C_out * C_in_g * shape.K
    y = shape.N * shape.C_out * shape.L_out
    if direction == "forward":
        return item * (x + w + shape.C_out + y)
    return item * (x + w + y + x + w + shape.C_out)


def bench_case(shape, dtype, direction, contenders, settings):
    """Time one (shape, dtype, pass); the row of results without the limits."""
    flops = shape.forward_flops * (1 if direction == "forward" else 2)
    timed, repeats = time_pair(contenders, settings)
    row = {
        "shape": shape.name,
        "dtype": dtype,
        "direction": direction,
        "repeats": repeats,
        "flops": flops,
        "bytes_moved": array_bytes(shape, dtype, direction),
    }
    for name, stats in timed.items():
        t = stats["median_s"]
        row[f"{name}_ms"] = 1e3 * t
        row[f"{name}_runs_ms"] = [1e3 * s for s in stats["runs_s"]]
        row[f"{name}_calls_per_run"] = stats["calls_per_run"]
        row[f"{name}_gflops"] = flops / t / 1e9
    row["numconv_extra_bytes"] = timed["numconv"]["extra_bytes"]
    row["ratio"] = None
    if "torch" in timed:
        row["ratio"] = row["numconv_ms"] / row["torch_ms"]
        row["max_rel_err_vs_torch"] = relative_error(
            timed["numconv"]["result"], timed["torch"]["result"]
        )
    return row


def add_limits(row, limits):
    """Add the attainable time and each library's share of it to a row."""
    t_compute = row["flops"] / (limits["peak_gflops"][row["dtype"]] * 1e9)
    t_memory = row["bytes_moved"] / (limits["bandwidth_gbs"] * 1e9)
    # Both ceilings hold at once, so the slower of the two is the attainable time.
    t_limit = max(t_compute, t_memory)
    row["bound"] = "compute" if t_compute >= t_memory else "memory"
    row["limit_ms"] = 1e3 * t_limit
    row["limit_compute_ms"] = 1e3 * t_compute
    row["limit_memory_ms"] = 1e3 * t_memory
    for name in ("numconv", "torch"):
        if f"{name}_ms" in row:
            row[f"{name}_share_of_limit"] = row["limit_ms"] / row[f"{name}_ms"]


# -- compile figures --------------------------------------------------------------


def compile_figures(shape, dtypes):
    """Cold and warm first-call cost per dtype, each in a fresh subprocess."""
    probe = PERF_DIR / "compile_probe.py"
    params = json.dumps(
        {k: getattr(shape, k) for k in ("N", "C_in", "C_out", "L", "K", "stride")}
        | {"padding": shape.padding, "dilation": shape.dilation, "groups": shape.groups}
    )
    figures = {"shape": shape.name}
    for dtype in dtypes:
        cache = tempfile.mkdtemp(prefix="numconv-perf-cache-")
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        try:
            figures[dtype] = {}
            for label in ("cold", "warm"):
                progress(f"compile figures: {dtype} {label} cache")
                out = subprocess.run(
                    [sys.executable, str(probe), dtype, params],
                    env=env,
                    cwd=REPO_DIR,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures[dtype][label] = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return figures


# -- reporting --------------------------------------------------------------------

_START = time.perf_counter()


def progress(message):
    elapsed = time.perf_counter() - _START
    print(f"[{elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table_rows(result):
    """Rows of the results table, as lists of strings, header first."""
    header = [
        "shape", "dtype", "pass", "runs", "numconv ms", "PyTorch ms", "ratio",
        "numconv GFLOP/s", "PyTorch GFLOP/s", "bound", "numconv % of limit",
        "PyTorch % of limit", "numconv extra MB",
    ]
    rows = [header]
    for r in result["results"]:
        torch_share = r.get("torch_share_of_limit")
        rows.append(
            [
                r["shape"] + ("*" if "F.pad" in r.get("torch_call", "") else ""),
                r["dtype"].replace("float", "f"),
                "fwd" if r["direction"] == "forward" else "bwd",
                str(r["repeats"]),
                _fmt(r["numconv_ms"], ".3g"),
                _fmt(r.get("torch_ms"), ".3g"),
                _fmt(r["ratio"], ".3g"),
                _fmt(r["numconv_gflops"], ".3g"),
                _fmt(r.get("torch_gflops"), ".3g"),
                r["bound"],
                _fmt(100 * r["numconv_share_of_limit"], ".1f"),
                _fmt(None if torch_share is None else 100 * torch_share, ".1f"),
                _fmt(r["numconv_extra_bytes"] / 2**20, ".1f"),
            ]
        )
    return rows


def text_table(result):
    rows = table_rows(result)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(result):
    rows = table_rows(result)
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("---" for _ in rows[0]) + "|")
    return "\n".join(lines)


def limits_summary(result):
    lim = result["limits"]
    return (
        f"limits: BLAS {lim['peak_gflops']['float32']:.0f} GFLOP/s float32, "
        f"{lim['peak_gflops']['float64']:.0f} GFLOP/s float64; "
        f"copy {lim['bandwidth_gbs']:.1f} GB/s"
    )


def compile_summary(result):
    figures = result.get("compile")
    if not figures:
        return "compile figures: skipped"
    parts = []
    for dtype in ("float32", "float64"):
        if dtype in figures:
            cold, warm = figures[dtype]["cold"], figures[dtype]["warm"]
            parts.append(
                f"{dtype} cold {cold['total_s']:.1f} s, warm {warm['total_s']:.1f} s"
            )
    head = f"compile (import to first forward + backward, {figures['shape']}): "
    return head + "; ".join(parts)


# -- main -------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m perf.bench",
        description="Time numconv against PyTorch CPU on the shape suite.",
    )
    parser.add_argument(
        "--shapes",
        default=",".join(s.name for s in SHAPES),
        help="comma-separated shape names (default: all): "
        + ", ".join(s.name for s in SHAPES),
    )
    parser.add_argument(
        "--float64",
        choices=("subset", "all", "none"),
        default="subset",
        help="which shapes are also timed in float64 (default: subset)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per case (default 5)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.02,
        help="seconds one timed run lasts at least; fast calls repeat within a run",
    )
    parser.add_argument(
        "--slow-call",
        type=float,
        default=2.0,
        help="a case where one call takes longer than this many seconds gets "
        "--slow-repeats timed runs instead of --repeats (default 2.0)",
    )
    parser.add_argument(
        "--slow-repeats",
        type=int,
        default=3,
        help="timed runs of a slow case (default 3; --long sets it to --repeats)",
    )
    parser.add_argument(
        "--long",
        action="store_true",
        help="longer, more precise run: 15 repeats of >= 0.2 s, float64 on all shapes",
    )
    parser.add_argument("--no-torch", action="store_true", help="time numconv only")
    parser.add_argument(
        "--compile-shape",
        default="tiny",
        choices=sorted(BY_NAME),
        help="shape of the first calls in the compile figures (default tiny)",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compile subprocesses"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help="folder for latest.json, a dated copy and ratios.png",
    )
    parser.add_argument("--no-plot", action="store_true", help="write no PNG chart")
    parser.add_argument(
        "--quick-limits",
        action="store_true",
        help="measure the limits briefly on small arrays, for smoke tests; the "
        "figures then understate the machine",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="RESULTS_JSON",
        help="print a results file's table as Markdown (for the README); time nothing",
    )
    args = parser.parse_args(argv)
    args.limits = "quick" if args.quick_limits else "long" if args.long else "default"
    if args.long:
        args.repeats = max(args.repeats, 15)
        args.min_time = max(args.min_time, 0.2)
        args.float64 = "all"
        args.slow_repeats = args.repeats
    if args.repeats < 1 or args.slow_repeats < 1:
        parser.error(
            f"--repeats and --slow-repeats must be >= 1, got {args.repeats} "
            f"and {args.slow_repeats}"
        )
    names = [n for n in args.shapes.split(",") if n]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        parser.error(f"unknown shapes {unknown}; known: {', '.join(BY_NAME)}")
    args.shape_list = [BY_NAME[n] for n in names]
    return args


def cases(args):
    out = []
    for shape in args.shape_list:
        out.append((shape, "float32"))
    for shape in args.shape_list:
        if args.float64 == "all" or (args.float64 == "subset" and shape.float64):
            out.append((shape, "float64"))
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.markdown:
        result = json.loads(args.markdown.read_text())
        print(markdown_table(result))
        print()
        print(limits_summary(result))
        print(compile_summary(result))
        return
    use_torch = torch is not None and not args.no_torch
    threads = numba.get_num_threads()
    if use_torch:
        torch.set_num_threads(threads)

    # A tiny parallel call loads the threading layer, so it can be reported.
    _stream_copy(np.zeros(4), np.zeros(4))
    result = {
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
        "command": " ".join(["python -m perf.bench", *(argv or sys.argv[1:])]),
        "machine": machine_info(threads),
        "settings": {
            "repeats": args.repeats,
            "min_time_s": args.min_time,
            "float64": args.float64,
            "limits": args.limits,
            "slow_call_s": args.slow_call,
            "slow_repeats": args.slow_repeats,
            "shapes": [s.name for s in args.shape_list],
            "statistic": "median of the timed runs, each run the mean of its calls",
        },
        "shapes": {s.name: s.as_dict() for s in args.shape_list},
        "torch_method": TORCH_METHOD if use_torch else None,
        "memory_method": MEMORY_METHOD,
        # Other work on the machine slows both libraries; this says how much there was.
        "load_average_start": list(os.getloadavg()),
    }

    progress("measuring the machine's limits (BLAS product, streaming copy)")
    first_limits = measure_limits(args.limits)
    result["memory_probe"] = memory_probe()
    if not result["memory_probe"]["ok"]:
        progress(f"warning: tracemalloc probe failed: {result['memory_probe']}")

    settings = {
        "repeats": args.repeats,
        "min_time": args.min_time,
        "slow_call": args.slow_call,
        "slow_repeats": args.slow_repeats,
    }
    todo = cases(args)
    rows = []
    for i, (shape, dtype) in enumerate(todo, 1):
        x, w, b, g = make_inputs(shape, dtype)
        forward, backward = numconv_calls(shape, x, w, b, g)
        per_direction = {
            "forward": {"numconv": forward},
            "backward": {"numconv": backward},
        }
        torch_call = None
        if use_torch:
            t_forward, t_backward, torch_call = torch_calls(shape, x, w, b, g)
            per_direction["forward"]["torch"] = t_forward
            per_direction["backward"]["torch"] = t_backward
        for direction, contenders in per_direction.items():
            progress(f"[{i}/{len(todo)}] {shape.name} {dtype} {direction}")
            row = bench_case(shape, dtype, direction, contenders, settings)
            if torch_call is not None:
                row["torch_call"] = torch_call
            rows.append(row)
            progress(
                f"    numconv {row['numconv_ms']:.3g} ms"
                + (f", PyTorch {row['torch_ms']:.3g} ms" if use_torch else "")
            )
    result["results"] = rows

    progress("measuring the machine's limits again")
    result["limits"] = best_limits(first_limits, measure_limits(args.limits))
    for row in rows:
        add_limits(row, result["limits"])
    progress(limits_summary(result))

    if not args.no_compile:
        dtypes = ["float32", "float64"] if args.float64 != "none" else ["float32"]
        result["compile"] = compile_figures(BY_NAME[args.compile_shape], dtypes)
    result["total_s"] = time.perf_counter() - _START
    result["load_average_end"] = list(os.getloadavg())

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = json.dumps(result, indent=1)
    for name in ("latest.json", f"run-{stamp}.json"):
        tmp = args.out / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out / name)
    if not args.no_plot:
        from perf.plot import plot_ratios

        plot_ratios(result, args.out / "ratios.png")

    print(text_table(result))
    print(limits_summary(result))
    print(compile_summary(result))
    if any("F.pad" in r.get("torch_call", "") for r in rows):
        print("* PyTorch ran F.pad, then conv1d with padding=0 (it has no causal mode)")
    load = result["load_average_start"][0], result["load_average_end"][0]
    print(
        f"total {result['total_s']:.0f} s; load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end; results in {args.out / 'latest.json'}"
    )


if __name__ == "__main__":
    main()
