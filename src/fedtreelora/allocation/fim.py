"""FIM-HLA: every round each client measures per-layer Fisher scores and trains its b_i top layers.

The reference code buckets the scores with k-means and orders the buckets wrongly; SPEC.md asks for the
ranking itself (``fisher.top_layers``).
"""

from .base import Allocator, Assignment, register


@register
class FisherAllocation(Allocator):
    name = "fim"
    summary = "FIM-HLA: each round, the client's b_i layers with the largest diagonal empirical Fisher"

    def assign(self, rnd: int, client_id: int) -> Assignment:
        return self.measure(client_id)
