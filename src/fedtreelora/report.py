"""Tables and plots from a sweep's stored result files; needs nothing but the files.

``fedtreelora report OUT`` reads ``OUT/grid.json`` and every ``OUT/<variant>/<task>/seed<k>/results.json``
and writes ``OUT/cells.csv``, ``OUT/tables.md`` and ``OUT/plots/*.png``.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .plots import leaf_labels, plot_allocation, plot_tree, plt
from .results import allocates, mean_score, metric_of, round_score
from .topology import cut

Cells = dict[tuple[str, str], list[dict[str, Any]]]  # (variant, task) -> results of its seeds


def load_cells(out: Path) -> Cells:
    cells: Cells = defaultdict(list)
    for path in sorted(out.glob("*/*/seed*/results.json")):
        result = json.loads(path.read_text())
        cell = result["cell"]
        cells[(cell["variant"], cell["task"])].append(result)
    return cells


def mean_std(values: list[float], sign: str = "") -> str:
    """``values`` (fractions) as percent "mean ± std"; ``sign="+"`` prints the sign of a difference."""
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:{sign}.2f} ± {std:.2f}" + seeds_note(values)


def columns(table: dict[str, Any], cells: Cells) -> list[tuple[str, str]]:
    """(task, group) per column: one per task, or with ``by_group`` one per group of each task's clients
    (in client order; group "" stands for the whole task)."""
    if not table.get("by_group"):  # .get: a grid.json written before the option existed lacks it
        return [(task, "") for task in table["tasks"]]
    out: dict[tuple[str, str], None] = {}
    for task in table["tasks"]:
        for variant in table["variants"]:
            for r in cells.get((variant, task), []):
                out |= dict.fromkeys((task, g) for g in r.get("groups", {}))
    return list(out)


def column_score(result: dict[str, Any], group: str) -> float:
    return float(result["groups"][group]) if group else mean_score(result)


def markdown_table(
    table: dict[str, Any], cells: Cells, over_majority: bool = False, over: str = "", over_task: str = ""
) -> str:
    """Variants as rows, tasks (or task groups) as columns, plus the average over columns (complete rows).

    The best mean per column is bold; the last row is the majority-label predictor on the same clients
    (classification only). With ``over_majority`` every seed's accuracy is first reduced by that
    predictor's on the same seed: the label skew, and with it the majority level, moves a lot between seeds
    (partitions differ), and the paired difference removes that shared part, so its spread is the
    method's, not the partition's. ``over`` names a variant instead (e.g. local training): each seed minus
    that variant's same seed. ``over_task`` names a task (column) instead: each seed minus the same variant's
    same seed on that task (e.g. a failure rate minus no failures: what each method loses).
    """
    cols = columns(table, cells)
    if not cols:  # by_group with none of the table's cells finished yet: its groups are not known
        return ""

    def values(variant: str, col: tuple[str, str]) -> list[float]:
        (task, group), results = col, cells.get((variant, col[0]), [])
        if over or over_task:  # seeds whose reference has not finished are left out
            reference = cells.get((over, task) if over else (variant, over_task), [])
            ref = {r["seed"]: column_score(r, group) for r in reference}
            return [column_score(r, group) - ref[r["seed"]] for r in results if r["seed"] in ref]
        if over_majority:
            return [
                mean_score(r) - r["majority_baseline"] for r in results if r["majority_baseline"] is not None
            ]
        return [column_score(r, group) for r in results]

    header = ["variant", *(group or task for task, group in cols), "avg"]
    paired = over or over_task or ("the majority label" if over_majority else "")  # as in values()
    title = table["title"] + (f": minus {paired}, paired per seed" if paired else "")
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    series = {(v, c): values(v, c) for v in table["variants"] for c in cols}
    means = {key: statistics.fmean(vs) for key, vs in series.items() if vs}
    # The reference variant of ``over`` is +0.00 by construction: it is the yardstick, not a contender.
    contenders = {key: m for key, m in means.items() if key[0] != over}
    best = {c: max((m for (_, col), m in contenders.items() if col == c), default=None) for c in cols}
    sign = "+" if paired else ""
    for variant in table["variants"]:
        row = [variant]
        for col in cols:
            text = mean_std(series[(variant, col)], sign)
            is_best = (variant, col) in contenders and contenders[(variant, col)] == best[col]
            row.append(f"**{text}**" if is_best else text)
        per_col = [means[(variant, c)] for c in cols if (variant, c) in means]
        row.append(f"{100 * statistics.fmean(per_col):{sign}.2f}" if len(per_col) == len(cols) else "–")
        lines.append("| " + " | ".join(row) + " |")
    if paired:
        return "\n".join(lines)
    row = ["*majority label*"]
    level: list[float] = []  # per task, mean over its seeds
    for task, _ in cols:
        majority = majority_baseline(cells, task, table["variants"])
        if majority:
            level.append(statistics.fmean(majority))
        row.append(f"{100 * level[-1]:.2f}{seeds_note(majority)}" if majority else "–")
    row.append(f"{100 * statistics.fmean(level):.2f}" if len(level) == len(cols) else "–")
    results = [r for v in table["variants"] for task, _ in cols for r in cells.get((v, task), [])]
    if any(r.get("majority_baseline") is not None for r in results):  # generation has no majority label
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def client_scores(result: dict[str, Any]) -> dict[int, float]:
    return {int(c["id"]): float(c["score"] if "score" in c else c["accuracy"]) for c in result["clients"]}


def budget_groups(result: dict[str, Any]) -> dict[float, list[int]]:
    """Client ids per layer budget (Fed-HeLLo); every client at 1.0 without an allocation."""
    by: dict[float, list[int]] = {}
    for c in result["clients"]:
        by.setdefault(float(c.get("budget", 1.0)), []).append(int(c["id"]))
    return dict(sorted(by.items()))


def budget_table(table: dict[str, Any], cells: Cells) -> str:
    """Per variant and budget group, the group's clients' mean score over the table's tasks and seeds; with
    ``over``, minus the same clients (same ids, task and seed) under that variant: who pays for a budget."""
    over = table.get("over", "")
    results = {v: [r for task in table["tasks"] for r in cells.get((v, task), [])] for v in table["variants"]}
    budgets = sorted({b for rs in results.values() for r in rs for b in budget_groups(r)})
    if len(budgets) < 2:
        return ""
    ref = {
        (task, r["seed"]): client_scores(r) for task in table["tasks"] for r in cells.get((over, task), [])
    }

    def values(variant: str, budget: float) -> list[float]:
        out = []
        for task in table["tasks"]:
            for r in cells.get((variant, task), []):
                ids, scores = budget_groups(r).get(budget), client_scores(r)
                if not ids:
                    continue
                mine = statistics.fmean(scores[i] for i in ids)
                if not over:
                    out.append(mine)
                elif (task, r["seed"]) in ref:
                    out.append(mine - statistics.fmean(ref[(task, r["seed"])][i] for i in ids))
        return out

    title = (
        table["title"] + ": by the clients' layer budget" + (f", minus {over} (same clients)" if over else "")
    )
    header = ["variant", *(f"{100 * b:g} % layers" for b in budgets)]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in table["variants"]:
        row = [variant] + [mean_std(values(variant, b), "+" if over else "") for b in budgets]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def majority_baseline(cells: Cells, task: str, variants: Iterable[str]) -> list[float]:
    """Per seed, the accuracy of always answering a client's majority training label, over ``variants``.

    Empty when those variants drew different partitions for one seed (a table that varies the skew or
    the rows): then no single level exists, and only the paired table ("minus the majority label") means
    anything.
    """
    by_seed: dict[int, set[float]] = defaultdict(set)
    for variant in variants:
        for r in cells.get((variant, task), []):
            if r.get("majority_baseline") is not None:  # generation has no majority label
                by_seed[r["seed"]].add(round(float(r["majority_baseline"]), 9))
    if any(len(levels) > 1 for levels in by_seed.values()):
        return []
    return [next(iter(by_seed[seed])) for seed in sorted(by_seed)]


def seeds_note(values: list[float]) -> str:
    return "" if len(values) >= 3 else f" (n={len(values)})"


def purity(labels: Sequence[int], tasks: Sequence[str]) -> float:
    """Share of clients whose cluster's most common task is their own (1 = every cluster is one task)."""
    counts = Counter(zip(labels, tasks, strict=True))
    top: dict[int, int] = defaultdict(int)
    for (cluster, _), n in counts.items():
        top[cluster] = max(top[cluster], n)
    return sum(top.values()) / len(tasks)


