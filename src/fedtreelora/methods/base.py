"""What a federated method is, and the registry the runtimes look methods up in.

Like a Flower strategy, a method says what each client is sent (``payload``), what a client trains,
uploads and keeps (``plan``), and how uploads are aggregated (``aggregate``). The round loop lives in the
runtimes and is written once; they never branch on a method's name. A method file registers itself with
``@register``; ``fedtreelora.methods`` imports every module in its folder, so a new method touches no
other file.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..adapters import AdaptedModule, State, init_lora, layer_of
from ..aggregation import partial_average
from ..config import check
from ..mixers import Mixer, Sum

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..topology import Topology

Phase = Literal["warmup", "federated", "local"]
T = TypeVar("T")


@dataclass(frozen=True)
class ClientPlan:
    """What a client does with its adapter state in one round; names are matched as fnmatch patterns.

    A method writes the first five fields, the same for every client. The runtime then restricts the plan
    to the layers the client's allocation gives it (Fed-HeLLo): ``layers`` bounds what trains, ``sent``
    what is uploaded. Tensors outside the layers (the head) are never restricted.
    """

    phase: Phase
    train: tuple[str, ...]  # tensors that receive gradients
    upload: tuple[str, ...] = ()  # tensors sent back to the server after training
    keep: tuple[str, ...] = ()  # tensors the client stores for its next round
    then_train: tuple[str, ...] = ()  # a second stage of local epochs on these (FedDPA: local, then global)
    layers: frozenset[int] | None = None  # layers whose tensors may train; None = every layer
    sent: frozenset[int] | None = None  # layers whose tensors may be uploaded; None = every layer

    @staticmethod
    def matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
        return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)

    @staticmethod
    def _within(layers: frozenset[int] | None, match: Callable[[str], bool]) -> Callable[[str], bool]:
        if layers is None:
            return match
        return lambda name: match(name) and ((layer := layer_of(name)) is None or layer in layers)

    def restricted(self, layers: Iterable[int], sent: Iterable[int]) -> ClientPlan:
        """This plan for a client that trains only ``layers`` and uploads only ``sent``."""
        return dataclasses.replace(self, layers=frozenset(layers), sent=frozenset(sent))

    def trainer(self, patterns: Sequence[str]) -> Callable[[str], bool]:
        """Which tensors train in a stage on ``patterns``: matched, and in a layer this client trains."""
        return self._within(self.layers, self.matcher(patterns))

    def select(self, state: Mapping[str, Tensor], patterns: Sequence[str]) -> State:
        match = self.matcher(patterns)
        return {k: v for k, v in state.items() if match(k)}

    def uploads(self, state: Mapping[str, Tensor]) -> State:
        match = self._within(self.sent, self.matcher(self.upload))
        return {k: v for k, v in state.items() if match(k)}


def warmup_plan(rnd: int, warmup_rounds: int, expert: str, keep_after: tuple[str, ...] = ()) -> ClientPlan:
    """Local training of one expert; its A and B are uploaded once, at the end of the last warmup round.

    After that upload the client keeps only ``keep_after``: the server answers with the experts it built.
    """
    own = (f"*.{expert}.*",)
    last = rnd == warmup_rounds - 1
    return ClientPlan("warmup", train=own, upload=own if last else (), keep=keep_after if last else own)


def check_warmup(section: str, warmup_rounds: int, rounds: int) -> None:
    """Warmups count inside the round budget and must leave at least one federated round."""
    check(warmup_rounds >= 1, f"{section}.warmup_rounds", "must be >= 1 (clustering needs warmup LoRAs)")
    check(
        warmup_rounds < rounds,
        f"{section}.warmup_rounds",
        f"must be < federation.rounds ({rounds}) so that federated rounds remain",
    )


@dataclass(frozen=True)
class ClientInfo:
    client_id: int
    n_train: int


@dataclass(frozen=True)
class Layout:
    """What the server knows about the model: the adapted modules and the LoRA rank."""

    modules: tuple[AdaptedModule, ...]
    rank: int

    @property
    def n_layers(self) -> int:
        return len({m.layer for m in self.modules})

    @property
    def layers(self) -> list[int]:
        return sorted({m.layer for m in self.modules})

    def layer_keys(self, layer: int) -> list[str]:
        return [m.key for m in self.modules if m.layer == layer]

    def b_rows(self, states: Sequence[Mapping[str, Tensor]], expert: str) -> list[np.ndarray]:
        """Per layer an (N, D_l) array; row i = client i's B matrices of the layer, flattened.

        A client that did not upload the layer (it never trained it) gets a zero row; ``observed`` says which.
        """
        out = []
        for layer in self.layers:
            keys = [f"{key}.{expert}.B" for key in self.layer_keys(layer)]
            width = sum(m.d_out * self.rank for m in self.modules if m.layer == layer)
            rows = [
                torch.cat([s[k].reshape(-1) for k in keys]) if keys[0] in s else torch.zeros(width)
                for s in states
            ]
            out.append(torch.stack(rows).float().numpy())  # float32: see topology.layer_distances
        return out

    def observed(self, states: Sequence[Mapping[str, Tensor]], expert: str) -> list[np.ndarray] | None:
        """Per layer an (N,) bool array: which clients uploaded the layer's B; None when all did."""
        out = [
            np.array([f"{self.layer_keys(layer)[0]}.{expert}.B" in s for s in states])
            for layer in self.layers
        ]
        return None if all(o.all() for o in out) else out


