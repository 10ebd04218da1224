"""FedTreeLoRA (SPEC.md): warmup, one global client tree, layer-wise K, cluster + external experts.

Rounds ``0 .. warmup_rounds-1`` are local training; at the end of the last warmup round clients upload
their LoRA, the server builds the topology once from the B matrices and the first experts from the warmup
LoRAs. Every later round a client receives, per layer, its cluster expert (trainable) and the external
expert (frozen average of everyone outside its cluster), trains them with its private mixing scalar
``alpha_i^l`` (kept in [0, 1] by a sigmoid, starting at ``alpha_init``), and uploads the cluster expert.

Interaction variants change only what is sent beside the cluster expert and the forward rule:
``isolationist`` sends no external expert, ``decomposed`` sends one frozen expert per other cluster of the
layer (each with its own scalar), ``router`` replaces the scalar by a per-module softmax gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor

from ..adapters import State, rename_expert
from ..aggregation import cluster_and_complement_averages
from ..config import check
from ..mixers import Gate, Mixer, Scalar
from ..topology import Scoring, Topology, build_topology
from .base import ClientInfo, ClientPlan, Layout, Method, check_warmup, register, warmup_plan

if TYPE_CHECKING:
    from ..config import RunConfig

Interaction = Literal["scalar", "isolationist", "decomposed", "router"]


@dataclass
class FedTreeLoRAOptions:
    warmup_rounds: int = 5  # E_w, counted inside federation.rounds
    tau: float = 0.1  # score of K = 1: a layer splits only if its silhouette beats tau
    w: int = 2  # search window: K_l in {K_{l-1}, ..., K_{l-1} + w}
    distance: Literal["frobenius", "cosine"] = "frobenius"
    # Fed-HeLLo budgets: score a layer's splits over the clients that trained it ("observed") or all ("all")
    silhouette: Scoring = "all"
    linkage: Literal["single", "complete", "average", "weighted"] = "average"
    clustering: Literal["adaptive", "fixed", "independent"] = "adaptive"  # the last two are ablations
    fixed_k: int = 2  # clustering = "fixed": every layer uses cut(fixed_k)
    interaction: Interaction = "scalar"
    alpha_init: float = 0.5  # external expert's weight when a client first receives it (SPEC: 0.5)

    VARIANTS: ClassVar[dict[str, dict[str, str]]] = {
        "interaction": {
            "scalar": "cluster expert + sigmoid(alpha) x frozen external expert (default)",
            "isolationist": "cluster expert only; no external expert",
            "decomposed": "one frozen external expert per other cluster, each with its own scalar",
            "router": "per-module softmax router over {cluster, external} instead of the scalar",
        },
        "clustering": {
            "adaptive": "layer-wise K along the one global tree (default)",
            "fixed": "ablation: every layer uses cut(fixed_k) of the global tree",
            "independent": "ablation: a separate tree and K per layer, no monotonicity",
        },
        "distance": {"frobenius": "||B_i - B_j||_F (default)", "cosine": "1 - cos(B_i, B_j)"},
        "silhouette": {
            "all": "a layer's silhouettes over every client (default)",
            "observed": "over the clients that trained the layer in the warmup (Fed-HeLLo budgets)",
        },
    }

    def validate(self) -> None:
        check(self.w >= 0, "fedtreelora.w", f"must be >= 0 (got {self.w})")
        check(self.fixed_k >= 1, "fedtreelora.fixed_k", f"must be >= 1 (got {self.fixed_k})")
        a = self.alpha_init
        check(0.0 < a < 1.0, "fedtreelora.alpha_init", f"must be in (0, 1): it is a sigmoid (got {a})")

    def check_run(self, cfg: RunConfig) -> None:
        check_warmup("fedtreelora", self.warmup_rounds, cfg.federation.rounds)
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

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        super().__init__(options, layout, clients, rounds, seed)
        self.opt: FedTreeLoRAOptions = options
        self.mixer: Mixer = Gate("cluster", "external") if self.opt.interaction == "router" else Scalar()
        self.layers = layout.layers
        self._topology: Topology | None = None
        self._position: dict[int, int] = {}
        # Per layer (position in self.layers): the names a client uploads for it.
        self._names = [
            [f"{key}.cluster.{ab}" for key in layout.layer_keys(layer) for ab in ("A", "B")]
            for layer in self.layers
        ]
        # Per layer and cluster: the cluster expert, the external expert (None: the cluster is everyone),
        # and what the cluster's members receive for that layer (both, as the interaction variant says).
        self._clusters: list[list[State]] = []
        self._externals: list[list[State | None]] = []
        self._pieces: list[list[State]] = []

    def init_client_state(self, client_id: int) -> State:
        return self.initial_lora("cluster")

    def plan(self, rnd: int) -> ClientPlan:
        mixing = ("*.mix.*", "*.router.*")  # alpha(s) or routers: trained, never uploaded
        if rnd < self.opt.warmup_rounds:
            return warmup_plan(rnd, self.opt.warmup_rounds, "cluster", keep_after=mixing)
        return ClientPlan("federated", train=("*.cluster.*", *mixing), upload=("*.cluster.*",), keep=mixing)

    def client_state(self, kept: Mapping[str, Tensor], payload: Mapping[str, Tensor]) -> State:
        """Create a client's mixing parameters the first time it receives the experts they weight."""
        state = {**kept, **payload}
        for name, tensor in payload.items():
            head, _, leaf = name.rpartition(".")
            if leaf != "A" or ".external" not in head:
                continue
            module, _, expert = head.rpartition(".")  # layers.l.t, external{suffix}
            layer = module.rsplit(".", 1)[0]  # layers.l
            if self.opt.interaction == "router":
                state.setdefault(f"{module}.router.weight", torch.zeros(2, tensor.shape[1]))
            else:
                logit = torch.logit(torch.tensor(self.opt.alpha_init, dtype=torch.float32))
                state.setdefault(f"{layer}.mix.alpha{expert.removeprefix('external')}", logit)
        return state

    def payload(self, client_id: int) -> State:
        """The client's pieces, one per layer, prebuilt by aggregate() for every (layer, cluster)."""
        if self._topology is None:
            return {}
        pos = self._position[client_id]
        out: State = {}
        for li, partition in enumerate(self._topology.partitions):
            out.update(self._pieces[li][partition[pos]])
        return out

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        if rnd < self.opt.warmup_rounds - 1:
            return
        ids, states = self.in_order(uploads)
        if self._topology is None:
            self._topology = self.timed_topology(lambda: self._build_topology(states))
            self._position = {cid: pos for pos, cid in enumerate(ids)}
            self._start_experts()
        weights = [self.weights[i] for i in ids]
        # Layers with the same K share one partition (cuts of one tree): average all their tensors at once.
        by_partition: dict[tuple[int, ...], list[int]] = {}
        for li, partition in enumerate(self._topology.partitions):
            by_partition.setdefault(tuple(partition), []).append(li)
        for labels, layer_ids in by_partition.items():
            names = [n for li in layer_ids for n in self._names[li]]
            clusters, externals = cluster_and_complement_averages(states, weights, labels, names)
            for li in layer_ids:
                # A tensor no member (no outsider) trained this round keeps its value (Fed-HeLLo budgets).
                mine = [
                    {**old, **pick(new, self._names[li])}
                    for old, new in zip(self._clusters[li], clusters, strict=True)
                ]
                theirs = [
                    None if new is None or old is None else {**old, **pick(new, self._names[li])}
                    for old, new in zip(self._externals[li], externals, strict=True)
                ]
                self._clusters[li], self._externals[li] = mine, theirs
                self._pieces[li] = [self._piece(c, mine, theirs) for c in range(len(mine))]

    def _start_experts(self) -> None:
        """Before the first average every expert is the shared initial LoRA: what a cluster's expert stays
        on a layer none of its members trained in the warmup."""
        assert self._topology is not None
        init = self.initial_lora("cluster")
        self._clusters, self._externals, self._pieces = [], [], [[] for _ in self.layers]
        for li, k in enumerate(self._topology.k_per_layer):
            start = {n: init[n] for n in self._names[li]}
            self._clusters.append([dict(start) for _ in range(k)])
            self._externals.append([dict(start) if k > 1 else None for _ in range(k)])

    def _piece(self, c: int, clusters: list[State], externals: list[State | None]) -> State:
        """What a member of cluster ``c`` receives for one layer under the chosen interaction variant."""
        piece = dict(clusters[c])
        if self.opt.interaction == "decomposed":
            for other, expert in enumerate(clusters):
                if other != c:
                    piece.update(rename_expert(expert, "cluster", f"external_{other}"))
        elif self.opt.interaction != "isolationist" and (external := externals[c]) is not None:
            piece.update(rename_expert(external, "cluster", "external"))
        return piece

    def _build_topology(self, states: Sequence[State]) -> Topology:
        o = self.opt
        return build_topology(
            self.layout.b_rows(states, "cluster"),
            metric=o.distance,
            linkage=o.linkage,
            clustering=o.clustering,
            tau=o.tau,
            w=o.w,
            fixed_k=o.fixed_k,
            observed=self.layout.observed(states, "cluster"),
            scoring=o.silhouette,
        )

    def topology(self) -> Topology | None:
        return self._topology


def pick(state: Mapping[str, Tensor], names: Sequence[str]) -> State:
    """The entries of ``state`` among ``names`` (absent names are skipped)."""
    return {n: state[n] for n in names if n in state}
