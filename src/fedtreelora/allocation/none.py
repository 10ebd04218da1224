"""No allocation: every client trains every layer (the default; the methods as published)."""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import Allocator, Assignment, register

if TYPE_CHECKING:
    from ..config import AllocationConfig


@register
class FullBudget(Allocator):
    name = "none"
    summary = "every client trains every layer (allocation.budgets ignored)"

    def __init__(self, cfg: "AllocationConfig", layers: Sequence[int], client_ids: Sequence[int], seed: int):
        super().__init__(cfg, layers, client_ids, seed)
        self.fractions = dict.fromkeys(self.client_ids, 1.0)
        self.budgets = dict.fromkeys(self.client_ids, len(self.layers))

    def assign(self, rnd: int, client_id: int) -> Assignment:
        return Assignment(tuple(self.layers), len(self.layers))
