"""The embedded runtime: one backbone in memory, every client's adapter state swapped in and out.

This is the round loop, written once for every method. Each round: ask the allocator for every client's
layers, train the clients that did not drop out, check every upload (``validation.py``), fold the valid
ones into the method's state, evaluate, and (with a run folder) write a checkpoint. A round with fewer
valid replies than ``federation.min_clients`` is skipped: nothing changes, not even the repliers' kept
state, as if the server had aborted it.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..adapters import State
from ..client import ClientResult
from ..config import RunConfig
from ..federation import Federation, prepare
from ..results import build_results, round_row
from ..tasks import Score
from ..validation import check_upload, norm_outliers
from . import checkpoint
from .checkpoint import Progress
from .executors import EvalJob, Executor, InProcess, TrainJob, WorkerPool

log = logging.getLogger("fedtreelora")


class Observer(Protocol):
    """Progress reporting (a bar, a log); the runtime calls it and never prints itself."""

    def client_done(self, rnd: int, done: int, phase: str) -> None: ...

    def round_done(self, row: dict[str, Any]) -> None: ...


def client_seed(seed: int, rnd: int, client_id: int) -> int:
    """A seed per (run, round, client), so results do not depend on the order clients run in."""
    return int(np.random.SeedSequence([seed, rnd, client_id]).generate_state(1)[0])


def drops_out(seed: int, rnd: int, client_id: int, p: float) -> bool:
    """Whether the client fails this round (``federation.client_failure``); its own seeded draw."""
    if p <= 0.0:
        return False
    return bool(np.random.default_rng(np.random.SeedSequence([seed, rnd, client_id, 0xFA11])).random() < p)


def numel(state: State) -> int:
    return sum(t.numel() for t in state.values())


def nbytes(state: State) -> int:
    """Bytes on the wire for a state (raw tensor payload)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def local_executor(fed: Federation) -> Executor:
    """This runtime's own executor: clients in this process, or on ``federation.workers`` processes."""
    workers = fed.cfg.federation.workers
    return WorkerPool(fed.cfg, workers) if workers else InProcess(fed)


def run(
    cfg: RunConfig,
    observer: Observer | None = None,
    out: Path | None = None,
    resume: bool = False,
    executor: Callable[[Federation], Executor] = local_executor,
) -> dict[str, Any]:
    """Run ``cfg`` to the end and return the results dict (docs/RESULTS_FORMAT.md).

    With ``out`` a checkpoint is written there after every round; ``resume`` continues from it if present.
    ``executor`` says where clients run: the Flower runtime passes one that sends them to its nodes (which
    keep their clients' states themselves), so this loop is the only round loop.
    """
    t0 = time.perf_counter()
    fed = prepare(cfg)
    progress = Progress()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    state = checkpoint.load(out) if out is not None and resume else None
    if state is not None:
        progress = checkpoint.restore(fed, state)
    clients = executor(fed)
    try:
        for rnd in range(progress.next_round, cfg.federation.rounds):
            row = _round(fed, clients, observer, progress, rnd)
            row["seconds"] = progress.elapsed + time.perf_counter() - t0
            progress.rows.append(row)
            progress.next_round = rnd + 1
            if out is not None:
                # the wall time so far becomes the next start's offset
                checkpoint.save(out, fed, dataclasses.replace(progress, elapsed=row["seconds"]))
            if observer is not None:
                observer.round_done(row)
    finally:
        clients.close()
    return _results(fed, progress, progress.elapsed + time.perf_counter() - t0)


@dataclass
class Reply:
    job: TrainJob
    result: ClientResult


