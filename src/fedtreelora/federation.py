"""Everything a run needs before its first round, built once from a validated config."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch

from .adapters import AdapterHost, State
from .allocation import Allocator, create_allocator
from .config import ConfigError, RunConfig
from .data import ClientData, DataError, TaskData, load_task, partition
from .methods import ClientInfo, Layout, Method, create
from .tasks import Task, kind_for


@dataclass
class Federation:
    cfg: RunConfig
    host: AdapterHost
    task: Task
    clients: list[ClientData]
    train: dict[int, Any]  # client id -> the task's encoded rows
    test: dict[int, Any]
    method: Method
    kept: dict[int, State]  # each client's own adapter state between rounds: all a client costs in memory
    allocator: Allocator  # which layers each client trains per round (Fed-HeLLo; "none": all of them)
    unsent: dict[int, frozenset[int]]  # per client, layers trained since its last upload
    kept_round: dict[int, int]  # per client, the round its kept state comes from (-1: initial)


def load_clients(cfg: RunConfig) -> tuple[type[Task], list[TaskData], list[ClientData]]:
    """The task kind, its task folders and the partitioned clients; bad data or settings raise ConfigError."""
    folders = cfg.data.task_dirs()
    try:
        kind = kind_for(folders, cfg.data.kind)
        if not kind.labelled and cfg.data.partition == "dirichlet":
            raise ConfigError(
                f"data.partition: 'dirichlet' skews class labels, and {kind.kind} rows have none; "
                "use 'task' (one task folder per client group) or 'iid'"
            )
        tasks = [load_task(d, kind.parse_row) for d in folders]
        clients = partition(
            tasks,
            n_clients=cfg.data.n_clients,
            n_train=cfg.data.n_train,
            n_test=cfg.data.n_test,
            scheme=cfg.data.partition,
            alpha=cfg.data.alpha,
            seed=cfg.seed,
        )
    except DataError as err:
        raise ConfigError(str(err)) from err
    return kind, tasks, clients


def prepare(cfg: RunConfig, only: Collection[int] | None = None) -> Federation:
    """Load data and the backbone, partition clients, tokenise once, and set up the method.

    ``only``: the clients whose rows are tokenised (a deployed node tokenises only its own); None: all.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    kind, tasks, clients = load_clients(cfg)
    m = cfg.model
    loaded = kind.load(cfg, tasks)
    if m.train_head and not loaded.head:
        raise ConfigError(f"model.train_head: a {kind.kind} model has no task head to train; set it to false")
    try:
        host = AdapterHost(
            loaded.model, m.targets, m.lora_alpha, m.dropout, loaded.head if m.train_head else None
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    task = loaded.task
    layout = Layout(modules=tuple(host.modules), rank=m.rank)
    infos = [ClientInfo(c.client_id, len(c.train)) for c in clients]
    method = create(cfg, layout, infos)
    head_state = host.initial_head()
    own = [c for c in clients if only is None or c.client_id in only]
    return Federation(
        cfg=cfg,
        host=host,
        task=task,
        clients=clients,
        train={c.client_id: task.encode(c.train) for c in own},
        test={c.client_id: task.encode(c.test) for c in own},
        method=method,
        kept={c.client_id: {**method.init_client_state(c.client_id), **head_state} for c in clients},
        allocator=create_allocator(cfg.allocation, layout.layers, [c.client_id for c in clients], cfg.seed),
        unsent={c.client_id: frozenset() for c in clients},
        kept_round={c.client_id: -1 for c in clients},
    )
