"""Geometric depth patterns of GD-HLA and RGD-HLA, for any number of layers.

A pattern is a priority order over depth: a client with budget ``b`` trains the first ``b`` layers of
it, so the clients' collective allocation (how many clients train each layer) takes the pattern's shape.
``triangle`` puts shallow layers first, ``inverted_triangle`` deep layers first, ``bottleneck`` both ends
first, alternating inward from the shallow end; ``uniform`` gives each client a cyclic window that starts
where the previous client's ended, so every layer is trained by as many clients as possible (+-1).

The pattern's probability vector (what RGD samples with) is that collective allocation under the default
budgets (one client each at 50 %, 75 % and 100 % of the layers), normalised. For 12 layers the bottleneck
gives SPEC's reference vector ``[3,3,3,2,2,1,1,1,2,3,3,3] / 27``: the 50 % client trains layers 0-2 and
9-11, the 75 % client adds 3, 4 and 8.
"""

from __future__ import annotations

from typing import get_args

import numpy as np

from ..config import Pattern
from .base import DEFAULT_GROUPS, budget_layers

PATTERNS: tuple[str, ...] = get_args(Pattern)


def priority(pattern: str, n_layers: int) -> list[int]:
    """Depth positions in the order budget-limited clients take them (uniform: plain depth order)."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    order = list(range(n_layers))
    if pattern == "inverted_triangle":
        return order[::-1]
    if pattern == "bottleneck":  # 0, L-1, 1, L-2, ...: the two ends first, the middle last
        return [order[i // 2] if i % 2 == 0 else order[-1 - i // 2] for i in range(n_layers)]
    return order


def gd_positions(pattern: str, n_layers: int, budget: int, offset: int = 0) -> list[int]:
    """Deterministic GD-HLA: the depth positions one client with ``budget`` layers trains.

    ``offset`` matters only for ``uniform``: the client's window starts there (the sum of the earlier
    clients' budgets), so consecutive clients cover the depth in turn.
    """
    if pattern == "uniform":
        return sorted((offset + i) % n_layers for i in range(budget))
    return sorted(priority(pattern, n_layers)[:budget])


def probabilities(pattern: str, n_layers: int) -> np.ndarray:
    """(L,) the pattern's distribution over depth: the default budgets' collective allocation, normalised."""
    if pattern == "uniform":
        return np.full(n_layers, 1.0 / n_layers)
    counts = np.zeros(n_layers)
    for fraction in DEFAULT_GROUPS:
        counts[gd_positions(pattern, n_layers, budget_layers(fraction, n_layers))] += 1.0
    return counts / counts.sum()


def rgd_positions(pattern: str, n_layers: int, budget: int, rng: np.random.Generator) -> list[int]:
    """RGD-HLA: ``budget`` positions sampled without replacement with the pattern's probabilities."""
    return sorted(
        int(i) for i in rng.choice(n_layers, size=budget, replace=False, p=probabilities(pattern, n_layers))
    )
