"""FedALT: an individual LoRA per client plus a frozen Rest-of-World LoRA, mixed per token.

The Rest-of-World adapter of client i is the unweighted mean of the OTHER clients' individual LoRAs from
the last round (A and B separately; absent in round 0). A per-module mixer ``softmax(Linear(d_in, 2) x)``
weights individual and Rest-of-World; the client trains its individual LoRA and the mixer, keeps both,
and uploads only the individual LoRA.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..adapters import State, rename_expert
from ..mixers import Gate, Mixer
from .base import ClientInfo, ClientPlan, Layout, Method, register


def rest_of_world(total: Mapping[str, Tensor], n: int, own: Mapping[str, Tensor] | None) -> State:
    """Unweighted mean of the others' LoRAs from the sum of all ``n`` uploads: ``(total - own) / (n - 1)``.

    ``own`` is None for a client that did not upload (then all ``n`` are others); empty if no others.
    """
    others = n - (own is not None)
    if others < 1:
        return {}
    return {k: (t - own[k] if own is not None else t) / others for k, t in total.items()}


@register
class FedALT(Method):
    name = "fedalt"
    summary = "FedALT: individual LoRA + frozen Rest-of-World LoRA (mean of the others), per-token mixer"

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        super().__init__(options, layout, clients, rounds, seed)
        self.mixer: Mixer = Gate("individual", "rest")
        self.last: Mapping[int, State] = {}
        self.total: State = {}  # sum of the last round's individual LoRAs

    def init_client_state(self, client_id: int) -> State:
        state = self.initial_lora("individual")
        for m in self.layout.modules:
            state[f"{m.key}.router.weight"] = torch.zeros(2, m.d_in)  # softmax(0) = equal weights
            state[f"{m.key}.router.bias"] = torch.zeros(2)
        return state

    def plan(self, rnd: int) -> ClientPlan:
        own = ("*.individual.*", "*.router.*")
        return ClientPlan("federated", train=own, upload=("*.individual.*",), keep=own)

    def payload(self, client_id: int) -> State:
        rest = rest_of_world(self.total, len(self.last), self.last.get(client_id))
        return rename_expert(rest, "individual", "rest")

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        self.last = dict(uploads)
        states = list(uploads.values())
        self.total = {k: torch.stack([s[k] for s in states]).sum(0) for k in states[0]} if states else {}
