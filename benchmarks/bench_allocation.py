"""What a Fed-HeLLo budget saves a client: trained parameters, upload, step time and training memory.

    python benchmarks/bench_allocation.py [--model minilm|smollm2] [--pattern bottleneck] [--repeats 7]

One client of each default budget group (50 %, 75 %, 100 % of the layers) trains FedIT's global LoRA on the
same real rows (SST-2 for minilm, JFLEG for smollm2) with the layers GD-HLA gives it under ``--pattern``.
The three budgets alternate in one process (rotating who goes first) and the medians are compared with the
full budget. Memory is what training holds above the frozen model, counted exactly rather than read off
the process's resident set (which never shrinks and would mix the three clients): the tensors autograd
saves for the backward pass (distinct storages, largest batch) plus the gradients and the two AdamW
moments of every trained tensor. One JSON line per budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import emit, one_client_config

from fedtreelora.adapters import AdapterHost
from fedtreelora.allocation import Assignment
from fedtreelora.allocation.base import DEFAULT_GROUPS, budget_layers
from fedtreelora.allocation.patterns import PATTERNS, gd_positions
from fedtreelora.client import client_round
from fedtreelora.federation import load_clients
from fedtreelora.methods import REGISTRY, ClientInfo, Layout
from fedtreelora.tasks import Batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETTINGS = {  # model -> (data folder, batch size, samples)
    "minilm": (DATA / "glue" / "sst2", 16, 128),
    "smollm2": (DATA / "flan" / "text_editing" / "jfleg", 8, 16),
}


def saved_bytes(model: torch.nn.Module, batch: Batch) -> int:
    """Bytes autograd keeps for the backward pass of one batch (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(SETTINGS), default="minilm")
    parser.add_argument("--pattern", choices=PATTERNS, default="bottleneck")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, batch_size, samples = SETTINGS[args.model]
    cfg = one_client_config(args.model, folder, samples, batch_size, "fedit")
    kind, tasks, clients = load_clients(cfg)
    torch.manual_seed(0)
    loaded = kind.load(cfg, tasks)
    host = AdapterHost(loaded.model, None, lora_alpha=16, dropout=0.05)
    task, data = loaded.task, loaded.task.encode(clients[0].train)
    layout = Layout(tuple(host.modules), rank=8)
    method = REGISTRY["fedit"](REGISTRY["fedit"].Options(), layout, [ClientInfo(0, len(data))], 1, 0)
    plan, payload = method.plan(0), method.payload(0)
    n_layers = layout.n_layers
    budgets = {f: budget_layers(f, n_layers) for f in DEFAULT_GROUPS}
    layers = {
        f: tuple(layout.layers[p] for p in gd_positions(args.pattern, n_layers, b))
        for f, b in budgets.items()
    }

    def one_round(fraction: float) -> tuple[float, dict[str, torch.Tensor]]:
        assignment = Assignment(layers[fraction], budgets[fraction])
        start = time.perf_counter()
        result = client_round(host, task, data, method, plan, {}, payload, cfg.train, 0, assignment)
        return time.perf_counter() - start, result.upload

    batches = list(task.batches(data, batch_size, torch.Generator().manual_seed(0)))
    order = list(DEFAULT_GROUPS)
    seconds: dict[float, list[float]] = {f: [] for f in order}
    uploads: dict[float, dict[str, torch.Tensor]] = {}
    for f in order:
        uploads[f] = one_round(f)[1]  # warm up
    for i in range(args.repeats):
        for f in order[i % 3 :] + order[: i % 3]:  # rotate who goes first
            seconds[f].append(one_round(f)[0])
    full = DEFAULT_GROUPS[-1]
    rows = {}
    for f in order:
        restricted = plan.restricted(layers[f], layers[f])
        trained = host.load(payload, restricted.trainer(plan.train), method.mixer)
        n_params = sum(t.numel() for t in trained.values())
        activations = max(saved_bytes(host.model, b) for b in batches)
        host.load(payload, lambda name: False, method.mixer)
        memory = activations + 3 * 4 * n_params  # + gradient and two AdamW moments, float32
        rows[f] = {
            "budget": f,
            "layers": list(layers[f]),
            "trained_params": n_params,
            "upload_bytes": sum(t.numel() * t.element_size() for t in uploads[f].values()),
            "step_seconds": statistics.median(seconds[f]) / len(batches),
            "training_memory_bytes": memory,
        }
    for f in order:
        row, ref = rows[f], rows[full]
        emit(
            model=args.model,
            pattern=args.pattern,
            **row,
            params_ratio=round(row["trained_params"] / ref["trained_params"], 3),
            upload_ratio=round(row["upload_bytes"] / ref["upload_bytes"], 3),
            step_time_ratio=round(row["step_seconds"] / ref["step_seconds"], 3),
            memory_ratio=round(row["training_memory_bytes"] / ref["training_memory_bytes"], 3),
            repeats=args.repeats,
            threads=torch.get_num_threads(),
        )


if __name__ == "__main__":
    main()
