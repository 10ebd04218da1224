"""FedALT: an individual LoRA per client plus a frozen Rest-of-World LoRA, mixed per token.

The Rest-of-World adapter of client i is the unweighted mean of the OTHER clients' individual LoRAs from
the last round (A and B separately; absent in round 0). A per-module mixer ``softmax(Linear(d_in, 2) x)``
weights individual and Rest-of-World; the client trains its individual LoRA and the mixer, keeps both,
and uploads only the individual LoRA.

Under Fed-HeLLo budgets a client uploads only the layers it trained; its other layers' individual LoRA is
unchanged since its last upload, so the server keeps each client's latest upload per tensor, and the
Rest-of-World stays the mean of the others' current individual LoRAs.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..adapters import State, rename_expert
from ..mixers import Gate, Mixer
from .base import ClientInfo, ClientPlan, Layout, Method, register


def rest_of_world(
    total: Mapping[str, Tensor], count: Mapping[str, int], own: Mapping[str, Tensor] | None
) -> State:
    """Unweighted mean of the others' LoRAs from the sums ``total`` over ``count`` clients, per tensor:
    ``(total - own) / (count - 1)`` where the client itself is among them, else ``total / count``.

    A tensor no other client holds is left out (the Gate mixer then uses the individual expert alone).
    """
    own = own or {}
    out: State = {}
    for k, t in total.items():
        others = count[k] - (k in own)
        if others >= 1:
            out[k] = (t - own[k] if k in own else t) / others
    return out


@register
class FedALT(Method):
    name = "fedalt"
    summary = "FedALT: individual LoRA + frozen Rest-of-World LoRA (mean of the others), per-token mixer"

    def __init__(self, options: Any, layout: Layout, clients: Sequence[ClientInfo], rounds: int, seed: int):
        super().__init__(options, layout, clients, rounds, seed)
        self.mixer: Mixer = Gate("individual", "rest")
        self.latest: dict[int, State] = {}  # per client, the latest upload of each individual tensor
        self.total: State = {}  # per tensor, the sum of the clients' latest values
        self.count: dict[str, int] = {}  # per tensor, how many clients hold a latest value

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
        rest = rest_of_world(self.total, self.count, self.latest.get(client_id))
        return rename_expert(rest, "individual", "rest")

    def aggregate(self, rnd: int, uploads: Mapping[int, State]) -> None:
        for cid, upload in uploads.items():
            self.latest.setdefault(cid, {}).update(upload)
        states = [self.latest[c.client_id] for c in self.clients if c.client_id in self.latest]
        names = dict.fromkeys(k for s in states for k in s)
        self.total = {k: torch.stack([s[k] for s in states if k in s]).sum(0) for k in names}
        self.count = {k: sum(k in s for s in states) for k in names}
