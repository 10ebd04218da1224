"""FedTreeLoRA (SPEC.md): warmup, one global client tree, layer-wise K, cluster + external experts.

Rounds ``0 .. warmup_rounds-1`` are local training; at the end of the last warmup round clients upload
their LoRA, the server builds the topology once from the B matrices and the first experts from the warmup
LoRAs. Every later round a client receives, per layer, its cluster expert (trainable) and the external
expert (frozen average of everyone outside its cluster), trains them with its private mixing scalar
``alpha_i^l`` (kept in [0, 1] by a sigmoid, logit 0 = 0.5), and uploads the cluster expert.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ..adapters import State, init_lora
from ..aggregation import cluster_and_complement_averages
from ..config import check
from ..topology import Topology, build_topology
from .base import ClientInfo, ClientPlan, Layout, Method, register

if TYPE_CHECKING:
    from ..config import RunConfig


@dataclass
class FedTreeLoRAOptions:
    warmup_rounds: int = 5  # E_w, counted inside federation.rounds
    tau: float = 0.1  # score of K = 1: a layer splits only if its silhouette beats tau
    w: int = 2  # search window: K_l in {K_{l-1}, ..., K_{l-1} + w}
    distance: Literal["frobenius", "cosine"] = "frobenius"
    linkage: Literal["single", "complete", "average", "weighted"] = "average"
    clustering: Literal["adaptive", "fixed", "independent"] = "adaptive"  # the last two are ablations
    fixed_k: int = 2  # clustering = "fixed": every layer uses cut(fixed_k)
    interaction: Literal["scalar"] = "scalar"

    def validate(self) -> None:
        check(
            self.warmup_rounds >= 1, "fedtreelora.warmup_rounds", "must be >= 1 (the tree needs warmup LoRAs)"
        )
        check(self.w >= 0, "fedtreelora.w", f"must be >= 0 (got {self.w})")
        check(self.fixed_k >= 1, "fedtreelora.fixed_k", f"must be >= 1 (got {self.fixed_k})")

    def check_run(self, cfg: RunConfig) -> None:
        check(
            self.warmup_rounds < cfg.federation.rounds,
            "fedtreelora.warmup_rounds",
            f"must be < federation.rounds ({cfg.federation.rounds}) so that federated rounds remain",
        )
        check(
            self.clustering != "fixed" or self.fixed_k <= cfg.data.n_clients,
            "fedtreelora.fixed_k",
            f"must be <= data.n_clients ({cfg.data.n_clients})",
        )


@register
class FedTreeLoRA(Method):
    name = "fedtreelora"
    summary = "global client tree + layer-wise K; cluster expert mixed with a frozen external expert"
    Options = FedTreeLoRAOptions
    mixer = "scalar"

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        super().__init__(options, layout, clients, rounds, seed)
        self.opt: FedTreeLoRAOptions = options
        self.layers = sorted({m.layer for m in layout.modules})
        self._topology: Topology | None = None
        # Per layer (position in self.layers) and cluster: averaged tensors under their upload names.
        self._cluster: list[list[State]] = []
        self._external: list[list[State | None]] = []

    def init_client_state(self, client_id: int) -> State:
        state = init_lora(self.layout.modules, self.layout.rank, "cluster", self.seed)
        for layer in self.layers:
            state[f"layers.{layer}.mix.alpha"] = torch.zeros(())  # sigmoid(0) = 0.5
        return state

    def plan(self, rnd: int) -> ClientPlan:
        warmup = self.opt.warmup_rounds
        if rnd < warmup:
            # Clients upload their warmup LoRA once, at the end of the warmup.
            upload = ("*.cluster.*",) if rnd == warmup - 1 else ()
            return ClientPlan(
                "warmup", train=("*.cluster.*",), upload=upload, keep=("*.cluster.*", "*.mix.*")
            )
        return ClientPlan(
            "federated", train=("*.cluster.*", "*.mix.*"), upload=("*.cluster.*",), keep=("*.mix.*",)
        )

    def payload(self, client_id: int) -> State:
        if self._topology is None:
            return {}
        pos = self._position[client_id]
        out: State = {}
        for li, partition in enumerate(self._topology.partitions):
            c = partition[pos]
            out.update(self._cluster[li][c])
            external = self._external[li][c]
            if external is not None:
                out.update({k.replace(".cluster.", ".external."): v for k, v in external.items()})
        return out

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        if rnd < self.opt.warmup_rounds - 1:
            return
        ids = [c.client_id for c in self.clients]
        states = [uploads[i] for i in ids]
        if self._topology is None:
            start = time.perf_counter()
            self._topology = self._build_topology(states)
            self._position = {cid: pos for pos, cid in enumerate(ids)}
            self.topology_seconds = time.perf_counter() - start
        weights = [self.weights[i] for i in ids]
        self._cluster, self._external = [], []
        for li, layer in enumerate(self.layers):
            names = [k for k in states[0] if k.startswith(f"layers.{layer}.")]
            clusters, externals = cluster_and_complement_averages(
                states, weights, self._topology.partitions[li], names
            )
            self._cluster.append(clusters)
            self._external.append(externals)

    def _build_topology(self, states: Sequence[State]) -> Topology:
        """B_i^l = the flattened concatenation of client i's B matrices of every target module in layer l."""
        b_layers = []
        for layer in self.layers:
            keys = [f"{key}.cluster.B" for key in self.layout.layer_keys(layer)]
            rows = [torch.cat([s[k].reshape(-1) for k in keys]) for s in states]
            b_layers.append(torch.stack(rows).numpy().astype(np.float64))  # (N, D_l)
        o = self.opt
        return build_topology(
            b_layers,
            metric=o.distance,
            linkage=o.linkage,
            clustering=o.clustering,
            tau=o.tau,
            w=o.w,
            fixed_k=o.fixed_k,
        )

    def topology(self) -> Topology | None:
        return self._topology
