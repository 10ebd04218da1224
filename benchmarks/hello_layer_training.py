"""Does how often a layer is trained order the budgeted cells' losses? Read from finished cells (issue 12).

    .venv/bin/python benchmarks/hello_layer_training.py benchmarks/results/hello_qnli [--method fedit]

A budgeted cell's allocation decides how many client-rounds train each layer (`trained_layers` in every round
row of `results.json`). Where budgeted cells drift far from the full budget (FedIT under strong label skew),
their losses looked ordered by how often the deep layers were trained. This script tests that per setting:
for every (method, task, seed) with a full-budget cell and at least four budgeted ones, the Spearman rank
correlation over the budgeted cells between each layer's training count and the cell's accuracy minus the full
budget's, and the same for the deep half of the layers. A positive rho: cells that train that layer more lose
less. With 13 cells a setting, |rho| under about 0.56 is within chance (two-sided 5 %); read it across
settings, not one at a time. Then, per method, each variant's mean loss and mean layer counts over the
settings where every variant finished, and the same rho across variants (noise averaged over settings first).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from fedtreelora.plots import allocation_counts

MIN_CELLS = 4  # fewer budgeted cells give a rank correlation of no use


def layer_counts(result: dict[str, Any]) -> list[int]:
    """Per layer, how many (client, round) pairs trained it over the run: the report's allocation counts
    (the geometry plot's, before averaging over rounds) summed over budget groups."""
    n_layers, groups = allocation_counts(result)
    return [int(c) for c in sum(groups.values(), np.zeros(n_layers))]


def correlations(losses: list[float], counts: Sequence[Sequence[float]]) -> list[float | None]:
    """Spearman rho of the losses against each layer's counts, then against the deep half's summed counts.

    ``counts[c][layer]`` belongs to the cell with loss ``losses[c]``. A layer every cell trains equally often
    (or a setting where every loss ties) has no rank order: None.
    """
    n_layers = len(counts[0])
    columns = [[c[layer] for c in counts] for layer in range(n_layers)]
    columns.append([sum(c[n_layers // 2 :]) for c in counts])
    rhos: list[float | None] = []
    for column in columns:
        constant = len(set(column)) == 1 or len(set(losses)) == 1
        rhos.append(None if constant else float(spearmanr(column, losses)[0]))
    return rhos


Setting = tuple[str, str, str]  # (method, task, seed)
Cell = tuple[str, float, list[int]]  # (variant, accuracy minus the full budget's in points, layer counts)


def read_settings(out: Path, method: str = "") -> dict[Setting, list[Cell]]:
    """The budgeted cells of every setting that has a full-budget cell, from a bench directory."""
    settings: dict[Setting, list[Cell]] = {}
    for full_path in sorted(out.glob(f"{method}*-full/*/seed*/results.json")):
        full_variant, task, seed = full_path.parts[-4:-1]
        name = full_variant.removesuffix("-full")
        full = json.loads(full_path.read_text())
        cells = settings[(name, task, seed)] = []
        for path in sorted(out.glob(f"{name}-*/{task}/{seed}/results.json")):
            if path != full_path:
                result = json.loads(path.read_text())
                loss = 100 * (result["mean_score"] - full["mean_score"])
                cells.append((path.parts[-4], loss, layer_counts(result)))
    return settings


def rho_text(rhos: list[float | None]) -> str:
    return " ".join(" –" if r is None else f"{r:+.2f}" for r in rhos)


def setting_table(settings: dict[Setting, list[Cell]]) -> str:
    """One row per setting: rho over its budgeted cells, per layer and for the deep half."""
    head = "| method | task | seed | cells | loss range | rho per layer | rho deep half |"
    lines = [head, "|" + "---|" * 7]
    for (method, task, seed), cells in settings.items():
        if len(cells) < MIN_CELLS:
            continue
        losses = [loss for _, loss, _ in cells]
        rhos = correlations(losses, [counts for _, _, counts in cells])
        lines.append(
            f"| {method} | {task} | {seed} | {len(cells)} | {min(losses):+.1f} to {max(losses):+.1f} "
            f"| {rho_text(rhos[:-1])} | {rho_text(rhos[-1:])} |"
        )
    return "\n".join(lines)


def variant_table(settings: dict[Setting, list[Cell]], method: str) -> str:
    """One row per variant: mean loss and layer counts over the settings where every variant finished (so
    each variant is averaged over the same settings); then rho across variants, per layer and deep half."""
    ours = {key: cells for key, cells in settings.items() if key[0] == method}
    n_variants = max(len(cells) for cells in ours.values())
    complete = [cells for cells in ours.values() if len(cells) == n_variants]
    by_variant: dict[str, list[tuple[float, list[int]]]] = {}
    for cells in complete:
        for variant, loss, counts in cells:
            by_variant.setdefault(variant, []).append((loss, counts))
    lines = [f"{method}: {len(complete)} settings with all {n_variants} budgeted variants finished", ""]
    lines += ["| variant | mean loss | mean client-rounds per layer |", "|" + "---|" * 3]
    mean_losses: list[float] = []
    mean_counts: list[list[float]] = []
    for variant, runs in by_variant.items():
        per_layer = zip(*(counts for _, counts in runs), strict=True)  # layer -> that layer's count per run
        mean_losses.append(statistics.mean(loss for loss, _ in runs))
        mean_counts.append([statistics.mean(c) for c in per_layer])
        shown = " ".join(f"{c:.0f}" for c in mean_counts[-1])
        lines.append(f"| {variant} | {mean_losses[-1]:+.2f} | {shown} |")
    if len(by_variant) >= MIN_CELLS:
        rhos = correlations(mean_losses, mean_counts)
        lines.append(f"| rho across variants | | {rho_text(rhos[:-1])}; deep half {rho_text(rhos[-1:])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a bench output directory (variants named <method>-full, ...)")
    parser.add_argument("--method", default="", help="only variants of this method, e.g. fedit")
    args = parser.parse_args()
    settings = read_settings(args.out, args.method)
    if not settings:
        parser.error(f"no finished full-budget cells under {args.out}; pass a Fed-HeLLo bench directory")
    methods = sorted({method for method, _, _ in settings})
    print("\n\n".join([setting_table(settings)] + [variant_table(settings, m) for m in methods]))


if __name__ == "__main__":
    main()
