"""Does how often a layer is trained order the budgeted cells' losses? Read from finished cells (issue 12).

    .venv/bin/python benchmarks/hello_layer_training.py benchmarks/results/hello_qnli [--method fedit]

A budgeted cell's allocation decides how many client-rounds train each layer (`trained_layers` in every round
row of `results.json`). Where budgeted cells drift far from the full budget (FedIT under strong label skew),
their losses looked ordered by how often the deep layers were trained. This script tests that per setting:
for every (method, task, seed) with a full-budget cell and at least four budgeted ones, the Spearman rank
correlation over the budgeted cells between each layer's training count and the cell's accuracy minus the full
budget's, and the same for the deep half of the layers. A positive rho: cells that train that layer more lose
less. With 13 cells a setting, |rho| under about 0.56 is within chance (two-sided 5 %); read it across
settings, not one at a time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

MIN_CELLS = 4  # fewer budgeted cells give a rank correlation of no use


def layer_counts(result: dict[str, Any], n_layers: int) -> list[int]:
    """Per layer, how many (client, round) pairs trained it over the run."""
    counts = [0] * n_layers
    for row in result["rounds"]:
        for layers in row.get("trained_layers", {}).values():
            for layer in layers:
                counts[layer] += 1
    return counts


def correlations(losses: list[float], counts: list[list[int]]) -> list[float | None]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a bench output directory (variants named <method>-full, ...)")
    parser.add_argument("--method", default="", help="only variants of this method, e.g. fedit")
    args = parser.parse_args()
    fulls = sorted(args.out.glob(f"{args.method}*-full/*/seed*/results.json"))
    if not fulls:
        parser.error(f"no finished full-budget cells under {args.out}; pass a Fed-HeLLo bench directory")
    print("| method | task | seed | cells | loss range | rho per layer | rho deep half |")
    print("|---|---|---|---|---|---|---|")
    for full_path in fulls:
        variant, task, seed = full_path.parts[-4:-1]
        method = variant.removesuffix("-full")
        full = json.loads(full_path.read_text())
        n_layers = len(set().union(*full["rounds"][0]["trained_layers"].values()))  # full budget: every layer
        losses, counts = [], []
        for path in sorted(args.out.glob(f"{method}-*/{task}/{seed}/results.json")):
            if path != full_path:
                result = json.loads(path.read_text())
                losses.append(100 * (result["mean_score"] - full["mean_score"]))
                counts.append(layer_counts(result, n_layers))
        if len(losses) < MIN_CELLS:
            continue
        rhos = [" –" if r is None else f"{r:+.2f}" for r in correlations(losses, counts)]
        print(
            f"| {method} | {task} | {seed} | {len(losses)} | {min(losses):+.1f} to {max(losses):+.1f} "
            f"| {' '.join(rhos[:-1])} | {rhos[-1]} |"
        )


if __name__ == "__main__":
    main()
