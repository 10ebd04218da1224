"""Local-training throughput of the framework against a bare PEFT + torch loop, on a packaged model.

    python benchmarks/bench_training.py [--model minilm|smollm2] [--samples N] [--repeats 7]

minilm: the encoder on real SST-2 rows (batch 16); smollm2: the 30-layer decoder on real FLAN rows (JFLEG,
batch 8, prompt + response, loss on the response). Same model, same rows, same batches, same batch size
and optimiser; the two loops alternate in one process and the medians are compared. Prints
{"ratio": framework / bare, ...}; goal >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import emit, one_client_config
from peft import LoraConfig, get_peft_model

from fedtreelora.adapters import AdapterHost, init_lora
from fedtreelora.client import client_round
from fedtreelora.federation import load_clients
from fedtreelora.methods import REGISTRY, ClientInfo, Layout

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETTINGS = {  # model -> (data folder, batch size, default samples)
    "minilm": (DATA / "glue" / "sst2", 16, 256),
    "smollm2": (DATA / "flan" / "text_editing" / "jfleg", 8, 32),
}


def bare_peft_epoch(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], lr: float) -> None:
    """The loop a researcher would write by hand: PEFT model, AdamW, forward, backward, step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for batch in batches:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(SETTINGS), default="minilm")
    parser.add_argument(
        "--samples", type=int, default=0, help="rows trained per repeat (0: the model's default)"
    )
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, batch_size, samples = SETTINGS[args.model]
    samples = args.samples or samples
    cfg = one_client_config(args.model, folder, samples, batch_size, "local")
    kind, tasks, clients = load_clients(cfg)
    torch.manual_seed(0)

    # The framework: the packaged model, our adapter host, the "local" method's plan, client_round().
    loaded = kind.load(cfg, tasks)
    host = AdapterHost(loaded.model, None, lora_alpha=16, dropout=0.05)
    task = loaded.task
    data = task.encode(clients[0].train)
    layout = Layout(tuple(host.modules), rank=8)
    method = REGISTRY["local"](REGISTRY["local"].Options(), layout, [ClientInfo(0, len(data))], 1, 0)
    kept = init_lora(host.modules, 8, "lora", seed=0)
    plan = method.plan(0)

    # The reference: a second copy of the same model wrapped by PEFT, fed the very same batches.
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=host.targets)
    bare = get_peft_model(kind.load(cfg, tasks).model, config)
    batches = list(task.batches(data, batch_size, torch.Generator().manual_seed(0)))

    def framework() -> float:
        start = time.perf_counter()
        client_round(host, task, data, method, plan, kept, {}, cfg.train, seed=0)
        return len(data) / (time.perf_counter() - start)

    def reference() -> float:
        start = time.perf_counter()
        bare_peft_epoch(bare, batches, cfg.train.lr)
        return len(data) / (time.perf_counter() - start)

    framework(), reference()  # warm up allocators and kernels
    ours, theirs = [], []
    for i in range(args.repeats):  # alternate, so drifting machine load hits both alike
        if i % 2:  # and swap who goes first: whichever runs second inherits the other's freed memory
            theirs.append(reference())
            ours.append(framework())
        else:
            ours.append(framework())
            theirs.append(reference())
    tokens = sum(len(ids) for ids in data.input_ids)
    emit(
        model=args.model,
        ratio=round(statistics.median(ours) / statistics.median(theirs), 4),
        framework_samples_per_second=round(statistics.median(ours), 2),
        peft_samples_per_second=round(statistics.median(theirs), 2),
        tokens_per_sample=round(tokens / len(data), 1),
        samples=len(data),
        batch_size=batch_size,
        repeats=args.repeats,
        threads=torch.get_num_threads(),
    )


if __name__ == "__main__":
    main()
