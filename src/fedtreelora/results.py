"""The ``results.json`` contract every runtime writes and every later tool reads (docs/RESULTS_FORMAT.md).

Scores are named by the task kind's metric (``metric``: "accuracy" or "rouge1") and stored under
``score``/``mean_score``; classification runs also keep the ``accuracy`` names files had before generation
existed, so older readers and stored sweeps stay valid. Beside each client's score goes its kind's trivial
baseline where one exists: under label skew always answering the majority training label is strong, and
a personalised model is only interesting where it beats it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .config import RunConfig
from .data import ClientData
from .tasks import Score, Task
from .topology import Topology


def mean_score(results: Mapping[str, Any]) -> float:
    """A run's final mean score (files written before ``mean_score`` existed hold ``mean_accuracy``)."""
    return float(results["mean_score"] if "mean_score" in results else results["mean_accuracy"])


def round_score(row: Mapping[str, Any]) -> float | None:
    """A round's mean score, or None where the round was not evaluated."""
    value = row.get("mean_score", row.get("mean_accuracy"))
    return None if value is None else float(value)


def allocation_of(results: Mapping[str, Any]) -> dict[str, Any]:
    """The run's ``[allocation]`` settings ({} in files written before Fed-HeLLo: strategy "none")."""
    return dict(results["config"].get("allocation") or {})


def allocates(results: Mapping[str, Any]) -> bool:
    """Whether the run restricted clients to layer budgets (a strategy other than "none")."""
    return allocation_of(results).get("strategy", "none") != "none"


def metric_of(results: Mapping[str, Any]) -> str:
    return str(results.get("metric", "accuracy"))


def round_row(metric: str, scores: Mapping[int, Score] | None) -> dict[str, Any]:
    """The score fields of one row of ``rounds`` (None where the round was not evaluated)."""
    mean = statistics.fmean(s.value for s in scores.values()) if scores else None
    per_client = {str(i): s.value for i, s in scores.items()} if scores else None
    row: dict[str, Any] = {"mean_score": mean, "client_score": per_client}
    if metric == "accuracy":
        row |= {"mean_accuracy": mean, "client_accuracy": per_client}
    return row


def group_means(clients: Sequence[ClientData], scores: Mapping[int, Score], key: str) -> dict[str, float]:
    """Mean final score per task (``key="task"``) or per task group (``key="group"``)."""
    by: dict[str, list[float]] = defaultdict(list)
    for c in clients:
        by[getattr(c, key)].append(scores[c.client_id].value)
    return {name: statistics.fmean(values) for name, values in by.items()}


def build_results(
    cfg: RunConfig,
    task: Task,
    clients: Sequence[ClientData],
    scores: Mapping[int, Score],
    rounds: list[dict[str, Any]],
    topology: Topology | None,
    timing: dict[str, float],
    communication: dict[str, int],
    params: dict[str, Any],
    budgets: Mapping[int, tuple[float, int]] | None = None,
) -> dict[str, Any]:
    """``budgets``: per client, its layer budget as a fraction and in layers (Fed-HeLLo)."""
    metric = task.metric
    baselines = {c.client_id: task.baseline(c) for c in clients}
    rows = []
    for c in clients:
        row: dict[str, Any] = {
            "id": c.client_id,
            "task": c.task,
            "group": c.group,
            "n_train": len(c.train),
            "n_test": len(c.test),
            "label_counts": c.label_counts,
            "score": scores[c.client_id].value,
        }
        if budgets is not None:
            row["budget"], row["budget_layers"] = budgets[c.client_id]
        if metric == "accuracy":
            row["accuracy"] = scores[c.client_id].value
        if baselines[c.client_id] is not None:
            row["majority_accuracy"] = baselines[c.client_id]
        if scores[c.client_id].samples:
            row["samples"] = list(scores[c.client_id].samples)
        rows.append(row)
    final = statistics.fmean(scores[c.client_id].value for c in clients)
    known = [b for b in baselines.values() if b is not None]
    out: dict[str, Any] = {
        "method": cfg.method,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "metric": metric,
        "rounds": rounds,
        "clients": rows,
        "mean_score": final,
        "tasks": group_means(clients, scores, "task"),
        "groups": group_means(clients, scores, "group"),
        "majority_baseline": statistics.fmean(known) if known else None,
        "topology": topology.to_json() if topology is not None else None,
        "timing": timing,
        "communication": communication,
        "params": params,
    }
    if metric == "accuracy":
        out["mean_accuracy"] = final
    return out
