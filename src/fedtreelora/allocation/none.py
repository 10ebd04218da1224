"""No allocation: every client trains every layer (the default; the methods as published)."""

from .base import Allocator, Assignment, register


@register
class FullBudget(Allocator):
    name = "none"
    summary = "every client trains every layer (allocation.budgets ignored)"
    budgeted = False

    def assign(self, rnd: int, client_id: int) -> Assignment:
        return Assignment(tuple(self.layers), len(self.layers))
