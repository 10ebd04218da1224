"""A deployed node's side of a federation, and the requests a server sends it; no Flower import here.

A node serves one client (its partition id is the client id). Flower may start a new process for every
message (docs/dev/flower-notes.md), so nothing a node learns survives in memory: its client's kept state
(local adapters, mixing scalars, routers, a trained head) goes to the node's disk after every round, one
file per round, and every request names the round to continue from: the last round whose reply the
server accepted. A reply the server rejected, a round it skipped, a server that resumed from an older
checkpoint or a node that restarted therefore all continue from the state the server counted, as in the
embedded runtime. Files older than that round are deleted; the server never asks for them again.

Requests and replies are JSON plus one packed state (``wire.py``): the payload down, the upload up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from .. import wire
from ..adapters import State
from ..client import ClientResult
from ..federation import Federation, prepare
from ..tasks import Score
from ..training import TrainStats
from .executors import EvalJob, TrainJob, run_eval, run_train

Request = dict[str, Any]
RUN_KEY = "flower.json"  # in a deployed run's folder: the key its nodes file their client states under


def local_node_states(folder: Path, kept_round: Mapping[int, int]) -> dict[int, State] | None:
    """The kept states of a run deployed on this machine (``fedtreelora deploy``: each node's state-dir is
    ``{folder}/flower/nodes/partition-{i}``), as of the rounds the server accepted; None if the run was
    not deployed. A client the server never accepted a reply from has no state on disk and is left out."""
    path = folder / RUN_KEY
    if not path.is_file():
        return None
    key = str(json.loads(path.read_text())["run_key"])
    stores = {c: NodeStore(folder / "flower" / "nodes" / f"partition-{c}", key, c) for c in kept_round}
    return {c: stores[c].load(r) for c, r in kept_round.items() if r >= 0 and stores[c].path(r).is_file()}


# -- the server's side ---------------------------------------------------------------------------------


def train_request(job: TrainJob, run_key: str, config: Mapping[str, Any]) -> tuple[Request, State]:
    """What a node needs to train ``job`` (its kept state stays on the node: ``kept_round`` names it)."""
    request = {
        "run_key": run_key,
        "config": dict(config),
        "client_id": job.client_id,
        "round": job.round,
        "plan": wire.plan_to_json(job.plan),
        "seed": job.seed,
        "assignment": wire.assignment_to_json(job.assignment),
        "unsent": sorted(job.unsent),
        "kept_round": job.kept_round,
    }
    return request, job.payload


def eval_request(job: EvalJob, run_key: str, config: Mapping[str, Any]) -> tuple[Request, State]:
    request = {"run_key": run_key, "config": dict(config), "client_id": job.client_id,
               "kept_round": job.kept_round}  # fmt: skip
    return request, job.payload


def train_result(reply: Mapping[str, Any], upload: State) -> ClientResult:
    scores = reply["scores"]
    return ClientResult(
        upload=upload,
        keep={},  # stays on the node
        stats=wire.stats_from_json(reply["stats"]),
        seconds=float(reply["seconds"]),
        layers=tuple(reply["layers"]),
        unsent=frozenset(reply["unsent"]),
        scores=None if scores is None else {int(k): float(v) for k, v in scores.items()},
        failure=reply["failure"],
    )


def failed(reason: str) -> ClientResult:
    """The result of a client that could not be reached or did not answer."""
    return ClientResult({}, {}, TrainStats(float("nan"), 0, 0), 0.0, failure=reason)


# -- the node's side -----------------------------------------------------------------------------------


class NodeStore:
    """One client's kept states on the node's disk: ``{root}/{run_key}/client-{id}/r{round}.safetensors``."""

    def __init__(self, root: Path, run_key: str, client_id: int) -> None:
        self.folder = root / run_key / f"client-{client_id}"

    def path(self, rnd: int) -> Path:
        return self.folder / f"r{rnd}.safetensors"

    def load(self, rnd: int) -> State:
        path = self.path(rnd)
        if not path.is_file():
            raise FileNotFoundError(
                f"this node holds no state of client {self.folder.name} for round {rnd} ({path}); "
                "was it started with another state-dir?"
            )
        return load_file(path)

    def save(self, rnd: int, state: Mapping[str, Any]) -> None:
        """Atomically: a node killed while writing leaves the previous files intact."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(rnd).with_suffix(".tmp")
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, self.path(rnd))

    def prune(self, before: int) -> None:
        for path in self.folder.glob("r*.safetensors"):
            if int(path.stem[1:]) < before:
                path.unlink(missing_ok=True)


@dataclass
class Node:
    fed: Federation  # built for this node's one client: only its rows are tokenised
    client_id: int
    store: NodeStore

    @classmethod
    def open(
        cls, request: Mapping[str, Any], client_id: int, state_dir: Path, data_root: Path | None = None
    ) -> Node:
        """The node for ``client_id`` of the request's run; ``data_root``: where this machine holds the
        run's data, if not at the server's paths (``config.rerooted``)."""
        from ..config import from_raw, rerooted
        from ..methods import options_for

        cfg = from_raw(request["config"], options_for())
        if data_root is not None:
            cfg = rerooted(cfg, data_root)
        if not 0 <= client_id < cfg.data.n_clients:
            raise ValueError(f"partition-id {client_id} is outside the run's {cfg.data.n_clients} clients")
        store = NodeStore(state_dir, request["run_key"], client_id)
        return cls(prepare(cfg, only=[client_id]), client_id, store)

    def kept(self, rnd: int) -> State:
        return dict(self.fed.kept[self.client_id]) if rnd < 0 else self.store.load(rnd)

    def train(self, request: Mapping[str, Any], payload: State) -> tuple[Request, State]:
        kept_round = int(request["kept_round"])
        self.store.prune(kept_round)
        job = TrainJob(
            client_id=self.client_id,
            plan=wire.plan_from_json(request["plan"]),
            kept=self.kept(kept_round),
            payload=payload,
            seed=int(request["seed"]),
            assignment=wire.assignment_from_json(request["assignment"]),
            unsent=frozenset(request["unsent"]),
            kept_round=kept_round,
            round=int(request["round"]),
        )
        result = run_train(self.fed, job)
        if result.failure is None:
            self.store.save(job.round, result.keep)
        reply = {
            "stats": wire.stats_to_json(result.stats),
            "seconds": result.seconds,
            "layers": list(result.layers),
            "unsent": sorted(result.unsent),
            "scores": None if result.scores is None else {str(k): v for k, v in result.scores.items()},
            "failure": result.failure,
        }
        return reply, result.upload

    def evaluate(self, request: Mapping[str, Any], payload: State) -> Score:
        kept_round = int(request["kept_round"])
        return run_eval(self.fed, EvalJob(self.client_id, self.kept(kept_round), payload, kept_round))
