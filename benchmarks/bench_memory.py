"""Resident memory of the embedded runtime with many virtual clients (a few real SST-2 samples each).

    python benchmarks/bench_memory.py [--clients 10 100 1000] [--method fedtreelora]

Each client count runs the method (FedTreeLoRA by default; packaged MiniLM, warmup 1 + 1 federated round,
so the tree over all clients is built) in a fresh process. One JSON line per N with the peak resident set
and the size of the run's checkpoint; then the growth per client between the smallest and the largest N.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import emit

ROOT = Path(__file__).resolve().parents[1]


def one(n: int, method: str) -> dict:
    """Runs inside the child process: the federation, then the peak RSS, the state and checkpoint sizes."""
    from fedtreelora.config import load_config
    from fedtreelora.methods import options_for
    from fedtreelora.runtime.checkpoint import CHECKPOINT
    from fedtreelora.runtime.embedded import run

    sets = [
        "data.partition='iid'", f"data.n_clients={n}", "data.n_train=2", "data.n_test=2",
        "federation.rounds=2", "federation.eval_every=2", "fedtreelora.warmup_rounds=1", "train.batch_size=2",
        f"method='{method}'",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        result = run(load_config(ROOT / "examples" / "default.toml", sets, options_for()), out=Path(folder))
        checkpoint_bytes = (Path(folder) / CHECKPOINT).stat().st_size
    return {
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "seconds": result["timing"]["total_seconds"],
        "k_per_layer": (result["topology"] or {}).get("k_per_layer"),
        "communicated_per_round": result["params"]["communicated_per_round"],
        "checkpoint_bytes": checkpoint_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--method", default="fedtreelora", help="whose client state to hold (and checkpoint)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.child, args.method)))
        return
    rows = {}
    for n in args.clients:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--method", args.method],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows[n] = json.loads(out.strip().splitlines()[-1])
        emit(method=args.method, n_clients=n, **rows[n])
    small, large = min(rows), max(rows)
    if large > small:
        per_client = (rows[large]["peak_rss_bytes"] - rows[small]["peak_rss_bytes"]) / (large - small)
        # FedTreeLoRA on MiniLM: a client keeps its alphas; the runtime also holds, per client, the payload
        # (cluster + external experts, shared tensors) and upload (cluster expert) of the round.
        emit(bytes_per_client=round(per_client), between=[small, large])


if __name__ == "__main__":
    main()
