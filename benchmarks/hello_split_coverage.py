"""Does a layer's warmup coverage decide whether FedTreeLoRA splits it? Read from finished cells (issue 12).

    .venv/bin/python benchmarks/hello_split_coverage.py benchmarks/results/hello_qnli --task qnli-dir0.5

A client that never trained a layer in the warmup has its distances at that layer imputed with the layer's
mean observed distance (docs/DESIGN.md). Such a row sits at the same distance from both sides of any split, so
its silhouette is about 0 and it lengthens every other client's within-cluster mean: it pulls the layer's
silhouette toward 0, and a split that passed `tau` with every client observed may no longer pass it. This
script needs no replay: per FedTreeLoRA cell and layer it prints how many clients trained the layer in the
warmup (`covered`), the silhouette of the global tree's 2-cluster cut at that layer and the K chosen, then the
mean 2-cluster silhouette over fully covered layers against partly covered ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def layer_rows(result: dict[str, Any]) -> list[tuple[int, int, float | None, int]]:
    """(layer, clients that trained it in any warmup round, silhouette of cut(2), chosen K) per layer."""
    warmup = [r for r in result["rounds"] if r["phase"] == "warmup"]
    topology = result["topology"]
    rows = []
    for layer, k in enumerate(topology["k_per_layer"]):
        clients = warmup[0]["trained_layers"]
        covered = sum(any(layer in r["trained_layers"].get(c, []) for r in warmup) for c in clients)
        rows.append((layer, covered, topology["silhouettes"][layer].get("2"), k))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a bench output directory")
    parser.add_argument("--task", default="", help="only cells whose task directory starts with this")
    args = parser.parse_args()
    full: list[float] = []
    partial: list[float] = []
    for path in sorted(args.out.glob(f"fedtreelora-*/{args.task}*/seed*/results.json")):
        result = json.loads(path.read_text())
        n = len(result["clients"])
        cell = "/".join(path.parts[-4:-1])
        print(f"{cell}: mean accuracy {100 * result['mean_score']:.2f}")
        for layer, covered, sil, k in layer_rows(result):
            print(f"  layer {layer}: covered {covered:2d}/{n}  silhouette(K=2) {sil:+.3f}  K={k}")
            if sil is not None:
                (full if covered == n else partial).append(sil)
    for name, values in (("fully covered", full), ("partly covered", partial)):
        if values:
            print(
                f"{name} layers: {len(values)}, silhouette(K=2) mean {statistics.mean(values):+.3f}, "
                f"range {min(values):+.3f} to {max(values):+.3f}"
            )


if __name__ == "__main__":
    main()
