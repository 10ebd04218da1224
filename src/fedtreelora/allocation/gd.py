"""GD-HLA: deterministic geometric allocation; the clients' collective allocation follows the pattern."""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import Allocator, Assignment, register
from .patterns import gd_positions

if TYPE_CHECKING:
    from ..config import AllocationConfig


@register
class Geometric(Allocator):
    name = "gd"
    summary = "GD-HLA: each client trains the first b_i layers of the pattern's order, every round"

    def __init__(self, cfg: "AllocationConfig", layers: Sequence[int], client_ids: Sequence[int], seed: int):
        super().__init__(cfg, layers, client_ids, seed)
        # Uniform windows: each client starts where the previous one (in client order) ended.
        self.offsets, start = {}, 0
        for cid in self.client_ids:
            self.offsets[cid] = start % len(self.layers)
            start += self.budgets[cid]

    def assign(self, rnd: int, client_id: int) -> Assignment:
        positions = gd_positions(
            self.cfg.pattern, len(self.layers), self.budgets[client_id], self.offsets[client_id]
        )
        return self.fixed(client_id, positions)
