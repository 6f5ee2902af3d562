#!/usr/bin/env python3
"""Plots the benchmark results (benchmarks/results/*.json, written by benchmarks/bench_relational.py)
as the images of docs/performance.md: time and peak memory against the sequence length, ours
against the reference, for every module and mode in the files.

    .venv/bin/python docs/plot_benchmarks.py [RESULTS.json ...] [--out docs/images]

Rows of later files replace rows of earlier ones with the same (module, activation, mode, n), so
the n = 8192 training runs made with a larger memory allowance fill the gaps of the full run.
Median of the repeated wall times; memory is the rise of the process's peak RSS (see
benchmarks/README.md). Reference runs skipped for their memory estimate have no point.
"""

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODULES = {
    "relational_attention": "RelationalAttention",
    "dual_attention": "DualAttention",
    "language_model": "DAT language model, 2 layers",
}
MODES = {"forward": "forward", "train": "training step"}
COLORS = {"ours": "#1f6fb4", "reference": "#d9641e"}
STYLES = {"identity": "-", "tanh": "--"}


def load(paths):
    rows, settings = {}, None
    for path in paths:
        data = json.loads(Path(path).read_text())
        settings = settings or data["settings"]
        for r in data["rows"]:
            rows[(r["module"], r["rel_activation"], r["mode"], r["n"])] = r
    return rows, settings


def point(result, what):
    if not result or "error" in result:
        return None
    return statistics.median(result["times_ms"]) if what == "ms" else result["peak_mb"]


def plot(rows, settings, what, out):
    modules = [m for m in MODULES if any(k[0] == m for k in rows)]
    fig, axes = plt.subplots(len(modules), len(MODES), figsize=(10, 3.2 * len(modules)),
                             squeeze=False, constrained_layout=True)
    for i, module in enumerate(modules):
        for j, mode in enumerate(MODES):
            ax = axes[i][j]
            for act, style in STYLES.items():
                keys = sorted(k for k in rows if k[:3] == (module, act, mode))
                for who, color in COLORS.items():
                    pts = [(k[3], point(rows[k].get(who), what)) for k in keys]
                    pts = [(n, v) for n, v in pts if v is not None]
                    if pts:
                        ax.plot(*zip(*pts), style, color=color, marker="o", markersize=3,
                                label=f"{who}, {act} relations")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{MODULES[module]}: {MODES[mode]}", fontsize=10)
            ax.set_xlabel("sequence length n")
            ax.set_ylabel("wall time (ms)" if what == "ms" else "peak memory (MB)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    title = "time" if what == "ms" else "peak memory"
    fig.suptitle(
        f"{title}, ours against dual-attention 0.0.7 ({settings['device']}, {settings['dtype']}, "
        f"{settings['threads']} threads, d_model {settings['d_model']}, batch {settings['batch']}, "
        "causal)", fontsize=10)
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="*", default=[
        ROOT / "benchmarks/results/cpu_2threads.json",
        ROOT / "benchmarks/results/cpu_2threads_train8192.json"])
    parser.add_argument("--out", default=ROOT / "docs/images", type=Path)
    args = parser.parse_args()
    rows, settings = load(args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, settings, "ms", args.out / "bench_cpu_time.png")
    plot(rows, settings, "mb", args.out / "bench_cpu_memory.png")


if __name__ == "__main__":
    main()
