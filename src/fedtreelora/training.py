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


def train_local(
    model: nn.Module,
    params: Sequence[Tensor],
    epochs: Iterable[Iterable[Batch]],
    lr: float,
    weight_decay: float = 0.0,
) -> TrainStats:
    """AdamW on ``params`` over every batch of every epoch; a fresh optimiser each round."""
    if not params:
        return TrainStats(loss=float("nan"), samples=0, steps=0)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    total, samples, steps = 0.0, 0, 0
    for batches in epochs:
        for batch in batches:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            n = int(batch["input_ids"].shape[0])
            total += float(loss.detach()) * n
            samples += n
            steps += 1
    model.eval()
    return TrainStats(loss=total / max(samples, 1), samples=samples, steps=steps)
