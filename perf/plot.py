"""Chart of the time ratios numconv / PyTorch per shape, from a results JSON.

Usage: python -m perf.plot [RESULTS_JSON [PNG]]
(defaults: perf/results/latest.json and ratios.png beside it)
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

COLOURS = {"forward": "#3b6ea8", "backward": "#d9822b"}


def plot_ratios(result, path):
    """Write a horizontal bar chart of numconv time / PyTorch time, log scale.

    One row per (shape, dtype), one bar per pass. Rows without a PyTorch figure
    are left out; nothing is written when no row has one.
    """
    rows = [r for r in result["results"] if r.get("ratio") is not None]
    if not rows:
        return None
    labels, ratios = [], {}
    for r in rows:
        label = f"{r['shape']} {r['dtype'].replace('float', 'f')}"
        if "F.pad" in r.get("torch_call", ""):
            label += "*"
        if label not in labels:
            labels.append(label)
        ratios[(label, r["direction"])] = r["ratio"]

    height = 0.38
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(labels) + 1.8))
    for j, direction in enumerate(("forward", "backward")):
        ys, xs = [], []
        for i, label in enumerate(labels):
            if (label, direction) in ratios:
                ys.append(i + (j - 0.5) * height)
                xs.append(ratios[(label, direction)])
        ax.barh(ys, xs, height=height, color=COLOURS[direction], label=direction)
        for y, x in zip(ys, xs):
            ax.annotate(
                f"{x:.2g}",
                (x, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )

    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    lo = min(ratios.values())
    hi = max(ratios.values())
    ax.set_xlim(min(lo, 1.0) / 1.6, max(hi, 1.0) * 2.5)
    ax.set_xlabel(
        "numconv time / PyTorch time (log scale; < 1: numconv faster)\n"
        "* PyTorch padded with F.pad first (it has no causal mode)",
        fontsize=9,
    )
    machine = result["machine"]
    load = result.get("load_average_start", [None])[0]
    busy = "" if load is None else f", load average {load:.1f} at the start"
    where = f"{machine['cpu_model']}, {machine['cores']} cores, {result['date'][:10]}"
    ax.set_title(
        f"numconv vs PyTorch {machine.get('torch')} CPU, {machine['threads']} threads\n"
        f"{where}{busy}",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else Path(__file__).parent / "results" / "latest.json"
    dst = Path(argv[1]) if len(argv) > 1 else src.with_name("ratios.png")
    plot_ratios(json.loads(src.read_text()), dst)
    print(dst)


if __name__ == "__main__":
    main()
