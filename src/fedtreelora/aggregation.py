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
    w = torch.tensor([float(x) / total for x in weights], dtype=states[0][next(iter(names))].dtype)
    out: State = {}
    for name in states[0]:
        stacked = torch.stack([s[name] for s in states])  # (N, *shape)
        out[name] = (w @ stacked.reshape(len(states), -1)).view(stacked.shape[1:])
    return out


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
    label_ids = torch.tensor(list(labels))
    k = int(label_ids.max()) + 1
    members = torch.bincount(label_ids, minlength=k)  # (K,)
    if (members == 0).any():
        raise ValueError(f"cluster labels must be 0..K-1 with every cluster non-empty: {list(labels)}")
    names = list(states[0]) if names is None else list(names)
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    onehot = torch.zeros(k, n, dtype=torch.float64)
    onehot[label_ids, torch.arange(n)] = 1.0
    mass = onehot @ w  # (K,) weight inside each cluster
    rest = w.sum() - mass  # (K,) weight outside each cluster
    # Per-cluster means and complement means as two (K, N) weight matrices, so each tensor costs one stack
    # and two matmuls, whatever K is. A cluster holding everyone has no complement (its row stays unused).
    inside = onehot * w / mass[:, None]  # (K, N)
    outside = (1.0 - onehot) * w / torch.where(rest > 0, rest, 1.0)[:, None]  # (K, N)
    clusters: list[State] = [{} for _ in range(k)]
    complements: list[State | None] = [({} if members[c] < n else None) for c in range(k)]
    dtype = states[0][names[0]].dtype if names else torch.float32
    both = torch.cat([inside, outside]).to(dtype)  # (2K, N): one pass over the uploads per tensor
    for name in names:
        stacked = torch.stack([s[name] for s in states])  # (N, *shape)
        rows = (both @ stacked.reshape(n, -1)).view(2 * k, *stacked.shape[1:]).unbind(0)  # 2K tensors
        for c in range(k):
            clusters[c][name] = rows[c]
            comp = complements[c]
            if comp is not None:
                comp[name] = rows[k + c]
    return clusters, complements
