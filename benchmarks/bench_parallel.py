"""Round time of the embedded runtime: clients in sequence (all cores to torch) against a worker pool.

    python benchmarks/bench_parallel.py [--workers 2] [--rounds 3]

Runs the same small FedTreeLoRA job (packaged MiniLM, real SST-2, 10 clients) both ways, checks the pool
reproduces the one-thread sequential run exactly, and prints {"speedup": ..., ...}.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

from common import emit

from fedtreelora.config import load_config
from fedtreelora.methods import options_for
from fedtreelora.runtime.embedded import run

ROOT = Path(__file__).resolve().parents[1]


def round_seconds(result: dict) -> float:
    """Median wall time of one round (differences of the cumulative clock), setup excluded."""
    stamps = [r["seconds"] for r in result["rounds"]]
    return statistics.median(b - a for a, b in itertools.pairwise(stamps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    base = [
        "data.n_train=48", "data.n_test=32", f"federation.rounds={args.rounds}", "federation.eval_every=1",
        "fedtreelora.warmup_rounds=1",
    ]  # fmt: skip
    config = ROOT / "examples" / "default.toml"

    def job(*sets: str) -> dict:
        return run(load_config(config, [*base, *sets], options_for()))

    sequential = job()  # torch uses every core inside each client's step
    one_thread = job("train.threads=1")
    pooled = job(f"federation.workers={args.workers}")
    identical = [r["train_loss"] for r in pooled["rounds"]] == [
        r["train_loss"] for r in one_thread["rounds"]
    ] and [c["accuracy"] for c in pooled["clients"]] == [c["accuracy"] for c in one_thread["clients"]]
    emit(
        speedup=round(round_seconds(sequential) / round_seconds(pooled), 3),
        round_seconds_sequential=round(round_seconds(sequential), 3),
        round_seconds_sequential_one_thread=round(round_seconds(one_thread), 3),
        round_seconds_pool=round(round_seconds(pooled), 3),
        workers=args.workers,
        identical_to_one_thread_sequential=identical,
        clients=len(pooled["clients"]),
    )


if __name__ == "__main__":
    main()
