"""Local: every client trains its own LoRA; nothing is communicated."""

from collections.abc import Mapping

from ..adapters import State
from .base import ClientPlan, Method, register


@register
class Local(Method):
    name = "local"
    summary = "each client trains its own LoRA; no communication"

    def init_client_state(self, client_id: int) -> State:
        return self.initial_lora("lora")

    def plan(self, rnd: int) -> ClientPlan:
        return ClientPlan(phase="local", train=("*.lora.*",), keep=("*.lora.*",))

    def payload(self, client_id: int) -> State:
        return {}

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        pass