@dataclass
class NoOptions:
    """Methods without settings of their own."""


class Method(ABC):
    """A federated fine-tuning method: server-side state plus the client's recipe."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for ``fedtreelora methods``
    Options: ClassVar[type] = NoOptions
    mixer: Mixer = Sum()  # the forward rule that combines this method's experts on every module

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        self.options = options
        self.layout = layout
        self.clients = list(clients)
        self.rounds = rounds
        self.seed = seed
        total = sum(c.n_train for c in self.clients)
        self.weights = {c.client_id: c.n_train / total for c in self.clients}  # p_i
        self.topology_seconds = 0.0  # time spent building a topology inside aggregate()
        self._initial: dict[tuple[str, int, int], State] = {}

    def fedavg(self, uploads: Mapping[int, State], previous: Mapping[str, Tensor]) -> State:
        """FedAvg of the uploads with weights p_i, renormalised per tensor over the clients that uploaded it;
        a tensor nobody uploaded (nobody trained its layer this round) keeps its ``previous`` value."""
        ids = sorted(uploads)
        return {**previous, **partial_average([uploads[i] for i in ids], [self.weights[i] for i in ids])}

    def in_order(self, uploads: Mapping[int, State]) -> tuple[list[int], list[State]]:
        """Client ids and their uploads in the fixed client order (positions in a topology); a client that
        did not reply this round (dropped, rejected) has an empty upload: it trained nothing anyone sees."""
        ids = [c.client_id for c in self.clients]
        return ids, [uploads.get(i, {}) for i in ids]

    def timed_topology(self, build: Callable[[], T]) -> T:
        """Run a one-off clustering step and record its time apart from aggregation time."""
        start = time.perf_counter()
        result = build()
        self.topology_seconds = time.perf_counter() - start
        return result

    def initial_lora(self, expert: str, rank: int | None = None, seed_offset: int = 0) -> State:
        """A fresh LoRA expert from the run's seed, built once: every client shares the same tensors.

        Sharing is safe because a client never writes into a tensor it was given (``AdapterHost.load``
        copies), and it keeps 1,000 virtual clients from holding 1,000 identical initial adapters.
        """
        key = (expert, rank or self.layout.rank, seed_offset)
        if key not in self._initial:
            self._initial[key] = init_lora(self.layout.modules, key[1], expert, self.seed + seed_offset)
        return dict(self._initial[key])

    @abstractmethod
    def init_client_state(self, client_id: int) -> State:
        """The adapter tensors a client holds before round 0."""

    @abstractmethod
    def plan(self, rnd: int) -> ClientPlan:
        """What every client trains, uploads and keeps in round ``rnd`` (0-based)."""

    @abstractmethod
    def payload(self, client_id: int) -> State:
        """What the server sends client ``client_id`` now (also what the client is evaluated with)."""

    @abstractmethod
    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        """Fold the clients' uploads of round ``rnd`` into the server state."""

    def client_state(self, kept: Mapping[str, Tensor], payload: Mapping[str, Tensor]) -> State:
        """Client side: the state to train or score, from what the client kept and what it received."""
        return {**kept, **payload}

    def trainable_count(self, rnd: int, state: Mapping[str, Tensor]) -> int:
        """Parameters a client trains in round ``rnd`` (for the parameter table)."""
        plan = self.plan(rnd)
        match = ClientPlan.matcher(plan.train + plan.then_train)
        return sum(t.numel() for k, t in state.items() if match(k))

    def topology(self) -> Topology | None:
        return None


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if cls.name in REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def options_for() -> dict[str, type]:
    return {name: cls.Options for name, cls in REGISTRY.items()}


def create(cfg: RunConfig, layout: Layout, clients: Sequence[ClientInfo]) -> Method:
    return REGISTRY[cfg.method](cfg.options, layout, clients, cfg.federation.rounds, cfg.seed)
