"""The benchmark harness runs end to end and writes the results it promises.

Runs ``python -m perf.bench`` on the ``tiny`` shape with one timed run, no
compile subprocesses and brief limits, into a temporary folder, and checks the
JSON's fields and their consistency. No timing is asserted: timings on a shared
machine are not a test. Took 40 s on a busy 2-core machine (load average 8),
mostly importing PyTorch and NumPy in three subprocesses.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf")
    proc = _run(
        "-m", "perf.bench", "--shapes", "tiny", "--repeats", "1", "--no-compile",
        "--quick-limits", "--out", str(out),
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc, json.loads((out / "latest.json").read_text())


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_top_level_fields(bench_run):
    _, _, result = bench_run
    for key in (
        "date", "command", "machine", "settings", "shapes", "limits", "memory_method",
        "memory_probe", "results", "total_s", "load_average_start", "load_average_end",
    ):
        assert key in result, key
    machine = result["machine"]
    for key in ("cpu_model", "cores", "threads", "numba", "numpy", "numconv"):
        assert machine[key], key
    assert "OPENBLAS_CORETYPE" in machine
    assert machine["OPENBLAS_CORETYPE"] == os.environ.get("OPENBLAS_CORETYPE")
    assert result["settings"]["shapes"] == ["tiny"]
    assert result["settings"]["repeats"] == 1
    assert "compile" not in result


def test_limits_measured(bench_run):
    _, _, result = bench_run
    limits = result["limits"]
    assert _positive(limits["peak_gflops"]["float32"])
    assert _positive(limits["peak_gflops"]["float64"])
    assert _positive(limits["bandwidth_gbs"])
    # The kept figure is the better of the measurements at both ends of the run.
    for key in ("start", "end"):
        assert limits[key]["peak_gflops"]["float32"] <= limits["peak_gflops"]["float32"]
        assert limits[key]["bandwidth_gbs"] <= limits["bandwidth_gbs"]
    assert result["settings"]["limits"] == "quick"


def test_memory_probe_sees_numpy_and_numba(bench_run):
    _, _, result = bench_run
    probe = result["memory_probe"]
    assert probe["ok"], probe
    for key, expected in probe["expected_at_least"].items():
        assert probe["seen"][key] >= expected


def test_rows(bench_run):
    _, _, result = bench_run
    rows = result["results"]
    # tiny is in the float64 subset: two dtypes times two passes.
    assert {(r["dtype"], r["direction"]) for r in rows} == {
        (d, p) for d in ("float32", "float64") for p in ("forward", "backward")
    }
    shape = result["shapes"]["tiny"]
    forward_flops = 2 * shape["N"] * shape["C_out"] * shape["C_in"] * shape["K"] * 64
    for r in rows:
        assert r["shape"] == "tiny"
        assert r["flops"] == forward_flops * (1 if r["direction"] == "forward" else 2)
        assert _positive(r["numconv_ms"])
        assert len(r["numconv_runs_ms"]) == 1
        assert r["numconv_calls_per_run"] >= 1
        assert math.isclose(r["numconv_gflops"], r["flops"] / r["numconv_ms"] / 1e6)
        assert r["bound"] in ("compute", "memory")
        assert math.isclose(
            r["limit_ms"], max(r["limit_compute_ms"], r["limit_memory_ms"])
        )
        share = r["limit_ms"] / r["numconv_ms"]
        assert math.isclose(r["numconv_share_of_limit"], share)
        assert isinstance(r["numconv_extra_bytes"], int)
        assert r["numconv_extra_bytes"] >= 0
        if HAVE_TORCH:
            assert _positive(r["torch_ms"])
            assert math.isclose(r["ratio"], r["numconv_ms"] / r["torch_ms"])
            assert r["torch_call"] == "F.conv1d(x, w, b, padding=1)"
            # Both libraries computed the same thing (a wrong timing is no timing).
            tol = 1e-4 if r["dtype"] == "float32" else 1e-10
            assert r["max_rel_err_vs_torch"] < tol
        else:
            assert r["ratio"] is None


def test_table_and_chart(bench_run):
    out, proc, _ = bench_run
    assert "numconv ms" in proc.stdout and "tiny" in proc.stdout
    if HAVE_TORCH:
        assert (out / "ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_shape_is_refused():
    proc = _run("-m", "perf.bench", "--shapes", "tiny,nope", "--no-compile")
    assert proc.returncode != 0
    assert "nope" in proc.stderr


def test_compile_probe_reports_times():
    # With the cache as it is (normally warm), so the test does not compile
    # everything from scratch; the harness runs it with a cold and a warm cache.
    shape = dict(N=1, C_in=4, C_out=8, L=64, K=3, stride=1, padding=1, dilation=1,
                 groups=1)
    proc = _run("perf/compile_probe.py", "float32", json.dumps(shape))
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("import_s", "first_forward_s", "first_backward_s", "total_s"):
        assert _positive(figures[key]), key
    parts = ("import_s", "first_forward_s", "first_backward_s")
    total = sum(figures[p] for p in parts)
    assert math.isclose(figures["total_s"], total, rel_tol=1e-6)
