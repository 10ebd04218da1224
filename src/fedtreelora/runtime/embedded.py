"""The embedded runtime: one backbone in memory, every client's adapter state swapped in and out.

This is the round loop, written once for every method.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Protocol

import numpy as np

from ..adapters import State
from ..config import RunConfig
from ..federation import Federation, prepare
from ..results import build_results, round_row
from ..tasks import Score
from .executors import EvalJob, InProcess, TrainJob, WorkerPool


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
    workers = cfg.federation.workers
    executor: InProcess | WorkerPool = WorkerPool(cfg, workers) if workers else InProcess(fed)
    try:
        return _rounds(fed, executor, observer, t0)
    finally:
        executor.close()


def _rounds(
    fed: Federation, executor: InProcess | WorkerPool, observer: Observer | None, t0: float
) -> dict[str, Any]:
    cfg, method, rows = fed.cfg, fed.method, []
    traffic = {"upload_bytes": 0, "download_bytes": 0}
    train_seconds, agg_seconds = 0.0, []
    scores: dict[int, Score] = {}
    for rnd in range(cfg.federation.rounds):
        plan = method.plan(rnd)
        jobs = [
            TrainJob(
                c.client_id,
                plan,
                fed.kept[c.client_id],
                method.payload(c.client_id),
                client_seed(cfg.seed, rnd, c.client_id),
                fed.allocator.assign(rnd, c.client_id),
                fed.unsent[c.client_id],
            )
            for c in fed.clients
        ]
        uploads: dict[int, State] = {}
        trained: dict[str, list[int]] = {}
        losses, samples, round_numel = [], [], 0
        for done, (job, result) in enumerate(zip(jobs, executor.train(jobs), strict=True), start=1):
            fed.kept[job.client_id], uploads[job.client_id] = result.keep, result.upload
            fed.unsent[job.client_id] = result.unsent
            trained[str(job.client_id)] = list(result.layers)
            if result.scores is not None:
                fed.allocator.observe(job.client_id, result.scores)
            traffic["download_bytes"] += nbytes(job.payload)
            traffic["upload_bytes"] += nbytes(result.upload)
            round_numel += numel(job.payload) + numel(result.upload)
            train_seconds += result.seconds
            losses.append(result.stats.loss)
            samples.append(result.stats.samples)
            if observer is not None:
                observer.client_done(rnd, done, plan.phase)
        start, topo_before = time.perf_counter(), method.topology_seconds
        method.aggregate(rnd, uploads)
        # A topology built inside aggregate() is reported on its own, not as aggregation time.
        agg_seconds.append(time.perf_counter() - start - (method.topology_seconds - topo_before))
        evaluated = rnd == cfg.federation.rounds - 1 or (rnd + 1) % cfg.federation.eval_every == 0
        if evaluated:
            scores = evaluate(fed, executor)
        row = {
            "round": rnd,
            "phase": plan.phase,
            "train_loss": float(np.average(losses, weights=samples)) if sum(samples) else float("nan"),
            # Per client too: what each client gains or loses from one round to the next.
            **round_row(fed.task.metric, scores if evaluated else None),
            "trained_layers": trained,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        if observer is not None:
            observer.round_done(row)
    first = fed.clients[0].client_id
    last_round = cfg.federation.rounds - 1
    params: dict[str, Any] = {
        "trainable": method.trainable_count(
            last_round, method.client_state(fed.kept[first], method.payload(first))
        ),
        "communicated_per_round": round_numel // len(fed.clients),  # per client, last round, up + down
        "targets": fed.host.targets,  # the modules that carry LoRA (model.targets, or the model's default)
        "adapted_layers": fed.host.n_layers,
    }
    timing = {
        "topology_seconds": method.topology_seconds,
        "aggregation_seconds_mean": statistics.fmean(agg_seconds),
        "train_seconds_total": train_seconds,
        "total_seconds": time.perf_counter() - t0,
    }
    topology = method.topology()
    alloc = fed.allocator
    budgets = {cid: (alloc.fractions[cid], alloc.budgets[cid]) for cid in alloc.client_ids}
    return build_results(cfg, fed.task, fed.clients, scores, rows, topology, timing, traffic, params, budgets)


def evaluate(fed: Federation, executor: InProcess | WorkerPool) -> dict[int, Score]:
    """Every client scores its personalised model on its own test split."""
    jobs = [EvalJob(c.client_id, fed.kept[c.client_id], fed.method.payload(c.client_id)) for c in fed.clients]
    return {job.client_id: score for job, score in zip(jobs, executor.evaluate(jobs), strict=True)}
