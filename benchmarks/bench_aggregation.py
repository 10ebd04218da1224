"""One aggregation round on RoBERTa-large-shaped LoRA: FedTreeLoRA (cluster and external experts for every
client, and every client's payload assembled) against FedIT (FedAvg).

    python benchmarks/bench_aggregation.py [--clients 10 100 1000]

One JSON line per (method, N): {"method": m, "n_clients": N, "seconds": median}. Goal: <= 0.01 s at
N = 10 and linear growth in N (the paper: 0.077 s at N = 10).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from common import client_states, emit, median_seconds, roberta_large_layout

from fedtreelora.methods import REGISTRY, ClientInfo, Method


def one_round(method: Method, uploads: dict[int, dict[str, torch.Tensor]]) -> None:
    """The server's work in one round: aggregate, then assemble every client's payload."""
    method.aggregate(1, uploads)
    for c in method.clients:
        method.payload(c.client_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    layout = roberta_large_layout()
    for n in args.clients:
        clients = [ClientInfo(i, 1000) for i in range(n)]
        repeats = 20 if n <= 100 else 3
        for name, expert in (("fedtreelora", "cluster"), ("fedit", "lora")):
            cls = REGISTRY[name]
            method = cls(
                cls.Options(warmup_rounds=1) if name == "fedtreelora" else cls.Options(),
                layout,
                clients,
                10,
                0,
            )
            uploads = client_states(layout, n, expert)
            method.aggregate(0, uploads)  # FedTreeLoRA: builds the tree once (timed separately)

            seconds = median_seconds(partial(one_round, method, uploads), repeats)
            topology = method.topology()
            emit(
                method=name,
                n_clients=n,
                seconds=round(seconds, 5),
                repeats=repeats,
                k_per_layer=topology.k_per_layer if topology is not None else None,
            )


if __name__ == "__main__":
    main()
