"""The embedded runtime: one backbone in memory, every client's adapter state swapped in and out.

This is the round loop, written once for every method.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Protocol

import numpy as np

from ..adapters import State
from ..client import client_evaluate, client_round
from ..config import RunConfig
from ..federation import Federation, prepare
from ..results import build_results


class Observer(Protocol):
    """Progress reporting (a bar, a log); the runtime calls it and never prints itself."""

    def client_done(self, rnd: int, done: int, phase: str) -> None: ...

    def round_done(self, row: dict[str, Any]) -> None: ...


def client_seed(seed: int, rnd: int, client_id: int) -> int:
    """A seed per (run, round, client), so results do not depend on the order clients run in."""
    return int(np.random.SeedSequence([seed, rnd, client_id]).generate_state(1)[0])


def numel(state: State) -> int:
    return sum(t.numel() for t in state.values())


def nbytes(state: State) -> int:
    """Bytes on the wire for a state (raw tensor payload)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def run(cfg: RunConfig, observer: Observer | None = None) -> dict[str, Any]:
    """Run ``cfg`` to the end and return the results dict (docs/RESULTS_FORMAT.md)."""
    t0 = time.perf_counter()
    fed = prepare(cfg)
    method, rows = fed.method, []
    traffic = {"upload_bytes": 0, "download_bytes": 0}
    train_seconds, agg_seconds = 0.0, []
    accuracies: dict[int, float] = {}
    for rnd in range(cfg.federation.rounds):
        plan = method.plan(rnd)
        uploads: dict[int, State] = {}
        losses, samples, round_numel = [], [], 0
        for done, c in enumerate(fed.clients, start=1):
            cid = c.client_id
            payload = method.payload(cid)
            seed = client_seed(cfg.seed, rnd, cid)
            result = client_round(
                fed.host, fed.task, fed.train[cid], method, plan, fed.kept[cid], payload, cfg.train, seed
            )
            fed.kept[cid], uploads[cid] = result.keep, result.upload
            traffic["download_bytes"] += nbytes(payload)
            traffic["upload_bytes"] += nbytes(result.upload)
            round_numel += numel(payload) + numel(result.upload)
            train_seconds += result.seconds
            losses.append(result.stats.loss)
            samples.append(result.stats.samples)
            if observer is not None:
                observer.client_done(rnd, done, plan.phase)
        start, topo_before = time.perf_counter(), method.topology_seconds
        method.aggregate(rnd, uploads)
        # A topology built inside aggregate() is reported on its own, not as aggregation time.
        agg_seconds.append(time.perf_counter() - start - (method.topology_seconds - topo_before))
        mean_acc = None
        if rnd == cfg.federation.rounds - 1 or (rnd + 1) % cfg.federation.eval_every == 0:
            accuracies = evaluate(fed)
            mean_acc = statistics.fmean(accuracies.values())
        row = {
            "round": rnd,
            "phase": plan.phase,
            "train_loss": float(np.average(losses, weights=samples)) if sum(samples) else float("nan"),
            "mean_accuracy": mean_acc,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        if observer is not None:
            observer.round_done(row)
    first = fed.clients[0].client_id
    last_round = cfg.federation.rounds - 1
    params = {
        "trainable": method.trainable_count(
            last_round, method.client_state(fed.kept[first], method.payload(first))
        ),
        "communicated_per_round": round_numel // len(fed.clients),  # per client, last round, up + down
    }
    timing = {
        "topology_seconds": method.topology_seconds,
        "aggregation_seconds_mean": statistics.fmean(agg_seconds),
        "train_seconds_total": train_seconds,
        "total_seconds": time.perf_counter() - t0,
    }
    return build_results(cfg, fed.clients, accuracies, rows, method.topology(), timing, traffic, params)


def evaluate(fed: Federation) -> dict[int, float]:
    """Every client scores its personalised model on its own test split."""
    method, batch = fed.method, fed.cfg.train.eval_batch_size
    return {
        c.client_id: client_evaluate(
            fed.host,
            fed.task,
            fed.test[c.client_id],
            method,
            fed.kept[c.client_id],
            method.payload(c.client_id),
            batch,
        )
        for c in fed.clients
    }
