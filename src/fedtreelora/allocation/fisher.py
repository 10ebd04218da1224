"""Per-layer importance for FIM-HLA: the diagonal empirical Fisher of the layer's LoRA tensors.

Measured on the client, on a few batches of its own training data, with the tensors the method would train
this round: score(l) = sum over layer l's LoRA tensors of the squared gradient of the loss, averaged over
the batches. The model is in eval mode (no dropout) and nothing is updated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ..adapters import layer_of


def layer_fisher(
    model: nn.Module, params: Mapping[str, Tensor], batches: Iterable[dict[str, Tensor]]
) -> dict[int, float]:
    """``{layer: score}`` over ``params`` (name -> tensor attached to ``model`` with requires_grad)."""
    names = [n for n in params if layer_of(n) is not None and n.endswith((".A", ".B"))]
    tensors = [params[n] for n in names]
    if not tensors:  # the method trains no LoRA this round (zero-shot): nothing to rank
        return {}
    sums = [torch.zeros_like(t) for t in tensors]
    model.eval()
    count = 0
    for batch in batches:
        loss = model(**batch).loss
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for acc, g in zip(sums, grads, strict=True):
            if g is not None:
                acc.add_(g.detach() ** 2)
        count += 1
    scores: dict[int, float] = {}
    for name, acc in zip(names, sums, strict=True):
        layer = layer_of(name)
        assert layer is not None
        scores[layer] = scores.get(layer, 0.0) + float(acc.sum()) / max(count, 1)
    return scores


def top_layers(scores: Mapping[int, float], budget: int) -> tuple[int, ...]:
    """The ``budget`` layers with the largest scores (ties: the shallower), in depth order."""
    ranked = sorted(scores, key=lambda layer: (-scores[layer], layer))
    return tuple(sorted(ranked[:budget]))
