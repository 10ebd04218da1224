"""Where client work runs: in this process, or on a pool of worker processes.

A worker process holds its own backbone (one torch thread each) and receives a client's kept state and
payload with every job, so client state still lives only with the runtime. Results do not depend on the
executor: each job carries its own seed (see ``embedded.client_seed``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import multiprocessing
import signal
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..adapters import State
from ..allocation import Assignment
from ..client import ClientResult, client_evaluate, client_round
from ..config import RunConfig
from ..federation import Federation, prepare
from ..methods import ClientPlan
from ..tasks import Score


@dataclass(frozen=True)
class TrainJob:
    client_id: int
    plan: ClientPlan
    kept: State
    payload: State
    seed: int
    assignment: Assignment | None = None  # the layers it trains (Fed-HeLLo); None = every layer
    unsent: frozenset[int] = frozenset()  # layers it trained in earlier rounds and has not uploaded yet
    kept_round: int = -1  # the round ``kept`` comes from (-1: the initial state); a node reads it from disk
    round: int = 0  # the round this job trains in


@dataclass(frozen=True)
class EvalJob:
    client_id: int
    kept: State
    payload: State
    kept_round: int = -1


class Executor(Protocol):
    """Where client work runs: in this process, on worker processes, or on deployed nodes (Flower).

    ``train`` yields one result per job, in the jobs' order; a client that cannot be reached gets a failed
    result. ``evaluate`` returns the scores it got: a deployed node may not answer.
    """

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[ClientResult]: ...

    def evaluate(self, jobs: Sequence[EvalJob]) -> dict[int, Score]: ...

    def close(self) -> None: ...


def run_train(fed: Federation, job: TrainJob) -> ClientResult:
    return client_round(
        fed.host, fed.task, fed.train[job.client_id], fed.method, job.plan, job.kept, job.payload,
        fed.cfg.train, job.seed, job.assignment, job.unsent,
    )  # fmt: skip


def run_eval(fed: Federation, job: EvalJob) -> Score:
    data, batch = fed.test[job.client_id], fed.cfg.train.eval_batch_size
    return client_evaluate(fed.host, fed.task, data, fed.method, job.kept, job.payload, batch)


class InProcess:
    """Clients one after another on the runtime's own backbone."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[ClientResult]:
        return (run_train(self.fed, job) for job in jobs)

    def evaluate(self, jobs: Sequence[EvalJob]) -> dict[int, Score]:
        return {job.client_id: run_eval(self.fed, job) for job in jobs}

    def close(self) -> None:
        pass


_worker_federation: Federation | None = None  # this worker process's own backbone and data


def one_thread(cfg: RunConfig) -> RunConfig:
    """``cfg`` as one torch thread in one process: a pool worker, or a sweep cell run beside others.

    Runs made this way give the same numbers as a pool of workers (each job carries its own seed)."""
    train = dataclasses.replace(cfg.train, threads=1)
    return dataclasses.replace(cfg, train=train, federation=dataclasses.replace(cfg.federation, workers=0))


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies, so `kill <pid>` of a run leaves no orphans
    computing for nobody (a pool's workers otherwise outlive it)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _init_worker(cfg: RunConfig) -> None:
    global _worker_federation
    die_with_parent()
    torch.set_num_threads(1)  # the pool's workers share the cores
    _worker_federation = prepare(one_thread(cfg))


def pack(obj: object) -> bytes:
    """Jobs and results cross process boundaries as bytes, not as torch's shared-memory tensors: those keep
    a file descriptor open per tensor for as long as it lives, and 1,000 clients' kept states exhaust the
    process's limit ("Too many open files")."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def unpack(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=False)  # our own jobs and results


def _train_in_worker(job: bytes) -> bytes:
    assert _worker_federation is not None
    return pack(run_train(_worker_federation, unpack(job)))


def _eval_in_worker(job: bytes) -> Score:
    assert _worker_federation is not None
    return run_eval(_worker_federation, unpack(job))


class WorkerPool:
    """``workers`` processes, each with one backbone and one torch thread; jobs keep their order."""

    def __init__(self, cfg: RunConfig, workers: int) -> None:
        context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
        self.pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(cfg,)
        )

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[ClientResult]:
        return (unpack(r) for r in self.pool.map(_train_in_worker, (pack(job) for job in jobs)))

    def evaluate(self, jobs: Sequence[EvalJob]) -> dict[int, Score]:
        scores = self.pool.map(_eval_in_worker, (pack(job) for job in jobs))
        return {job.client_id: score for job, score in zip(jobs, scores, strict=True)}

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
