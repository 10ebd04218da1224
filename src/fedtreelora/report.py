"""Tables and plots from a sweep's stored result files; needs nothing but the files.

``fedtreelora report OUT`` reads ``OUT/grid.json`` and every ``OUT/<variant>/<task>/seed<k>/results.json``
and writes ``OUT/cells.csv``, ``OUT/tables.md`` and ``OUT/plots/*.png``.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .plots import plot_tree, plt

Cells = dict[tuple[str, str], list[dict[str, Any]]]  # (variant, task) -> results of its seeds


def load_cells(out: Path) -> Cells:
    cells: Cells = defaultdict(list)
    for path in sorted(out.glob("*/*/seed*/results.json")):
        result = json.loads(path.read_text())
        cell = result["cell"]
        cells[(cell["variant"], cell["task"])].append(result)
    return cells


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}" + ("" if len(values) >= 3 else f" (n={len(values)})")


def markdown_table(table: dict[str, Any], cells: Cells) -> str:
    """Variants as rows, tasks as columns, plus the average over tasks (only over complete rows)."""
    tasks = table["tasks"]
    header = ["variant", *tasks, "avg"] + (["majority baseline"] if len(tasks) == 1 else [])
    lines = [f"### {table['title']}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in table["variants"]:
        row, per_task = [variant], []
        for task in tasks:
            accs = [r["mean_accuracy"] for r in cells.get((variant, task), [])]
            row.append(mean_std(accs))
            if accs:
                per_task.append(statistics.fmean(accs))
        row.append(f"{100 * statistics.fmean(per_task):.2f}" if len(per_task) == len(tasks) else "–")
        if len(tasks) == 1:
            base = [r["majority_baseline"] for r in cells.get((variant, tasks[0]), [])]
            row.append(f"{100 * statistics.fmean(base):.2f}" if base else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_csv(cells: Cells, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["variant", "task", "seed", "mean_accuracy", "majority_baseline", "k_per_layer", "seconds"]
        )
        for (variant, task), results in sorted(cells.items()):
            for r in sorted(results, key=lambda r: r["seed"]):
                topology = r["topology"]
                ks = " ".join(map(str, topology["k_per_layer"])) if topology else ""
                row = [variant, task, r["seed"], r["mean_accuracy"], r["majority_baseline"], ks]
                writer.writerow([*row, round(r["timing"]["total_seconds"], 1)])


def plot_k_per_task(cells: Cells, variant: str, path: Path) -> bool:
    """K per layer of ``variant`` on every task (one line per task and seed)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    drawn = False
    for (v, task), results in sorted(cells.items()):
        if v != variant:
            continue
        for r in results:
            if r["topology"]:
                ks = r["topology"]["k_per_layer"]
                ax.plot(range(len(ks)), ks, marker="o", alpha=0.7, label=f"{task} s{r['seed']}")
                drawn = True
    if drawn:
        ax.set_xlabel("layer (0 = shallowest)")
        ax.set_ylabel("clusters K")
        ax.set_title(f"{variant}: clusters per layer")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def plot_accuracy_per_round(cells: Cells, variants: list[str], task: str, path: Path) -> bool:
    """Mean over seeds of the mean personalised accuracy, per evaluated round, one line per variant."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = False
    for variant in variants:
        results = cells.get((variant, task), [])
        by_round: dict[int, list[float]] = defaultdict(list)
        for r in results:
            for row in r["rounds"]:
                if row["mean_accuracy"] is not None:
                    by_round[row["round"] + 1].append(row["mean_accuracy"])
        if by_round:
            rounds = sorted(by_round)
            ax.plot(rounds, [statistics.fmean(by_round[k]) for k in rounds], marker="o", label=variant)
            drawn = True
    if drawn:
        ax.set_xlabel("round")
        ax.set_ylabel("mean personalised accuracy")
        ax.set_title(f"{task}: accuracy per round (mean over seeds)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def write_report(out: Path) -> list[Path]:
    """Regenerate every table and plot of a sweep from its stored files; returns what was written."""
    grid = json.loads((out / "grid.json").read_text())
    cells = load_cells(out)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    written = [out / "cells.csv", out / "tables.md"]
    write_csv(cells, written[0])
    written[1].write_text("\n\n".join(markdown_table(t, cells) for t in grid["tables"]) + "\n")
    for table in grid["tables"]:
        for task in table["tasks"]:
            path = plots / f"accuracy_{table['name']}_{task}.png"
            if plot_accuracy_per_round(cells, list(table["variants"]), task, path):
                written.append(path)
    variants = {v for t in grid["tables"] for v in t["variants"]}
    for variant in sorted(v for v in variants if v.startswith("fedtreelora")):
        path = plots / f"k_per_layer_{variant}.png"
        if plot_k_per_task(cells, variant, path):
            written.append(path)
    for (variant, task), results in sorted(cells.items()):
        first = min(results, key=lambda r: r["seed"])
        topology = first["topology"]
        if task.startswith("hetero") and topology and topology.get("linkage"):
            labels = [f"c{c['id']}\n{c['task']}" for c in first["clients"]]
            path = plots / f"tree_{variant}_{task}.png"
            plot_tree(topology, path, labels)
            written.append(path)
    return written
