"""Seconds per round on the Flower deployment engine against the embedded runtime, and where they go.

    .venv/bin/python benchmarks/bench_flower.py [--config examples/smoke.toml] [--method fedit] [--rounds 3]

Same config for both (by default examples/smoke.toml: 4 clients, MiniLM; one torch thread per client), the
embedded run first, then a loopback federation (a SuperLink and 4 SuperNodes on 127.0.0.1). Then the
parts of a node's message measured on their own: starting a Python process that imports Flower and our
ClientApp (what a query costs), the same plus torch and building the node (backbone load, tokenising
its rows: what every train or evaluate message pays before it trains), and packing a payload.
Run it alone: the nodes share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedtreelora import wire
from fedtreelora.config import absolute_paths, load_config
from fedtreelora.methods import options_for
from fedtreelora.runtime.embedded import run
from fedtreelora.runtime.flower.deploy import LocalFederation
from fedtreelora.runtime.node import Node

ROOT = Path(__file__).resolve().parents[1]


def per_round(results: dict) -> float:  # type: ignore[type-arg]
    seconds = [r["seconds"] for r in results["rounds"]]
    return statistics.median(b - a for a, b in zip([0.0, *seconds], seconds, strict=False))


def timed_process(code: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "smoke.toml")
    parser.add_argument("--method", default="fedit")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sets = [f"method='{args.method}'", "train.threads=1", f"federation.rounds={args.rounds}"]
    cfg = absolute_paths(load_config(args.config, sets, options_for()))

    embedded = run(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        out.mkdir()
        (out / "config.json").write_text(json.dumps(cfg.to_dict()))
        with LocalFederation(Path(tmp) / "flower") as federation:
            start = time.perf_counter()
            federation.start(cfg.data.n_clients)
            started = time.perf_counter() - start
            federation.run(out, round_timeout=600, start_timeout=120)
            total = time.perf_counter() - start
        deployed = json.loads((out / "results.json").read_text())
        timeline = json.loads((out / "flower-timing.json").read_text())
        node_at = Path(tmp) / "node"
        request = {"config": cfg.to_dict(), "run_key": "bench"}
        start = time.perf_counter()
        node = Node.open(request, 0, node_at)
        node_open = time.perf_counter() - start
    payload = embedded_payload = node.fed.method.payload(0)
    start = time.perf_counter()
    for _ in range(20):
        spec, buffer = wire.pack_state(payload)
        wire.unpack_state(spec, buffer)
    pack = (time.perf_counter() - start) / 20
    light = "import fedtreelora.runtime.flower.clientapp"
    heavy = light + "; import torch, transformers; import fedtreelora.runtime.node"
    rows = {
        "embedded: seconds per round": per_round(embedded),
        "flower: seconds per round": per_round(deployed),
        "flower: start SuperLink + nodes (s)": started,
        "flower: whole run incl. start (s)": total,
        "process start + import flwr, ClientApp (s)": timed_process(light),
        "... + torch, transformers, node module (s)": timed_process(heavy),
        "node open: backbone + tokenise its rows (s, warm)": node_open,
        "pack + unpack one payload (ms)": pack * 1000,
        "payload size (MB)": sum(t.numel() * t.element_size() for t in embedded_payload.values()) / 1e6,
    }
    for kind in ("train", "evaluate"):
        messages = [m for m in timeline if m["kind"] == kind]
        med = {
            p: statistics.median(m[p] for m in messages) for p in ("round_trip", "startup", "open", "work")
        }
        rows[f"{kind} message: round trip (s, median)"] = med["round_trip"]
        rows[f"  {kind}: process start + imports"] = med["startup"]
        rows[f"  {kind}: node open (backbone, its rows)"] = med["open"]
        rows[f"  {kind}: the work itself"] = med["work"]
        rows[f"  {kind}: waiting (polls, queues, transport)"] = med["round_trip"] - sum(
            med[p] for p in ("startup", "open", "work")
        )
    same = [r["client_score"] for r in embedded["rounds"]] == [r["client_score"] for r in deployed["rounds"]]
    for name, value in rows.items():
        print(f"{name:<52} {value:8.3f}")
    ratio = rows["flower: seconds per round"] / rows["embedded: seconds per round"]
    print(f"ratio flower / embedded per round: {ratio:.1f}")
    print(f"same per-client scores: {same}")


if __name__ == "__main__":
    main()
