"""RGD-HLA: each round, b_i layers sampled without replacement with the pattern's probabilities."""

import numpy as np

from .base import Allocator, Assignment, register
from .patterns import rgd_positions


def round_rng(seed: int, rnd: int, client_id: int) -> np.random.Generator:
    """One generator per (run, round, client): the draw does not depend on the order clients are asked."""
    return np.random.default_rng(np.random.SeedSequence([seed, rnd, client_id, 0x4C4C]))  # "LL": HeLLo


@register
class RandomGeometric(Allocator):
    name = "rgd"
    summary = "RGD-HLA: each round b_i layers sampled (seeded) with the pattern's depth probabilities"

    def assign(self, rnd: int, client_id: int) -> Assignment:
        rng = round_rng(self.seed, rnd, client_id)
        positions = rgd_positions(self.cfg.pattern, len(self.layers), self.budgets[client_id], rng)
        return self.fixed(client_id, positions)
