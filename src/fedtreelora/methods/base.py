"""What a federated method is, and the registry the runtimes look methods up in.

Like a Flower strategy, a method says what each client is sent (``payload``), what a client trains,
uploads and keeps (``plan``), and how uploads are aggregated (``aggregate``). The round loop lives in the
runtimes and is written once; they never branch on a method's name. A method file registers itself with
``@register``; ``fedtreelora.methods`` imports every module in its folder, so a new method touches no
other file.
"""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from torch import Tensor

from ..adapters import AdaptedModule, State

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..topology import Topology

Phase = Literal["warmup", "federated", "local"]


@dataclass(frozen=True)
class ClientPlan:
    """What a client does with its adapter state in one round; names are matched as fnmatch patterns."""

    phase: Phase
    train: tuple[str, ...]  # tensors that receive gradients
    upload: tuple[str, ...] = ()  # tensors sent back to the server after training
    keep: tuple[str, ...] = ()  # tensors the client stores for its next round

    @staticmethod
    def matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
        return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def select(self, state: Mapping[str, Tensor], patterns: Sequence[str]) -> State:
        match = self.matcher(patterns)
        return {k: v for k, v in state.items() if match(k)}


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

    def layer_keys(self, layer: int) -> list[str]:
        return [m.key for m in self.modules if m.layer == layer]


@dataclass
class NoOptions:
    """Methods without settings of their own."""


class Method(ABC):
    """A federated fine-tuning method: server-side state plus the client's recipe."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for ``fedtreelora methods``
    Options: ClassVar[type] = NoOptions
    mixer: str = "sum"  # the forward rule (adapters.MIXERS) that combines this method's experts

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        self.options = options
        self.layout = layout
        self.clients = list(clients)
        self.rounds = rounds
        self.seed = seed
        total = sum(c.n_train for c in self.clients)
        self.weights = {c.client_id: c.n_train / total for c in self.clients}  # p_i
        self.topology_seconds = 0.0  # time spent building a topology inside aggregate()

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
