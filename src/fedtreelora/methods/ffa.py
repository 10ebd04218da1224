"""FFA-LoRA: A stays frozen at its shared random init; only B trains and is averaged.

Every client derives the same A from the shared seed, so A never travels: the server sends only the
global B. ``ffa.rank_factor = 2`` is the paper's rank-2r setting (same communication as LoRA at rank r).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..adapters import State
from ..config import check
from .base import ClientInfo, ClientPlan, Layout, Method, register


@dataclass
class FFAOptions:
    rank_factor: int = 1  # LoRA rank = rank_factor * model.rank (2 = the paper's "FFA-LoRA (2r)")

    VARIANTS: ClassVar[dict[str, dict[str, str]]] = {
        "rank_factor": {"2": "rank 2r: the paper's FFA-LoRA (2r); as much traffic as LoRA at rank r"}
    }

    def validate(self) -> None:
        check(self.rank_factor >= 1, "ffa.rank_factor", f"must be >= 1 (got {self.rank_factor})")


@register
class FFALoRA(Method):
    name = "ffa"
    summary = "FFA-LoRA: A frozen at its shared random init; only B trained and averaged"
    Options = FFAOptions

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        super().__init__(options, layout, clients, rounds, seed)
        self.init = self.initial_lora("lora", rank=layout.rank * options.rank_factor)
        self.global_b = {k: v for k, v in self.init.items() if k.endswith(".B")}

    def init_client_state(self, client_id: int) -> State:
        return {k: v for k, v in self.init.items() if k.endswith(".A")}

    def plan(self, rnd: int) -> ClientPlan:
        return ClientPlan("federated", train=("*.lora.B",), upload=("*.lora.B",), keep=("*.lora.A",))

    def payload(self, client_id: int) -> State:
        return self.global_b

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        self.global_b = self.fedavg(uploads, self.global_b)
