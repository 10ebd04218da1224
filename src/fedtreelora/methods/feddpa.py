"""FedDPA (FedDPA-T): a global adapter G (FedAvg) and a personal adapter P, mixed (1-lam) G + lam P.

Each round the client first trains P with G frozen, then G with P frozen (two stages of the one loop);
only G travels. The paper's optional instance-wise inference weighting is not implemented: lam is fixed.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..adapters import State
from ..config import check
from ..mixers import Convex, Mixer
from .base import ClientInfo, ClientPlan, Layout, Method, register


@dataclass
class FedDPAOptions:
    lam: float = 0.5  # weight of the personal adapter P

    def validate(self) -> None:
        check(0.0 <= self.lam <= 1.0, "feddpa.lam", f"must be in [0, 1] (got {self.lam})")


@register
class FedDPA(Method):
    name = "feddpa"
    summary = "FedDPA-T: global adapter (FedAvg) + personal adapter, (1-lam) G + lam P; P then G each round"
    Options = FedDPAOptions

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        super().__init__(options, layout, clients, rounds, seed)
        self.mixer: Mixer = Convex("global", "local", options.lam)
        self.global_g = self.initial_lora("global")

    def init_client_state(self, client_id: int) -> State:
        # A different A than G's, so that P and G do not start as the same adapter.
        return self.initial_lora("local", seed_offset=1)

    def plan(self, rnd: int) -> ClientPlan:
        return ClientPlan(
            "federated",
            train=("*.local.*",),
            then_train=("*.global.*",),
            upload=("*.global.*",),
            keep=("*.local.*",),
        )

    def payload(self, client_id: int) -> State:
        return self.global_g

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        self.global_g = self.fedavg(uploads, self.global_g)
