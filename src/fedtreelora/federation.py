"""Everything a run needs before its first round, built once from a validated config."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .adapters import AdapterHost, State
from .config import ConfigError, RunConfig
from .data import ClientData, DataError, label_count, load_task, partition
from .methods import ClientInfo, Layout, Method, create
from .models import load_classifier
from .tasks import ClassificationTask, Encoded


@dataclass
class Federation:
    cfg: RunConfig
    host: AdapterHost
    task: ClassificationTask
    clients: list[ClientData]
    train: dict[int, Encoded]
    test: dict[int, Encoded]
    method: Method
    kept: dict[int, State]  # each client's own adapter state between rounds: all a client costs in memory


def prepare(cfg: RunConfig) -> Federation:
    """Load data and the backbone, partition clients, tokenise once, and set up the method."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        tasks = [load_task(d) for d in cfg.data.task_dirs()]
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
    m = cfg.model
    model, tokenizer, head = load_classifier(
        m.name, label_count(tasks), cfg.seed, m.head_init_std or None, m.backbone_dropout
    )
    try:
        host = AdapterHost(model, m.targets, m.lora_alpha, m.dropout, head if m.train_head else None)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    task = ClassificationTask(tokenizer, m.max_length)
    layout = Layout(modules=tuple(host.modules), rank=m.rank)
    infos = [ClientInfo(c.client_id, len(c.train)) for c in clients]
    method = create(cfg, layout, infos)
    head_state = host.initial_head()
    return Federation(
        cfg=cfg,
        host=host,
        task=task,
        clients=clients,
        train={c.client_id: task.encode(c.train) for c in clients},
        test={c.client_id: task.encode(c.test) for c in clients},
        method=method,
        kept={c.client_id: {**method.init_client_state(c.client_id), **head_state} for c in clients},
    )
