"""The embedded runtime: one backbone in memory, every client's adapter state swapped in and out.

This is the round loop, written once for every method.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Protocol

import numpy as np

from ..adapters import State, nbytes
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


def run(cfg: RunConfig, observer: Observer | None = None) -> dict[str, Any]:
    """Run ``cfg`` to the end and return the results dict (see docs/RESULTS_FORMAT.md)."""
    t0 = time.perf_counter()
    fed = prepare(cfg)
    method, rounds_out = fed.method, []
    upload_bytes = download_bytes = 0
    train_seconds, agg_seconds = 0.0, []
    accuracies: dict[int, float] = {}
    for rnd in range(cfg.federation.rounds):
        plan = method.plan(rnd)
        uploads: dict[int, State] = {}
        losses, weights = [], []
        for done, c in enumerate(fed.clients, start=1):
            cid = c.client_id
            payload = method.payload(cid)
            download_bytes += nbytes(payload)
            result = client_round(
                fed.host,
                fed.task,
                fed.train[cid],
                plan,
                method.mixer,
                fed.kept[cid],
                payload,
                cfg.train,
                client_seed(cfg.seed, rnd, cid),
            )
            fed.kept[cid] = result.keep
            uploads[cid] = result.upload
            upload_bytes += nbytes(result.upload)
            train_seconds += result.seconds
            losses.append(result.stats.loss)
            weights.append(result.stats.samples)
            if observer is not None:
                observer.client_done(rnd, done, plan.phase)
        start = time.perf_counter()
        method.aggregate(rnd, uploads)
        agg_seconds.append(
            time.perf_counter() - start - method.topology_seconds * (rnd == _topology_round(method))
        )
        last = rnd == cfg.federation.rounds - 1
        mean_acc = None
        if last or (rnd + 1) % cfg.federation.eval_every == 0:
            accuracies = evaluate(fed)
            mean_acc = statistics.fmean(accuracies.values())
        row = {
            "round": rnd,
            "phase": plan.phase,
            "train_loss": float(np.average(losses, weights=weights)) if sum(weights) else float("nan"),
            "mean_accuracy": mean_acc,
            "seconds": time.perf_counter() - t0,
        }
        rounds_out.append(row)
        if observer is not None:
            observer.round_done(row)
    timing = {
        "topology_seconds": method.topology_seconds,
        "aggregation_seconds_mean": statistics.fmean(agg_seconds),
        "train_seconds_total": train_seconds,
        "total_seconds": time.perf_counter() - t0,
    }
    communication = {"upload_bytes": upload_bytes, "download_bytes": download_bytes}
    return build_results(cfg, fed.clients, accuracies, rounds_out, method.topology(), timing, communication)


def _topology_round(method: Any) -> int:
    """The round whose aggregate() built the topology (its time is reported separately), or -1."""
    options = getattr(method, "options", None)
    warmup = getattr(options, "warmup_rounds", None)
    return warmup - 1 if isinstance(warmup, int) else -1


def evaluate(fed: Federation) -> dict[int, float]:
    """Every client scores its personalised model on its own test split."""
    method = fed.method
    return {
        c.client_id: client_evaluate(
            fed.host,
            fed.task,
            fed.test[c.client_id],
            method.mixer,
            fed.kept[c.client_id],
            method.payload(c.client_id),
            fed.cfg.train.eval_batch_size,
        )
        for c in fed.clients
    }
