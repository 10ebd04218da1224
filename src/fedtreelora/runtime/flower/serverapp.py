"""The Flower ServerApp: the embedded runtime's round loop, with every client on its own Flower node.

The loop, the methods, validation, ``min_clients``, checkpoints and the run folder are the embedded
runtime's (``embedded.run``); only the executor differs: ``NodeClients`` sends each client's job to the
node whose node config states that client's partition id, as one message with its own payload. Node ids
may change when a node restarts (an authenticated node keeps its registered id), partition ids do not: a
node id the SuperLink lists and nobody has claimed is asked for its partition id (a QUERY message). A
node that does not answer in time is left out of the round and forgotten until the SuperLink lists it
again and it answers; a restarted node continues from its client's state on its disk.

Run config (``flwr run --run-config``): ``out`` (the run folder, holding config.json), ``resume``,
``round-timeout`` (seconds a node may take per message), ``start-timeout`` (seconds to wait for every
partition to come online before the first round).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from ...adapters import State
from ...client import ClientResult
from ...federation import Federation
from ...tasks import Score
from ...wire import score_from_json
from .. import embedded
from ..executors import EvalJob, TrainJob
from ..node import RUN_KEY, Request, eval_request, failed, train_request, train_result
from . import records

log = logging.getLogger("fedtreelora")
Reply = tuple[Request, State]  # a node's answer: its JSON data and its packed state
app = ServerApp()
POLL = 0.05  # seconds between pulls; Flower's own send_and_receive sleeps 3 s
QUERY_TIMEOUT = 30.0  # seconds a node may take to say its partition (it starts a process, imports no torch)
LOG_PREFIX = "[fedtreelora] "  # marks this app's log lines among Flower's (``deploy`` shows only these)
TIMING = "flower-timing.json"  # in the run folder: per message, where the time went (benchmarks read it)


@app.main()
def main(grid: Grid, context: Context) -> None:
    from ...config import from_raw
    from ...methods import options_for

    handler = logging.StreamHandler(sys.stdout)  # Flower streams the ServerApp's output to `flwr run`
    handler.setFormatter(logging.Formatter(f"{LOG_PREFIX}%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per HTTP request otherwise
    settings = context.run_config
    out = Path(str(settings["out"]))
    cfg = from_raw(json.loads((out / "config.json").read_text()), options_for())
    run_key = _run_key(out)
    timeout, start_timeout = float(settings["round-timeout"]), float(settings["start-timeout"])

    def nodes(fed: Federation) -> NodeClients:
        return NodeClients(grid, fed, run_key, timeout, start_timeout, out / TIMING)

    results = embedded.run(cfg, LogObserver(), out, bool(settings["resume"]), executor=nodes)
    (out / "results.json").write_text(json.dumps(results, indent=1))


def _run_key(out: Path) -> str:
    """A key made once per run folder, so a resumed run finds the states its nodes filed."""
    path = out / RUN_KEY
    if path.is_file():
        return str(json.loads(path.read_text())["run_key"])
    key = uuid.uuid4().hex[:12]
    path.write_text(json.dumps({"run_key": key}))
    return key


class LogObserver:
    """One log line per round (``flwr run --stream`` and ``flwr log`` show them)."""

    def client_done(self, rnd: int, done: int, phase: str) -> None:
        pass

    def round_done(self, row: dict[str, Any]) -> None:
        score = row.get("mean_score")
        failed = row.get("failed", {})
        log.info(
            "round %d %s loss %.4f%s%s [%.0fs]", row["round"] + 1, row["phase"], row["train_loss"],
            f"  score {score:.4f}" if score is not None else "",
            f"  failed: {', '.join(f'{k} ({v})' for k, v in failed.items())}" if failed else "",
            row["seconds"],
        )  # fmt: skip


class NodeClients:
    """Executor: client ``i``'s work goes to the node with ``partition-id=i``; its kept state stays there."""

    def __init__(
        self, grid: Grid, fed: Federation, run_key: str, timeout: float, start_timeout: float, timing: Path
    ) -> None:
        self.grid, self.run_key, self.timeout, self.timing = grid, run_key, timeout, timing
        self.timeline: list[dict[str, Any]] = []  # per answered message: its round trip and the node's parts
        self.sent = 0.0  # when the latest messages were pushed
        self.config = fed.cfg.to_dict()
        self.n_clients = fed.cfg.data.n_clients
        self.node_of: dict[int, int] = {}  # client id -> node id
        self.arrived: dict[int, float] = {}  # node id -> seconds from push to its latest reply
        self._discover(start_timeout)

    def _discover(self, wait: float = 0.0) -> None:
        """Map new node ids to their partitions; wait up to ``wait`` s until every partition is online."""
        deadline = time.monotonic() + wait
        while True:
            new = set(self.grid.get_node_ids()) - set(self.node_of.values())
            if new:
                queries = [self._message(RecordDict(), n, MessageType.QUERY) for n in new]
                for node, reply in self._exchange(queries, min(self.timeout, QUERY_TIMEOUT)).items():
                    if isinstance(reply, Message):
                        self._claim(node, reply)
            if len(self.node_of) >= self.n_clients or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        missing = sorted(set(range(self.n_clients)) - set(self.node_of))
        if missing:
            log.warning("no node online for partitions %s", missing)

    def _claim(self, node: int, reply: Message) -> None:
        data, _ = records.read(reply)
        partition, partitions = int(data["partition-id"]), int(data["num-partitions"])
        if partitions != self.n_clients:
            raise RuntimeError(
                f"node {node} says num-partitions={partitions}, but the run has "
                f"data.n_clients = {self.n_clients}: start every node with num-partitions={self.n_clients}"
            )
        log.info("node %d serves partition %d", node, partition)
        self.node_of[partition] = node  # a restarted node's new id replaces its old one

    def _message(self, content: RecordDict, node: int, kind: str) -> Message:
        # The TTL drops a message nobody fetched in time, so a node that restarts under its old id (an
        # authenticated one) does not work through requests the server gave up on.
        return Message(content, dst_node_id=node, message_type=kind, ttl=self.timeout)

    def _exchange(self, messages: list[Message], timeout: float | None = None) -> dict[int, Message | str]:
        """Push ``messages`` and pull their replies until all arrived or ``timeout`` (default: the round
        timeout) passed. Per destination node: its reply, or why there is none; a silent node is forgotten."""
        if not messages:
            return {}
        timeout = self.timeout if timeout is None else timeout
        ids = list(self.grid.push_messages(messages))
        self.sent = time.monotonic()
        pending = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages, strict=True)}
        out: dict[int, Message | str] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(list(pending)):
                node = pending.pop(reply.metadata.reply_to_message_id, None)
                if node is not None:
                    out[node] = f"node {node} failed: {reply.error.reason}" if reply.has_error() else reply
                    self.arrived[node] = time.monotonic() - self.sent
            if pending:
                time.sleep(POLL)
        for node in pending.values():
            self.node_of = {c: n for c, n in self.node_of.items() if n != node}
            out[node] = f"no reply from node {node} within {timeout:.0f} s"
        return out

    def _send(self, kind: str, requests: dict[int, tuple[Request, State]]) -> dict[int, Reply | str]:
        """Each client's request to its node; per client id the reply (data, state), or why there is none."""
        self._discover()
        messages, clients = [], {}
        for cid, (request, payload) in requests.items():
            node = self.node_of.get(cid)
            if node is not None:
                messages.append(self._message(records.content(request, payload), node, kind))
                clients[node] = cid
        replies: dict[int, Reply | str] = {}
        for node, reply in self._exchange(messages).items():
            cid = clients[node]
            if isinstance(reply, str):
                replies[cid] = reply
                continue
            replies[cid] = decoded = records.read(reply)
            parts = decoded[0].pop("timing", {})
            self.timeline.append({"kind": kind, "client": cid, "round_trip": self.arrived[node], **parts})
        for cid in requests:
            replies.setdefault(cid, f"no node online for partition {cid}")
        return replies

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[ClientResult]:
        requests = {job.client_id: train_request(job, self.run_key, self.config) for job in jobs}
        replies = self._send(MessageType.TRAIN, requests)
        for job in jobs:
            reply = replies[job.client_id]
            yield failed(reply) if isinstance(reply, str) else train_result(*reply)

    def evaluate(self, jobs: Sequence[EvalJob]) -> dict[int, Score]:
        requests = {job.client_id: eval_request(job, self.run_key, self.config) for job in jobs}
        replies = self._send(MessageType.EVALUATE, requests)
        for cid, reply in replies.items():
            if isinstance(reply, str):  # (failed training is logged by the round loop)
                log.warning("client %d not evaluated: %s", cid, reply)
        return {c: score_from_json(r[0]) for c, r in replies.items() if not isinstance(r, str)}

    def close(self) -> None:
        self.timing.write_text(json.dumps(self.timeline, indent=1))
