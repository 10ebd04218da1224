"""The ``results.json`` contract every runtime writes and every later tool reads.

Keys (keep them; add freely): method, seed, config, rounds, clients, mean_accuracy, topology, timing,
communication. Besides each client's accuracy we record the accuracy of always predicting the client's
majority training label: under label skew that trivial predictor is strong, and a personalised model
is only interesting where it beats it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .config import RunConfig
from .data import ClientData
from .topology import Topology


def majority_accuracy(client: ClientData) -> float:
    """Test accuracy of always answering the client's most frequent training label."""
    majority = max(range(len(client.label_counts)), key=client.label_counts.__getitem__)
    return sum(e.label == majority for e in client.test) / max(len(client.test), 1)


def build_results(
    cfg: RunConfig,
    clients: Sequence[ClientData],
    accuracies: Mapping[int, float],
    rounds: list[dict[str, Any]],
    topology: Topology | None,
    timing: dict[str, float],
    communication: dict[str, int],
    params: dict[str, int],
) -> dict[str, Any]:
    rows = [
        {
            "id": c.client_id,
            "task": c.task,
            "n_train": len(c.train),
            "n_test": len(c.test),
            "label_counts": c.label_counts,
            "accuracy": accuracies[c.client_id],
            "majority_accuracy": majority_accuracy(c),
        }
        for c in clients
    ]
    return {
        "method": cfg.method,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "rounds": rounds,
        "clients": rows,
        "mean_accuracy": statistics.fmean(accuracies[c.client_id] for c in clients),
        "majority_baseline": statistics.fmean(majority_accuracy(c) for c in clients),
        "topology": topology.to_json() if topology is not None else None,
        "timing": timing,
        "communication": communication,
        "params": params,
    }
