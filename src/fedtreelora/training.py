"""The one local training loop every method uses.

Methods change which tensors train (the ``params`` handed in) and how the forward mixes experts (the
adapter's mixer); they never copy this loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .tasks import Batch


@dataclass(frozen=True)
class TrainStats:
    loss: float  # mean training loss over the steps
    samples: int
    steps: int
    diverged: bool = False  # the loss became NaN or Inf; training stopped before that step updated anything


ParamGroup = tuple[Sequence[Tensor], float]  # tensors and their learning rate


def train_local(
    model: nn.Module,
    groups: Sequence[ParamGroup],
    epochs: Iterable[Iterable[Batch]],
    weight_decay: float = 0.0,
) -> TrainStats:
    """AdamW on every group's tensors (each at its own rate) over every batch of every epoch.

    A fresh optimiser each round. Groups exist because Adam moves every parameter by about ``lr`` per step
    whatever its gradient: a one-number mixing scalar at a LoRA rate barely moves in a round (DESIGN.md).
    """
    param_groups = [{"params": list(ps), "lr": lr} for ps, lr in groups if ps]
    if not param_groups:
        return TrainStats(loss=float("nan"), samples=0, steps=0)
    optimizer = torch.optim.AdamW(param_groups, weight_decay=weight_decay)
    model.train()
    total, samples, steps = 0.0, 0, 0
    for batches in epochs:
        for batch in batches:
            loss = model(**batch).loss
            if not bool(torch.isfinite(loss)):
                model.eval()
                return TrainStats(loss=float("nan"), samples=samples, steps=steps, diverged=True)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            n = int(batch["input_ids"].shape[0])
            total += float(loss.detach()) * n
            samples += n
            steps += 1
    model.eval()
    return TrainStats(loss=total / max(samples, 1), samples=samples, steps=steps)
