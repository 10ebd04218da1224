"""One client's part of a round, shared by every runtime (embedded today, Flower deployment later).

The client merges what it kept with what the server sent, trains what the plan says, and splits the result
into what it uploads and what it keeps. Nothing here knows which method is running.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice

import torch
from torch import Tensor

from .adapters import MIXING, AdapterHost, State
from .allocation import Assignment
from .allocation.fisher import layer_fisher, top_layers
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
    layers: tuple[int, ...] = ()  # the layers it trained this round
    unsent: frozenset[int] = frozenset()  # layers trained but not yet uploaded (a warmup uploads at its end)
    scores: dict[int, float] | None = None  # Fisher scores, when its allocation asked it to measure them
    failure: str | None = None  # why the client has nothing to upload (its training diverged)


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
    assignment: Assignment | None = None,
    unsent: frozenset[int] = frozenset(),
) -> ClientResult:
    """Train one client for ``cfg.local_epochs`` epochs per stage; ``seed`` fixes data order and dropout.

    ``assignment`` (Fed-HeLLo) bounds the layers that train; ``None`` trains every layer. A client uploads
    the layers it trained since its last upload: ``unsent`` carries those of earlier rounds.
    """
    start = time.perf_counter()
    state = method.client_state(kept, payload)
    layers, scores = _layers(host, task, data, method, plan, state, cfg, seed, assignment)
    plan = plan.restricted(layers, unsent | set(layers))
    torch.manual_seed(seed)  # dropout masks: the same seed gives the same numbers in any process
    order = torch.Generator().manual_seed(seed)
    stages = [plan.train, plan.then_train] if plan.then_train else [plan.train]
    for patterns in stages:
        params = host.load(state, plan.trainer(patterns + HEAD), method.mixer)
        mixing = ClientPlan.matcher(MIXING)
        groups = [
            ([p for n, p in params.items() if not mixing(n)], cfg.lr),
            ([p for n, p in params.items() if mixing(n)], cfg.mixer_lr or cfg.lr),
        ]
        epochs = (
            task.batches(data, cfg.batch_size, order, cfg.group_by_length) for _ in range(cfg.local_epochs)
        )
        stats = train_local(host.model, groups, epochs, cfg.weight_decay)
        if stats.diverged:  # report a failure instead of uploading NaNs; the client keeps what it had
            reason = f"local loss became NaN or Inf at step {stats.steps + 1}"
            return ClientResult({}, dict(kept), stats, time.perf_counter() - start, failure=reason)
        state = host.state()
    trained = layers if plan.train or plan.then_train else ()
    return ClientResult(
        upload=plan.uploads(state),
        keep=plan.select(state, plan.keep + HEAD),
        stats=stats,
        seconds=time.perf_counter() - start,
        layers=trained,
        unsent=frozenset() if plan.upload else unsent | set(trained),
        scores=scores,
    )


def _layers(
    host: AdapterHost,
    task: Task,
    data: Encoded,
    method: Method,
    plan: ClientPlan,
    state: Mapping[str, Tensor],
    cfg: TrainConfig,
    seed: int,
    assignment: Assignment | None,
) -> tuple[tuple[int, ...], dict[int, float] | None]:
    """The layers this client trains, measuring its Fisher scores first where the assignment asks."""
    if assignment is None:
        return tuple(sorted({m.layer for m in host.modules})), None
    if assignment.layers is not None:
        return assignment.layers, None
    params = host.load(state, plan.matcher(plan.train + plan.then_train), method.mixer)
    order = torch.Generator().manual_seed(seed + 1)  # its own draw: training's batch order stays the same
    batches = islice(
        task.batches(data, cfg.batch_size, order, cfg.group_by_length), assignment.fisher_batches
    )
    scores = layer_fisher(host.model, params, batches)
    return top_layers(scores, assignment.budget), scores


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
