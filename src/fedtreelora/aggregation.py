"""Aggregation as pure functions over named tensors (``dict[str, Tensor]``).

No method state lives here: strategies call these with the clients' uploads and their weights ``p_i``.
Cluster and complement (external-expert) averages share one pass: stack each tensor over clients, take
per-cluster weighted sums with a one-hot matmul, and get every complement as ``total - cluster``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

State = dict[str, Tensor]


def weighted_average(states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> State:
    """``sum_i w_i s_i / sum_i w_i`` for every name the states share (they must share all names)."""
    if not states:
        raise ValueError("weighted_average needs at least one state")
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    names = set(states[0])
    for s in states[1:]:
        if set(s) != names:
            raise ValueError(f"states disagree on names: {sorted(names ^ set(s))[:4]}")
    w = torch.tensor([float(x) / total for x in weights])
    return {n: torch.einsum("k,k...->...", w, torch.stack([s[n] for s in states])) for n in states[0]}


def cluster_and_complement_averages(
    states: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    labels: Sequence[int],
    names: Sequence[str] | None = None,
) -> tuple[list[State], list[State | None]]:
    """Per cluster ``c = 0..K-1``: the weighted average over its members, and over everyone else.

    ``labels[i]`` is client i's cluster id (0..K-1). The complement of a cluster that holds every
    client is ``None`` (no external expert). ``names`` restricts the computation to some tensors.
    """
    n = len(states)
    if not (n == len(weights) == len(labels)) or n == 0:
        raise ValueError("states, weights and labels must be non-empty and of equal length")
    k = max(labels) + 1
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    onehot = torch.zeros(k, n, dtype=torch.float64)
    onehot[torch.tensor(list(labels)), torch.arange(n)] = 1.0
    if (onehot.sum(1) == 0).any():
        raise ValueError(f"cluster labels must be 0..K-1 with every cluster non-empty: {list(labels)}")
    mass = onehot @ w  # (K,) weight of each cluster
    rest = w.sum() - mass  # (K,) weight outside each cluster
    clusters: list[State] = [{} for _ in range(k)]
    complements: list[State | None] = [({} if rest[c] > 0 else None) for c in range(k)]
    for name in names if names is not None else list(states[0]):
        stacked = torch.stack([s[name] for s in states])  # (N, *shape)
        flat = stacked.reshape(n, -1).to(torch.float64) * w[:, None]  # (N, numel), weighted
        sums = onehot @ flat  # (K, numel)
        total = flat.sum(0)  # (numel,)
        for c in range(k):
            clusters[c][name] = (sums[c] / mass[c]).reshape(stacked.shape[1:]).to(stacked.dtype)
            comp = complements[c]
            if comp is not None:
                comp[name] = ((total - sums[c]) / rest[c]).reshape(stacked.shape[1:]).to(stacked.dtype)
    return clusters, complements
