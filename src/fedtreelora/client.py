"""One client's part of a round, shared by every runtime (embedded today, Flower deployment later).

The client merges what it kept with what the server sent, trains what the plan says, and splits the result
into what it uploads and what it keeps. Nothing here knows which method is running.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .adapters import MIXING, AdapterHost, State
from .config import TrainConfig
from .methods.base import ClientPlan, Method
from .tasks import Encoded, Score, Task
from .training import TrainStats, train_local

HEAD = ("head.*",)  # a trainable head is always personal: it trains every round and never leaves the client


@dataclass(frozen=True)
class ClientResult:
    upload: State
    keep: State
    stats: TrainStats
    seconds: float


def client_round(
    host: AdapterHost,
    task: Task,
    data: Encoded,
    method: Method,
    plan: ClientPlan,
    kept: Mapping[str, Tensor],
    payload: Mapping[str, Tensor],
    cfg: TrainConfig,
    seed: int,
) -> ClientResult:
    """Train one client for ``cfg.local_epochs`` epochs per stage; ``seed`` fixes data order and dropout."""
    start = time.perf_counter()
    state = method.client_state(kept, payload)
    torch.manual_seed(seed)  # dropout masks: the same seed gives the same numbers in any process
    order = torch.Generator().manual_seed(seed)
    stages = [plan.train, plan.then_train] if plan.then_train else [plan.train]
    for patterns in stages:
        params = host.load(state, plan.matcher(patterns + HEAD), method.mixer)
        mixing = ClientPlan.matcher(MIXING)
        groups = [
            ([p for n, p in params.items() if not mixing(n)], cfg.lr),
            ([p for n, p in params.items() if mixing(n)], cfg.mixer_lr or cfg.lr),
        ]
        epochs = (
            task.batches(data, cfg.batch_size, order, cfg.group_by_length) for _ in range(cfg.local_epochs)
        )
        stats = train_local(host.model, groups, epochs, cfg.weight_decay)
        state = host.state()
    new = state
    return ClientResult(
        upload=plan.select(new, plan.upload),
        keep=plan.select(new, plan.keep + HEAD),
        stats=stats,
        seconds=time.perf_counter() - start,
    )


def client_evaluate(
    host: AdapterHost,
    task: Task,
    data: Encoded,
    method: Method,
    kept: Mapping[str, Tensor],
    payload: Mapping[str, Tensor],
    batch_size: int,
) -> Score:
    """Score the client's personalised model: what it kept plus what the server would send it now."""
    host.load(method.client_state(kept, payload), lambda name: False, method.mixer)
    return task.score(host.model, data, batch_size)
