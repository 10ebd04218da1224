"""Forward rules: how one module combines the outputs of the LoRA experts a client holds.

Every expert ``e`` on a module contributes ``delta_e = s_e * B_e A_e dropout(x)`` of shape (..., d_out). A
mixer turns the dict of deltas into the single term added to ``W0 x``. Methods pick (and parametrise) a mixer;
the training loop and the adapter never change. Learnable mixing parameters live in the client state:
per layer (``layers.l.mix.*``, ``module.layer_params``) or per module (``module.params``).

Each mixer also says how its rule is one plain LoRA (``export``): a fixed weighted sum of experts is exactly
the LoRA whose A stacks the experts' A and whose B stacks their weighted B (rank = the sum of ranks). An
input-dependent gate is not a fixed linear map, and no LoRA expresses it: those mixers refuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .adapters import LoRALinear


class NotExportable(ValueError):
    """The forward rule has no exact single-LoRA form (the message says why)."""


Weighted = list[tuple[str, float | Tensor]]  # experts and the weight each enters the module's output with


class Mixer(Protocol):
    def __call__(self, x: Tensor, deltas: Mapping[str, Tensor], module: LoRALinear) -> Tensor: ...

    def export(
        self, experts: Sequence[str], params: Mapping[str, Tensor], layer: Mapping[str, Tensor]
    ) -> Weighted:
        """The experts of one module with their fixed weights, or NotExportable."""
        ...


@dataclass(frozen=True)
class Sum:
    """Plain LoRA (one expert), or an unweighted sum of experts."""

    def __call__(self, x: Tensor, deltas: Mapping[str, Tensor], module: LoRALinear) -> Tensor:
        values = list(deltas.values())
        out = values[0]
        for v in values[1:]:
            out = out + v
        return out

    def export(
        self, experts: Sequence[str], params: Mapping[str, Tensor], layer: Mapping[str, Tensor]
    ) -> Weighted:
        return [(e, 1.0) for e in experts]


@dataclass(frozen=True)
class Scalar:
    """FedTreeLoRA: ``cluster + sum_s sigmoid(alpha{s}) * external{s}``, one scalar per layer and external.

    ``alpha`` is shared by the layer's modules (``layers.l.mix.alpha{s}``); the decomposed variant's
    experts ``external_3`` pair with ``alpha_3``.
    """

    def __call__(self, x: Tensor, deltas: Mapping[str, Tensor], module: LoRALinear) -> Tensor:
        out = deltas["cluster"]
        for name, delta in deltas.items():
            if name.startswith("external"):
                logit = module.layer_params["alpha" + name.removeprefix("external")]
                out = out + torch.sigmoid(logit) * delta
        return out

    def export(
        self, experts: Sequence[str], params: Mapping[str, Tensor], layer: Mapping[str, Tensor]
    ) -> Weighted:
        out: Weighted = [("cluster", 1.0)]
        for e in experts:
            if e.startswith("external"):
                out.append((e, torch.sigmoid(layer["alpha" + e.removeprefix("external")])))
        return out


@dataclass(frozen=True)
class Gate:
    """Per-token softmax gate over two experts: ``softmax(W x + b)`` weights ``own`` and ``other``.

    The router (``router.weight`` (2, d_in), optional ``router.bias`` (2,)) is a module parameter. Without
    the ``other`` expert (e.g. FedALT's first round) the output is the ``own`` expert alone.
    """

    own: str
    other: str

    def __call__(self, x: Tensor, deltas: Mapping[str, Tensor], module: LoRALinear) -> Tensor:
        if self.other not in deltas:
            return deltas[self.own]
        logits = x @ module.params["router.weight"].T  # (..., 2)
        if "router.bias" in module.params:
            logits = logits + module.params["router.bias"]
        gate = torch.softmax(logits, dim=-1)
        return gate[..., :1] * deltas[self.own] + gate[..., 1:] * deltas[self.other]

    def export(
        self, experts: Sequence[str], params: Mapping[str, Tensor], layer: Mapping[str, Tensor]
    ) -> Weighted:
        if self.other not in experts:
            return [(self.own, 1.0)]
        raise NotExportable(
            "a per-token softmax gate weights the experts differently for every input, so no single LoRA "
            "equals this model (FedALT, FedTreeLoRA's router variant)"
        )


@dataclass(frozen=True)
class Convex:
    """FedDPA: ``(1 - lam) * first + lam * second`` with a fixed ``lam``."""

    first: str
    second: str
    lam: float

    def __call__(self, x: Tensor, deltas: Mapping[str, Tensor], module: LoRALinear) -> Tensor:
        if self.first not in deltas:
            return deltas[self.second]
        return (1 - self.lam) * deltas[self.first] + self.lam * deltas[self.second]

    def export(
        self, experts: Sequence[str], params: Mapping[str, Tensor], layer: Mapping[str, Tensor]
    ) -> Weighted:
        if self.first not in experts:
            return [(self.second, 1.0)]
        return [(self.first, 1 - self.lam), (self.second, self.lam)]


@dataclass(frozen=True)
class TopM:
    """FedLEASE: a router ``Linear(d_in, 2M-1)``, softmax, top-M, renormalised.

    Experts are ``expert_0 .. expert_{M-1}`` from the client's point of view: ``expert_0`` is its own
    cluster's expert, so router outputs ``0..M-1`` pick expert ``j`` and outputs ``>= M`` all mean the
    client's own expert (index 0). Without a router (warmup) the own expert acts alone.
    """

    def __call__(self, x: Tensor, deltas: Mapping[str, Tensor], module: LoRALinear) -> Tensor:
        if "router.weight" not in module.params:
            return deltas["expert_0"]
        m = len(deltas)
        stacked = torch.stack([deltas[f"expert_{j}"] for j in range(m)], dim=-1)  # (..., d_out, M)
        logits = x @ module.params["router.weight"].T  # (..., 2M-1)
        probs = torch.softmax(logits, dim=-1)
        top, idx = probs.topk(m, dim=-1)  # (..., M)
        top = top / top.sum(-1, keepdim=True)
        idx = torch.where(idx >= m, torch.zeros_like(idx), idx)  # outputs >= M mean the own expert
        weights = torch.zeros(*top.shape[:-1], m, dtype=top.dtype).scatter_add(-1, idx, top)  # (..., M)
        return (stacked * weights.unsqueeze(-2)).sum(-1)

    def export(
        self, experts: Sequence[str], params: Mapping[str, Tensor], layer: Mapping[str, Tensor]
    ) -> Weighted:
        if "router.weight" not in params:
            return [("expert_0", 1.0)]
        raise NotExportable(
            "a per-token top-M router picks and weights experts for every input, so no single LoRA equals "
            "this model (FedLEASE)"
        )
