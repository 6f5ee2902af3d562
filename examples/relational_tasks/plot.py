#!/usr/bin/env python3
"""Learning curves and the table of final accuracy of a relational task's CSV (pair_match):

    .venv/bin/python examples/relational_tasks/plot.py pair_match.csv [--png curves.png]

One panel per training-set size: held-out accuracy against training step, the mean over seeds as a
line and the range of the seeds as a band, for DAT and the Transformer; dotted lines show the
accuracy on objects never seen in training. Prints the final accuracy as a Markdown table.
"""

import argparse
import csv
import statistics
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--png", default=None)
    p.add_argument("--title", default="Which pair matches (6 classes, chance 1/6)")
    args = p.parse_args()
    rows = list(csv.DictReader(open(args.csv)))
    curves = defaultdict(lambda: defaultdict(list))  # (model, size) -> step -> [(test, ood)]
    params = {}
    for r in rows:
        key = (r["model"], int(r["train_size"]))
        curves[key][int(r["step"])].append((float(r["test_acc"]), float(r["ood_acc"])))
        params[r["model"]] = int(r["params"])
    sizes = sorted({k[1] for k in curves})
    models = sorted({k[0] for k in curves})
    colours = {"DAT": "tab:red", "Transformer": "tab:blue"}

    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 3.6), sharey=True)
    axes = axes if len(sizes) > 1 else [axes]
    for ax, size in zip(axes, sizes):
        for model in models:
            steps = sorted(curves[(model, size)])
            test = [[t for t, _ in curves[(model, size)][s]] for s in steps]
            ood = [[o for _, o in curves[(model, size)][s]] for s in steps]
            c = colours.get(model)
            ax.plot(steps, [statistics.mean(v) for v in test], color=c,
                    label=f"{model} ({params[model]:,} params)")
            ax.fill_between(steps, [min(v) for v in test], [max(v) for v in test], color=c,
                            alpha=0.2)
            ax.plot(steps, [statistics.mean(v) for v in ood], color=c, linestyle=":")
        ax.axhline(1 / 6, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(f"{size} training images")
        ax.set_xlabel("training step")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy (dotted: unseen objects)")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout()
    png = args.png or args.csv.rsplit(".", 1)[0] + ".png"
    fig.savefig(png, dpi=110)
    print(f"wrote {png}\n")

    n_seeds = len(next(iter(curves.values()))[max(next(iter(curves.values())))])
    print(f"Final accuracy (mean over {n_seeds} seeds, min-max in brackets):\n")
    print("| training images | " + " | ".join(f"{m} test | {m} unseen objects" for m in models)
          + " |")
    print("|--:|" + "--:|" * (2 * len(models)))
    for size in sizes:
        cells = []
        for model in models:
            last = curves[(model, size)][max(curves[(model, size)])]
            for i in (0, 1):
                v = [x[i] for x in last]
                cells.append(f"{statistics.mean(v):.3f} [{min(v):.2f}-{max(v):.2f}]")
        print(f"| {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
