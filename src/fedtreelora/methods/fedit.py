"""FedIT: FedAvg of A and B separately (weights p_i); every client receives the global LoRA."""

from collections.abc import Mapping, Sequence
from typing import Any

from ..adapters import State
from .base import ClientInfo, ClientPlan, Layout, Method, register


@register
class FedIT(Method):
    name = "fedit"
    summary = "FedAvg of LoRA A and B (weights p_i); one global adapter"

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        super().__init__(options, layout, clients, rounds, seed)
        self.global_lora = self.initial_lora("lora")

    def init_client_state(self, client_id: int) -> State:
        return {}

    def plan(self, rnd: int) -> ClientPlan:
        return ClientPlan(phase="federated", train=("*.lora.*",), upload=("*.lora.*",))

    def payload(self, client_id: int) -> State:
        return self.global_lora

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        self.global_lora = self.fedavg(uploads, self.global_lora)
