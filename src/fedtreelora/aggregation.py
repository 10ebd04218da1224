"""Aggregation as pure functions over named tensors (``dict[str, Tensor]``).

No method state lives here: strategies call these with the clients' uploads and their weights ``p_i``.
Cluster and complement (external-expert) averages share one pass: stack each tensor over clients, take
per-cluster weighted sums with a one-hot matmul, and get every complement as ``total - cluster``.

Uploads may be partial (Fed-HeLLo: a client uploads only the layers it trained). Then every tensor is
averaged over the clients that hold it, weights renormalised over them, and a tensor nobody holds is absent
from the result: the caller keeps its previous value (``{**previous, **average}``). Names are grouped by
the set of clients holding them, so a full round is one group and runs exactly the full-upload code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain

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


def holders(
    states: Sequence[Mapping[str, Tensor]], names: Sequence[str] | None = None
) -> dict[tuple[int, ...], list[str]]:
    """Group tensor names by the positions of the states holding them (names in first-seen order)."""
    if names is None:
        names = list(dict.fromkeys(chain.from_iterable(states)))
    groups: dict[tuple[int, ...], list[str]] = {}
    for name in names:
        who = tuple(i for i, s in enumerate(states) if name in s)
        if who:
            groups.setdefault(who, []).append(name)
    return groups


def partial_average(states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> State:
    """Every name averaged over the states holding it, ``weights`` renormalised over those states.

    With identical names in every state this is ``weighted_average``.
    """
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    out: State = {}
    for who, names in holders(states).items():
        out.update(
            weighted_average([{n: states[i][n] for n in names} for i in who], [weights[i] for i in who])
        )
    return out


def cluster_and_complement_averages(
    states: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    labels: Sequence[int],
    names: Sequence[str] | None = None,
) -> tuple[list[State], list[State | None]]:
    """Per cluster ``c = 0..K-1``: the weighted average over its members, and over everyone else.

    ``labels[i]`` is client i's cluster id (0..K-1). The complement of a cluster that holds every
    client is ``None`` (no external expert). ``names`` restricts the computation to some tensors. With
    partial uploads a name is averaged over the members (non-members) that hold it; where none does, the
    cluster's (complement's) dict lacks that name.
    """
    n = len(states)
    if not (n == len(weights) == len(labels)) or n == 0:
        raise ValueError("states, weights and labels must be non-empty and of equal length")
    label_ids = torch.tensor(list(labels))
    k = int(label_ids.max()) + 1
    members = torch.bincount(label_ids, minlength=k)  # (K,)
    if (members == 0).any():
        raise ValueError(f"cluster labels must be 0..K-1 with every cluster non-empty: {list(labels)}")
    clusters: list[State] = [{} for _ in range(k)]
    complements: list[State | None] = [({} if members[c] < n else None) for c in range(k)]
    for who, group in holders(states, names).items():
        idx = list(who)
        _fill(
            [states[i] for i in idx],
            [weights[i] for i in idx],
            label_ids[idx],
            k,
            group,
            clusters,
            complements,
        )
    return clusters, complements


def _fill(
    states: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    label_ids: Tensor,
    k: int,
    names: Sequence[str],
    clusters: list[State],
    complements: list[State | None],
) -> None:
    """Write cluster and complement averages of ``names`` over ``states`` (all of which hold every name)."""
    n = len(states)
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    onehot = torch.zeros(k, n, dtype=torch.float64)
    onehot[label_ids, torch.arange(n)] = 1.0
    mass = onehot @ w  # (K,) weight inside each cluster
    rest = w.sum() - mass  # (K,) weight outside each cluster
    present = onehot.sum(1)  # (K,) members among these states
    # Per-cluster means and complement means as two (K, N) weight matrices, so each tensor costs one stack
    # and two matmuls, whatever K is. A cluster holding everyone has no complement (its row stays unused);
    # a cluster none of these states belongs to has no mean (its row stays unused too).
    inside = onehot * w / torch.where(mass > 0, mass, 1.0)[:, None]  # (K, N)
    outside = (1.0 - onehot) * w / torch.where(rest > 0, rest, 1.0)[:, None]  # (K, N)
    dtype = states[0][names[0]].dtype if names else torch.float32
    both = torch.cat([inside, outside]).to(dtype)  # (2K, N): one pass over the uploads per tensor
    for name in names:
        stacked = torch.stack([s[name] for s in states])  # (N, *shape)
        rows = (both @ stacked.reshape(n, -1)).view(2 * k, *stacked.shape[1:]).unbind(0)  # 2K tensors
        for c in range(k):
            if present[c] > 0:
                clusters[c][name] = rows[c]
            comp = complements[c]
            if comp is not None and present[c] < n:
                comp[name] = rows[k + c]
