"""Zero-shot: the backbone as shipped, no adapter, nothing trained or sent. A reference row, not a method.

Tables need it to show what training adds (on generation, an instruction-tuned model already answers some
tasks). Run it for one round: every round would score the same model again.
"""

from collections.abc import Mapping

from ..adapters import State
from .base import ClientPlan, Method, register


@register
class ZeroShot(Method):
    name = "zeroshot"
    summary = "reference: the base model untrained (no LoRA, no communication); run it for 1 round"

    def init_client_state(self, client_id: int) -> State:
        return {}

    def plan(self, rnd: int) -> ClientPlan:
        return ClientPlan(phase="local", train=())

    def payload(self, client_id: int) -> State:
        return {}

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        pass
