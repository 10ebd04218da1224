"""FedLEASE: warmup, cluster clients by LoRA B similarity, one expert per cluster, a top-M router.

After ``warmup_rounds`` of local training the server clusters the clients once: distance = mean over
layers of ``1 - cos(B_i^l, B_j^l)``, average-linkage agglomerative clustering, ``k`` in ``2..k_max`` by
silhouette (ties: smaller k). Cluster c's expert starts as its members' warmup average. Every client holds
all M experts; from its point of view ``expert_0`` is its own cluster's (trained) and ``expert_1..`` the
others' (frozen). A per-module router ``Linear(d_in, 2M-1)`` picks top-M (outputs >= M mean the own
expert; see ``mixers.TopM``). Own expert and router are averaged within the cluster (weights p_j).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..adapters import State, rename_expert
from ..aggregation import cluster_and_complement_averages
from ..config import check
from ..mixers import Mixer, TopM
from ..topology import Topology, build_tree, cut, global_distance, layer_distances, silhouette
from .base import ClientInfo, ClientPlan, Layout, Method, check_warmup, register, warmup_plan

if TYPE_CHECKING:
    from ..config import RunConfig


@dataclass
class FedLEASEOptions:
    warmup_rounds: int = 5  # E_w, counted inside federation.rounds
    k_max: int = 4  # largest number of clusters (experts) considered

    def validate(self) -> None:
        check(self.k_max >= 2, "fedlease.k_max", f"must be >= 2 (got {self.k_max})")

    def check_run(self, cfg: RunConfig) -> None:
        check_warmup("fedlease", self.warmup_rounds, cfg.federation.rounds)


def choose_clusters(
    b_layers: Sequence[Any], k_max: int, observed: Sequence[Any] | None = None
) -> tuple[Topology, dict[int, float]]:
    """FedLEASE's clustering: mean cosine distance over layers, average linkage, k by silhouette.

    Returns the clustering as a Topology (the same partition on every layer) and the score of each k.
    With fewer than 3 clients no k in 2..N-1 exists and everyone forms one cluster. ``observed``: which
    clients trained each layer (see ``topology.layer_distances``).
    """
    d_layers = layer_distances(b_layers, "cosine", observed)
    d = global_distance(d_layers)
    z = build_tree(d, "average")
    n = d.shape[0]
    scores = {k: silhouette(d, cut(z, k)) for k in range(2, min(k_max, n - 1) + 1)}
    k = max(scores, key=lambda kk: (scores[kk], -kk)) if scores else 1  # ties: the smaller k
    labels = [int(v) for v in cut(z, k)]
    n_layers = len(b_layers)
    return Topology([k] * n_layers, [labels] * n_layers, z, [dict(scores)] * n_layers), scores


@register
class FedLEASE(Method):
    name = "fedlease"
    summary = "FedLEASE: cosine clustering of warmup LoRAs, one expert per cluster, top-M router per module"
    Options = FedLEASEOptions
    mixer: Mixer = TopM()

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        super().__init__(options, layout, clients, rounds, seed)
        self.opt: FedLEASEOptions = options
        self._topology: Topology | None = None
        self._labels: dict[int, int] = {}
        self._cluster: list[State] = []  # per cluster: its expert (as "expert_0") and router

    def init_client_state(self, client_id: int) -> State:
        return self.initial_lora("expert_0")

    def plan(self, rnd: int) -> ClientPlan:
        if rnd < self.opt.warmup_rounds:
            return warmup_plan(rnd, self.opt.warmup_rounds, "expert_0")
        own = ("*.expert_0.*", "*.router.*")
        return ClientPlan("federated", train=own, upload=own)

    def payload(self, client_id: int) -> State:
        if not self._cluster:
            return {}
        c = self._labels[client_id]
        out = dict(self._cluster[c])  # own expert (expert_0) and the cluster's router
        others = [j for j in range(len(self._cluster)) if j != c]
        for slot, j in enumerate(others, start=1):
            own_expert = {k: v for k, v in self._cluster[j].items() if ".router." not in k}
            out.update(rename_expert(own_expert, "expert_0", f"expert_{slot}"))
        return out

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        if rnd < self.opt.warmup_rounds - 1:
            return
        ids, states = self.in_order(uploads)
        if self._topology is None:
            rows, seen = self.layout.b_rows(states, "expert_0"), self.layout.observed(states, "expert_0")
            self._topology, _ = self.timed_topology(lambda: choose_clusters(rows, self.opt.k_max, seen))
            self._labels = dict(zip(ids, self._topology.partitions[0], strict=True))
            m = self._topology.k_per_layer[0]
            routers = {
                f"{mod.key}.router.weight": torch.zeros(2 * m - 1, mod.d_in) for mod in self.layout.modules
            }
            states = [{**s, **routers} for s in states]  # routers start at zero: experts equally likely
            # An expert's layer that none of its members trained in the warmup stays at the initial LoRA.
            self._cluster = [{**self.initial_lora("expert_0"), **routers} for _ in range(m)]
        weights = [self.weights[i] for i in ids]
        clusters, _ = cluster_and_complement_averages(states, weights, [self._labels[i] for i in ids])
        self._cluster = [{**old, **new} for old, new in zip(self._cluster, clusters, strict=True)]

    def topology(self) -> Topology | None:
        return self._topology
