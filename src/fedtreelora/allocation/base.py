"""What an allocation strategy is, the budgets it works with, and the registry strategies join."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from ..config import AllocationConfig

DEFAULT_GROUPS = (0.5, 0.75, 1.0)  # three equal groups of clients, by id (SPEC)


@dataclass(frozen=True)
class Assignment:
    """What the server tells one client about its layers this round.

    ``layers`` are the layer indices it trains. ``None`` asks the client to measure its Fisher scores on
    ``fisher_batches`` batches first and train its ``budget`` highest-scoring layers (FIM-HLA), since only
    the client holds the data those scores need.
    """

    layers: tuple[int, ...] | None
    budget: int
    fisher_batches: int = 0


def budget_layers(fraction: float, n_layers: int) -> int:
    """``round(fraction * L)`` with halves rounded up, at least one layer: 0.75 of 6 layers is 5."""
    return max(1, min(n_layers, int(np.floor(fraction * n_layers + 0.5))))


def client_fractions(budgets: Sequence[float], n_clients: int) -> list[float]:
    """One fraction per client: ``budgets`` as given, or the default three equal groups by client order."""
    if budgets:
        return list(budgets)
    groups = np.array_split(np.arange(n_clients), len(DEFAULT_GROUPS))
    out = [0.0] * n_clients
    for fraction, members in zip(DEFAULT_GROUPS, groups, strict=True):
        for i in members:
            out[int(i)] = fraction
    return out


class Allocator(ABC):
    """A strategy: each round, the layers each client trains (or a request to measure and choose)."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for ``fedtreelora allocations``
    budgeted: ClassVar[bool] = True  # False: ``allocation.budgets`` is ignored and every client has them all

    def __init__(self, cfg: AllocationConfig, layers: Sequence[int], client_ids: Sequence[int], seed: int):
        self.cfg = cfg
        self.layers = list(layers)  # the adapted layers' indices, shallow to deep
        self.client_ids = list(client_ids)
        self.seed = seed
        n = len(self.client_ids)
        fractions = client_fractions(cfg.budgets, n) if self.budgeted else [1.0] * n
        self.fractions = dict(zip(self.client_ids, fractions, strict=True))
        self.budgets = {cid: budget_layers(f, len(self.layers)) for cid, f in self.fractions.items()}
        self.scores: dict[int, dict[int, float]] = {}  # per client, its latest Fisher scores by layer

    @abstractmethod
    def assign(self, rnd: int, client_id: int) -> Assignment:
        """Client ``client_id``'s layers in round ``rnd`` (0-based)."""

    def observe(self, client_id: int, scores: Mapping[int, float]) -> None:
        """A client reports the Fisher scores it measured (FIM-HLA, co-design)."""
        self.scores[client_id] = dict(scores)

    def fixed(self, client_id: int, positions: Sequence[int]) -> Assignment:
        """Train the layers at these depth positions (0 = shallowest adapted layer)."""
        return Assignment(tuple(sorted(self.layers[p] for p in positions)), self.budgets[client_id])

    def measure(self, client_id: int) -> Assignment:
        """Measure Fisher scores on the client and train its top-``budget`` layers."""
        return Assignment(None, self.budgets[client_id], self.cfg.fisher_batches)


STRATEGIES: dict[str, type[Allocator]] = {}


def register(cls: type[Allocator]) -> type[Allocator]:
    """Class decorator: make a strategy available as ``allocation.strategy = <name>``."""
    if cls.name in STRATEGIES:
        raise ValueError(f"allocation strategy {cls.name!r} registered twice")
    STRATEGIES[cls.name] = cls
    return cls


def create_allocator(
    cfg: AllocationConfig, layers: Sequence[int], client_ids: Sequence[int], seed: int
) -> Allocator:
    return STRATEGIES[cfg.strategy](cfg, layers, client_ids, seed)
