"""FedSA-LoRA: A is shared (averaged over all clients), B stays with its client."""

from collections.abc import Mapping, Sequence
from typing import Any

from ..adapters import State
from .base import ClientInfo, ClientPlan, Layout, Method, register


@register
class FedSALoRA(Method):
    name = "fedsa"
    summary = "FedSA-LoRA: A averaged over all clients (the only upload), B kept local"

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        super().__init__(options, layout, clients, rounds, seed)
        init = self.initial_lora("lora")
        self.global_a = {k: v for k, v in init.items() if k.endswith(".A")}
        self.init_b = {k: v for k, v in init.items() if k.endswith(".B")}

    def init_client_state(self, client_id: int) -> State:
        return dict(self.init_b)

    def plan(self, rnd: int) -> ClientPlan:
        return ClientPlan("federated", train=("*.lora.*",), upload=("*.lora.A",), keep=("*.lora.B",))

    def payload(self, client_id: int) -> State:
        return self.global_a

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        self.global_a = self.fedavg(uploads, self.global_a)
