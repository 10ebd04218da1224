"""Shared helpers for the benchmark scripts: timing medians and RoBERTa-large-shaped LoRA states."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedtreelora.adapters import AdaptedModule
from fedtreelora.methods import Layout

# The paper's cost setting: RoBERTa-large, 24 layers, LoRA rank 8 on query and value, d = 1024.
LAYERS, D_MODEL, RANK, TARGETS = 24, 1024, 8, ("query", "value")


def roberta_large_layout() -> Layout:
    modules = tuple(
        AdaptedModule(f"layers.{layer}.{t}", layer, t, D_MODEL, D_MODEL)
        for layer in range(LAYERS)
        for t in TARGETS
    )
    return Layout(modules=modules, rank=RANK)


def client_states(
    layout: Layout, n_clients: int, expert: str, seed: int = 0
) -> dict[int, dict[str, torch.Tensor]]:
    """Random LoRA states with cluster structure: 4 groups whose separation grows with depth."""
    gen = torch.Generator().manual_seed(seed)
    groups = torch.arange(n_clients) % 4
    centres = {m.key: torch.randn(4, m.d_out, layout.rank, generator=gen) for m in layout.modules}
    states: dict[int, dict[str, torch.Tensor]] = {}
    for i in range(n_clients):
        s = {}
        for m in layout.modules:
            spread = (m.layer + 1) / LAYERS  # shallow layers alike, deep layers apart
            noise = torch.randn(m.d_out, layout.rank, generator=gen)
            s[f"{m.key}.{expert}.B"] = noise + spread * 3 * centres[m.key][groups[i]]
            s[f"{m.key}.{expert}.A"] = torch.randn(layout.rank, m.d_in, generator=gen) * 0.03
        states[i] = s
    return states


def one_client_config(model: str, folder: Any, samples: int, batch_size: int, method: str) -> Any:
    """A run config for one client holding ``samples`` real training rows of ``folder`` (IID, 1 test row)."""
    from fedtreelora.config import load_config
    from fedtreelora.methods import options_for

    sets = [f"model.name='{model}'", f"data.dir='{folder}'", "data.partition='iid'", "data.n_clients=1"]
    sets += [
        f"data.n_train={samples}",
        "data.n_test=1",
        f"train.batch_size={batch_size}",
        f"method='{method}'",
    ]
    return load_config(None, sets, options_for())


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def emit(**row: Any) -> None:
    print(json.dumps(row), flush=True)


def as_numpy_layers(
    layout: Layout, states: dict[int, dict[str, torch.Tensor]], expert: str
) -> list[np.ndarray]:
    return layout.b_rows([states[i] for i in sorted(states)], expert)
