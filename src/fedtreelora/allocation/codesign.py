"""Co-design: GD or RGD for the first F rounds, then Fisher scores measured every F rounds.

Rounds F, 2F, 3F, ... measure (the client picks its top b_i layers by the fresh scores); the rounds in
between reuse the client's latest scores, so the Fisher pass costs one round in F.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import Allocator, Assignment, register
from .fisher import top_layers
from .gd import Geometric
from .rgd import RandomGeometric

if TYPE_CHECKING:
    from ..config import AllocationConfig


@register
class CoDesign(Allocator):
    name = "codesign"
    summary = (
        "co-design: GD/RGD (allocation.codesign_start) first, Fisher refreshed every fisher_every rounds"
    )

    def __init__(self, cfg: "AllocationConfig", layers: Sequence[int], client_ids: Sequence[int], seed: int):
        super().__init__(cfg, layers, client_ids, seed)
        start = Geometric if cfg.codesign_start == "gd" else RandomGeometric
        self.start: Allocator = start(cfg, layers, client_ids, seed)

    def assign(self, rnd: int, client_id: int) -> Assignment:
        every = self.cfg.fisher_every
        if rnd < every:
            return self.start.assign(rnd, client_id)
        scores = self.scores.get(client_id)
        if rnd % every == 0 or scores is None:
            return self.measure(client_id)
        return Assignment(top_layers(scores, self.budgets[client_id]), self.budgets[client_id])
