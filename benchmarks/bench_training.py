"""Local-training throughput of the framework against a bare PEFT + torch loop on the packaged MiniLM.

    python benchmarks/bench_training.py [--samples 256] [--repeats 7]

Same model, same real SST-2 samples, same batches, same batch size and optimiser; the two loops alternate
in one process and the medians are compared. Prints {"ratio": framework / bare, ...}; goal >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import emit
from peft import LoraConfig, get_peft_model

from fedtreelora.adapters import AdapterHost, init_lora
from fedtreelora.client import client_round
from fedtreelora.config import TrainConfig
from fedtreelora.data import load_task, partition
from fedtreelora.methods import REGISTRY, ClientInfo, Layout
from fedtreelora.models import load_classifier
from fedtreelora.tasks import ClassificationTask, Encoded

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "sst2"


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
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    cfg = TrainConfig(batch_size=args.batch_size, local_epochs=1)

    client = partition([load_task(SST2)], n_clients=1, n_train=args.samples, n_test=1, scheme="iid", seed=0)[
        0
    ]
    # The framework: packaged MiniLM, our adapter host, the "local" method's plan, client_round().
    model, tokenizer, _ = load_classifier("minilm", 2, seed=0, head_init_std=0.5)
    host = AdapterHost(model, ["query", "value"], lora_alpha=16, dropout=0.05)
    task = ClassificationTask(tokenizer, max_length=64)
    data: Encoded = task.encode(client.train)
    layout = Layout(tuple(host.modules), rank=8)
    method = REGISTRY["local"](REGISTRY["local"].Options(), layout, [ClientInfo(0, len(client.train))], 1, 0)
    kept = init_lora(host.modules, 8, "lora", seed=0)
    plan = method.plan(0)

    # The reference: a second copy of the same model wrapped by PEFT, fed the very same batches.
    bare, _, _ = load_classifier("minilm", 2, seed=0, head_init_std=0.5)
    bare = get_peft_model(
        bare, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["query", "value"])
    )
    batches = list(task.batches(data, args.batch_size, torch.Generator().manual_seed(0)))

    def framework() -> float:
        start = time.perf_counter()
        client_round(host, task, data, method, plan, kept, {}, cfg, seed=0)
        return len(data) / (time.perf_counter() - start)

    def reference() -> float:
        start = time.perf_counter()
        bare_peft_epoch(bare, batches, cfg.lr)
        return len(data) / (time.perf_counter() - start)

    framework(), reference()  # warm up allocators and kernels
    ours, theirs = [], []
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
        ours.append(framework())
        theirs.append(reference())
    emit(
        ratio=round(statistics.median(ours) / statistics.median(theirs), 4),
        framework_samples_per_second=round(statistics.median(ours), 2),
        peft_samples_per_second=round(statistics.median(theirs), 2),
        samples=len(data),
        batch_size=args.batch_size,
        repeats=args.repeats,
        threads=torch.get_num_threads(),
    )


if __name__ == "__main__":
    main()