def _round(
    fed: Federation, executor: Executor, observer: Observer | None, progress: Progress, rnd: int
) -> dict[str, Any]:
    cfg, method = fed.cfg, fed.method
    plan = method.plan(rnd)
    failed: dict[str, str] = {}
    jobs = []
    for c in fed.clients:
        if drops_out(cfg.seed, rnd, c.client_id, cfg.federation.client_failure):
            failed[str(c.client_id)] = "dropped out"
            continue
        jobs.append(
            TrainJob(
                c.client_id,
                plan,
                fed.kept[c.client_id],
                method.payload(c.client_id),
                client_seed(cfg.seed, rnd, c.client_id),
                fed.allocator.assign(rnd, c.client_id),
                fed.unsent[c.client_id],
                fed.kept_round[c.client_id],
                rnd,
            )
        )
    replies: dict[int, Reply] = {}
    for done, (job, result) in enumerate(zip(jobs, executor.train(jobs), strict=True), start=1):
        progress.traffic["download_bytes"] += nbytes(job.payload)
        progress.train_seconds += result.seconds
        replies[job.client_id] = Reply(job, result)
        if observer is not None:
            observer.client_done(rnd, done, plan.phase)
    for cid, reason in _invalid(fed, replies).items():
        log.warning("round %d: client %d %s", rnd, cid, reason)
        failed[str(cid)] = reason
        del replies[cid]
    skipped = len(replies) < cfg.federation.min_clients
    if skipped:
        log.warning("round %d skipped: %d valid replies, federation.min_clients = %d", rnd, len(replies),
                    cfg.federation.min_clients)  # fmt: skip
    trained: dict[str, list[int]] = {}
    if not skipped:
        uploads = _apply(fed, rnd, replies, progress, trained)
        start, topo_before = time.perf_counter(), method.topology_seconds
        method.aggregate(rnd, uploads)
        # A topology built inside aggregate() is reported on its own, not as aggregation time.
        progress.agg_seconds.append(time.perf_counter() - start - (method.topology_seconds - topo_before))
    evaluated = rnd == cfg.federation.rounds - 1 or (rnd + 1) % cfg.federation.eval_every == 0
    unevaluated: list[int] = []
    if evaluated:
        scores = evaluate(fed, executor)
        unevaluated = [c.client_id for c in fed.clients if c.client_id not in scores]
        # A client that did not answer keeps its last score (NaN if it never had one); the row says which.
        progress.scores = {c.client_id: Score(float("nan")) for c in fed.clients} | progress.scores | scores
    losses = [(r.result.stats.loss, r.result.stats.samples) for r in replies.values()]
    row: dict[str, Any] = {
        "round": rnd,
        "phase": plan.phase,
        "train_loss": float(np.average([x for x, _ in losses], weights=[n for _, n in losses]))
        if sum(n for _, n in losses)
        else float("nan"),
        # Per client too: what each client gains or loses from one round to the next.
        **round_row(fed.task.metric, progress.scores if evaluated else None),
        "trained_layers": trained,
    }
    if failed:
        row["failed"] = failed
    if skipped:
        row["skipped"] = True
    if unevaluated:
        row["unevaluated"] = unevaluated
    return row


def _invalid(fed: Federation, replies: dict[int, Reply]) -> dict[int, str]:
    """Clients whose round produced nothing usable, with the reason: diverged, malformed or outlying."""
    out: dict[int, str] = {}
    for cid, reply in replies.items():
        if reply.result.failure is not None:
            out[cid] = reply.result.failure
            continue
        plan = reply.job.plan
        reference = fed.method.client_state(fed.method.init_client_state(cid), reply.job.payload)
        reason = check_upload(reply.result.upload, reference, plan.matcher(plan.upload))
        if reason is not None:
            out[cid] = f"upload rejected: {reason}"
    well_formed = {cid: r.result.upload for cid, r in replies.items() if cid not in out}
    for cid, reason in norm_outliers(well_formed, fed.cfg.federation.max_norm_ratio).items():
        out[cid] = f"upload rejected: {reason}"
    return out


def _apply(
    fed: Federation, rnd: int, replies: dict[int, Reply], progress: Progress, trained: dict[str, list[int]]
) -> dict[int, State]:
    """The valid replies update their clients' kept state; returns their uploads for aggregation."""
    uploads: dict[int, State] = {}
    round_numel = 0
    for cid, reply in replies.items():
        result = reply.result
        fed.kept[cid], fed.unsent[cid], uploads[cid] = result.keep, result.unsent, result.upload
        fed.kept_round[cid] = rnd
        trained[str(cid)] = list(result.layers)
        if result.scores is not None:
            fed.allocator.observe(cid, result.scores)
        progress.traffic["upload_bytes"] += nbytes(result.upload)
        round_numel += numel(reply.job.payload) + numel(result.upload)
    progress.round_numel = round_numel // max(len(replies), 1)  # per client: numbers down + up
    return uploads


def _results(fed: Federation, progress: Progress, total_seconds: float) -> dict[str, Any]:
    cfg, method = fed.cfg, fed.method
    first = fed.clients[0].client_id
    last_round = cfg.federation.rounds - 1
    params: dict[str, Any] = {
        # Counted on the initial state's shapes: a deployed runtime's server never sees what clients keep.
        "trainable": method.trainable_count(
            last_round, method.client_state(method.init_client_state(first), method.payload(first))
        ),
        "communicated_per_round": progress.round_numel,  # per client, last round, up + down
        "targets": fed.host.targets,  # the modules that carry LoRA (model.targets, or the model's default)
        "adapted_layers": fed.host.n_layers,
    }
    timing = {
        "topology_seconds": method.topology_seconds,
        "aggregation_seconds_mean": statistics.fmean(progress.agg_seconds) if progress.agg_seconds else 0.0,
        "train_seconds_total": progress.train_seconds,
        "total_seconds": total_seconds,
    }
    alloc = fed.allocator
    budgets = {cid: (alloc.fractions[cid], alloc.budgets[cid]) for cid in alloc.client_ids}
    return build_results(
        cfg, fed.task, fed.clients, progress.scores, progress.rows, method.topology(), timing,
        progress.traffic, params, budgets,
    )  # fmt: skip


def evaluate(fed: Federation, executor: Executor) -> dict[int, Score]:
    """Every client scores its personalised model on its own test split (those that answer)."""
    jobs = [
        EvalJob(
            c.client_id, fed.kept[c.client_id], fed.method.payload(c.client_id), fed.kept_round[c.client_id]
        )
        for c in fed.clients
    ]
    return executor.evaluate(jobs)