def pure_at(z: np.ndarray, labels: Sequence[str]) -> int:
    """The smallest K whose cut of the tree puts every label (task or group) in clusters of its own."""
    return next(k for k in range(1, len(labels) + 1) if purity(cut(z, k).tolist(), labels) == 1.0)


def task_split_table(cells: Cells) -> str:
    """Task-heterogeneous runs with a tree: K and task purity per layer, and the K where tasks separate;
    where the tasks come in groups (FLAN), the same for groups."""
    rows: list[list[str]] = []
    grouped = False
    for (variant, task), results in sorted(cells.items()):
        for r in sorted(results, key=lambda r: r["seed"]):
            topology = r["topology"]
            tasks = [c.get("task", "") for c in r["clients"]]
            groups = [c.get("group", "") for c in r["clients"]]
            if not topology or not topology.get("linkage") or len(set(tasks)) < 2:
                continue
            z = np.asarray(topology["linkage"], dtype=np.float64)
            ks = " ".join(map(str, topology["k_per_layer"]))
            row = [variant, task, str(r["seed"]), ks]
            row += [
                " ".join(f"{purity(p, tasks):.2f}" for p in topology["partitions"]),
                str(pure_at(z, tasks)),
            ]
            if 1 < len(set(groups)) < len(set(tasks)):
                grouped = True
                row += [" ".join(f"{purity(p, groups):.2f}" for p in topology["partitions"])]
                row += [str(pure_at(z, groups))]
            rows.append(row)
    if not rows:
        return ""
    header = ["variant", "task", "seed", "K per layer", "purity per layer", "task-pure at K"]
    text = (
        "Purity per layer: share of clients whose cluster's most common task is their own (1/#tasks when "
        "all share one cluster, 1 when every cluster holds one task). *Task-pure at K* is the smallest "
        "number of clusters at which the tree's cut puts each task in clusters of its own."
    )
    if grouped:
        header += ["group purity per layer", "group-pure at K"]
        text += (
            " *Group purity* is the same with task groups in place of tasks: 1 where every cluster holds one "
            "group's tasks; a layer with group purity 1 but task purity below 1 keeps each group's tasks "
            "together."
        )
    lines = ["### Does the tree split by task?", "", text, "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row + ["–"] * (len(header) - len(row))) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(cells: Cells, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["variant", "task", "seed", "metric", "mean_score", "majority_baseline", "k_per_layer", "seconds"]
        )
        for (variant, task), results in sorted(cells.items()):
            for r in sorted(results, key=lambda r: r["seed"]):
                topology = r["topology"]
                ks = " ".join(map(str, topology["k_per_layer"])) if topology else ""
                row = [variant, task, r["seed"], metric_of(r), mean_score(r), r["majority_baseline"], ks]
                writer.writerow([*row, round(r["timing"]["total_seconds"], 1)])


