"""Does a layer budget distort FedTreeLoRA's warmup tree? Per-client B norms and trees (issue 12).

Under the inverted-triangle allocations two SST-2 Dirichlet 0.1 cells collapsed (RESULTS §6): the tree put
two label-0 clients with the label-1 clients and they scored ~5 %. One explanation: a 50 %-budget client
trains each layer in fewer warmup rounds, so its B matrices are smaller, and the Frobenius distance, which
sees size as well as direction, puts small-B clients close to everyone. This script runs the warmup exactly
as the runtime does (the embedded loop, stopped where the server builds the tree), then reports per client
its budget, label counts and mean |B| over layers, and the tree's top cut and K per layer under the
Frobenius distance (what the run used), the cosine distance, Frobenius on unit-norm B rows, and the run's
tree with each layer's silhouettes taken over the clients that trained it (QNLI GD uniform, RESULTS §6). For
each tree, the label mismatch: per client, the total-variation distance between its label distribution and its
cluster's pooled one (mean over layers); a client grouped against its prior has a large mismatch.

    python benchmarks/diagnose_budget_tree.py --config benchmarks/nlu_protocol.toml \
        --set "data.dir='../shared/data/glue/sst2'" --set data.alpha=0.1 \
        --variant full= --variant rgd-inv="allocation.strategy='rgd';allocation.pattern='inverted_triangle'" \
        --out benchmarks/results/budget_tree/sst2-dir0.1.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedtreelora.config import load_config
from fedtreelora.federation import prepare
from fedtreelora.methods import options_for
from fedtreelora.methods.fedtreelora import FedTreeLoRA
from fedtreelora.runtime import embedded
from fedtreelora.topology import build_topology


class _TreeBuilt(Exception):
    """Raised from inside the server once it holds the warmup uploads: the rest of the run is not needed."""

    def __init__(self, b_layers: list[np.ndarray], observed: list[np.ndarray] | None) -> None:
        self.b_layers, self.observed = b_layers, observed


def warmup_uploads(cfg: Any) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per layer the (N, D_l) B rows the server clusters, and which clients uploaded each layer."""

    def capture(self: FedTreeLoRA, states: Sequence[Any]) -> Any:
        raise _TreeBuilt(self.layout.b_rows(states, "cluster"), self.layout.observed(states, "cluster"))

    original = FedTreeLoRA._build_topology
    FedTreeLoRA._build_topology = capture
    try:
        embedded.run(cfg)
    except _TreeBuilt as built:
        return built.b_layers, built.observed
    finally:
        FedTreeLoRA._build_topology = original
    raise RuntimeError("the run ended without building a tree: is method = 'fedtreelora'?")


def mismatch(counts: np.ndarray, partitions: list[list[int]]) -> list[float]:
    """Per client: TV distance of its label distribution from its cluster's pooled one, mean over layers."""
    out = []
    for i in range(len(counts)):
        tv = []
        for part in partitions:
            pooled = counts[[j for j in range(len(counts)) if part[j] == part[i]]].sum(axis=0)
            tv.append(0.5 * np.abs(counts[i] / counts[i].sum() - pooled / pooled.sum()).sum())
        out.append(float(np.mean(tv)))
    return out


def trees(b_layers: list[np.ndarray], observed: list[np.ndarray] | None, opt: Any) -> dict[str, Any]:
    unit = [b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12) for b in b_layers]
    arms = {
        "frobenius": (b_layers, "frobenius", "all"),
        "cosine": (b_layers, "cosine", "all"),
        "unit-frobenius": (unit, "frobenius", "all"),
        "frobenius-observed-silhouette": (b_layers, "frobenius", "observed"),  # fedtreelora.silhouette
    }
    out = {}
    for name, (rows, metric, scoring) in arms.items():
        topo = build_topology(
            rows, metric=metric, linkage=opt.linkage, clustering=opt.clustering, tau=opt.tau, w=opt.w,
            fixed_k=opt.fixed_k, observed=observed, scoring=scoring,
        )  # fmt: skip
        out[name] = {"k_per_layer": topo.k_per_layer, "partitions": topo.partitions}
    return out


def diagnose(cfg: Any) -> dict[str, Any]:
    fed = prepare(cfg)  # for the clients' budgets and label counts only
    b_layers, observed = warmup_uploads(cfg)
    norms = np.stack([np.linalg.norm(b, axis=1) for b in b_layers])  # (L, N)
    seen = np.stack(observed) if observed is not None else np.ones_like(norms, dtype=bool)
    k = max(len(c.label_counts) for c in fed.clients)
    counts = np.array([list(c.label_counts) + [0] * (k - len(c.label_counts)) for c in fed.clients], float)
    alloc = fed.allocator
    result: dict[str, Any] = {
        "clients": [
            {
                "id": c.client_id,
                "budget_layers": alloc.budgets[c.client_id],
                "label_counts": c.label_counts,
                # mean |B| over the layers the client trained (untrained layers are the zero init)
                "mean_b_norm": float(norms[seen[:, i], i].mean()),
            }
            for i, c in enumerate(fed.clients)
        ],
        "trees": trees(b_layers, observed, fed.method.opt),
    }
    for tree in result["trees"].values():
        tree["mismatch"] = mismatch(counts, tree["partitions"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--variant", action="append", default=[], help="NAME=OVERRIDE[;OVERRIDE...]")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    done: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}  # resumable
    for variant in args.variant:
        name, _, sets = variant.partition("=")
        for seed in args.seeds:
            key = f"{name}/seed{seed}"
            if key in done:
                continue
            start = time.perf_counter()
            overrides = [*args.overrides, *[s for s in sets.split(";") if s], f"seed={seed}"]
            cfg = load_config(
                args.config, [*overrides, "method='fedtreelora'", "federation.workers=0"], options_for()
            )
            done[key] = diagnose(cfg)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(done, indent=1))
            print(f"{key}: {time.perf_counter() - start:.0f} s", flush=True)
    for key, r in done.items():
        print(f"\n{key}")
        for c in r["clients"]:
            print(f"  client {c['id']}: {c['budget_layers']} layers, labels {c['label_counts']}, "
                  f"mean |B| {c['mean_b_norm']:.3f}")  # fmt: skip
        for name, t in r["trees"].items():
            print(f"  {name:>15}: K {t['k_per_layer']}, top cut {t['partitions'][0]}, "
                  f"mean mismatch {np.mean(t['mismatch']):.3f}, worst {max(t['mismatch']):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