def plot_k_per_task(cells: Cells, variant: str, path: Path) -> bool:
    """K per layer of ``variant``: one line per task (mean over seeds), bars from the fewest to the most."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    series = {
        task: np.array([r["topology"]["k_per_layer"] for r in results if r["topology"]], dtype=float)
        for (v, task), results in sorted(cells.items())
        if v == variant
    }
    series = {task: ks for task, ks in series.items() if ks.size}  # (seeds, layers)
    for i, (task, ks) in enumerate(series.items()):
        x = np.arange(ks.shape[1]) + 0.06 * (i - (len(series) - 1) / 2)  # small offsets: lines overlap
        mean = ks.mean(axis=0)
        err = np.stack([mean - ks.min(axis=0), ks.max(axis=0) - mean])
        seeds = f"{ks.shape[0]} seed" + ("s" if ks.shape[0] > 1 else "")
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=f"{task} ({seeds})")
    if series:
        ax.set_xlabel("layer (0 = shallowest)")
        ax.set_ylabel("clusters K")
        ax.set_title(f"{variant}: clusters per layer (mean, min–max over seeds)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return bool(series)


def plot_accuracy_per_round(cells: Cells, variants: list[str], task: str, path: Path) -> bool:
    """Mean over seeds of the mean personalised score, per evaluated round, one line per variant."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn, metric = False, "accuracy"
    for variant in variants:
        results = cells.get((variant, task), [])
        by_round: dict[int, list[float]] = defaultdict(list)
        for r in results:
            metric = metric_of(r)
            for row in r["rounds"]:
                score = round_score(row)
                if score is not None:
                    by_round[row["round"] + 1].append(score)
        if by_round:
            rounds = sorted(by_round)
            width = 2.5 if variant == "fedtreelora" else 1.5  # the flagship stands out among the baselines
            means = [statistics.fmean(by_round[k]) for k in rounds]
            ax.plot(rounds, means, marker="o", linewidth=width, label=variant)
            drawn = True
    majority = majority_baseline(cells, task, variants)
    if drawn and majority:
        ax.axhline(
            statistics.fmean(majority), color="grey", linestyle="--", linewidth=1, label="majority label"
        )
    if drawn:
        ax.set_xlabel("round")
        ax.set_ylabel(f"mean personalised {metric}")
        ax.set_title(f"{task}: {metric} per round (mean over seeds)")
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
    finished = [r for results in cells.values() for r in results]
    seconds = sum(r["timing"]["total_seconds"] for r in finished)
    summary = f"{len(finished)} finished cells, {seconds / 3600:.1f} hours of run time in total."
    tables = []
    for table in grid["tables"]:
        tables.append(markdown_table(table, cells))
        if table.get("over_majority"):  # .get: a grid.json written before the option existed lacks it
            tables.append(markdown_table(table, cells, over_majority=True))
        if table.get("over"):
            tables.append(markdown_table(table, cells, over=table["over"]))
        if table.get("over_task"):
            tables.append(markdown_table(table, cells, over_task=table["over_task"]))
        tables.append(budget_table(table, cells))
    sections = [summary, *tables, task_split_table(cells)]
    written[1].write_text("\n\n".join(s for s in sections if s) + "\n")
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
        if allocates(first):
            path = plots / f"allocation_{variant}_{task}.png"  # the allocation's geometry (seed shown: first)
            plot_allocation(first, path)
            written.append(path)
        topology = first["topology"]
        several_tasks = len({c.get("task") for c in first["clients"]}) > 1
        if several_tasks and topology and topology.get("linkage"):
            path = plots / f"tree_{variant}_{task}.png"
            plot_tree(topology, path, leaf_labels(first["clients"]))
            written.append(path)
    return written


def markers(sweep: str) -> tuple[str, str]:
    """The two lines around a sweep's tables in a Markdown page; named, so one page can quote several."""
    return f"<!-- tables:begin {sweep} -->", f"<!-- tables:end {sweep} -->"


def paste_tables(tables: str, doc: Path, sweep: str) -> None:
    """Replace what sits between ``doc``'s markers for ``sweep`` with ``tables`` (a page quoting a sweep)."""
    begin, finish = markers(sweep)
    text = doc.read_text()
    start, end = text.index(begin) + len(begin), text.index(finish)
    doc.write_text(text[:start] + "\n" + tables.strip() + "\n" + text[end:])
