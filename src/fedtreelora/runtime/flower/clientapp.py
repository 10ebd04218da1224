"""The Flower ClientApp: one node serves the client its node config names.

Node config (``flower-supernode --node-config``): ``partition-id`` (the client id), ``num-partitions``
(the run's ``data.n_clients``), optionally ``state-dir`` (where the client's kept states live; default
``~/.cache/fedtreelora/nodes``), ``threads`` (torch threads; 1 when several nodes share a machine) and
``data-root`` (where this machine holds the run's data, if not at the paths in the run's config).

Flower starts a new process for every message, so every train or evaluate message pays for importing
torch, loading the backbone and tokenising the client's rows (docs/PERFORMANCE.md measures it); the
client's state between rounds lives on disk (``runtime/node.py``), not in Flower's per-run context, which
a restarted node loses. The query handler imports nothing heavy: it only says which partition this is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from . import records

if TYPE_CHECKING:
    from ...adapters import State
    from ..node import Node

app = ClientApp()


def _partition(context: Context) -> tuple[int, int]:
    config = context.node_config
    if "partition-id" not in config or "num-partitions" not in config:
        raise ValueError(
            "this SuperNode has no partition: start it with --node-config 'partition-id=I num-partitions=N'"
        )
    return int(config["partition-id"]), int(config["num-partitions"])


def _node(request: dict[str, Any], context: Context) -> Node:
    import torch

    from ..node import Node

    config = context.node_config
    state_dir = Path(str(config.get("state-dir", Path.home() / ".cache" / "fedtreelora" / "nodes")))
    root = Path(str(config["data-root"])).expanduser() if "data-root" in config else None
    node = Node.open(request, _partition(context)[0], state_dir.expanduser(), root)
    if "threads" in config:  # the run's own train.threads would override it in prepare()
        torch.set_num_threads(int(config["threads"]))
    return node


@app.query()
def query(msg: Message, context: Context) -> Message:
    partition, partitions = _partition(context)
    return Message(records.content({"partition-id": partition, "num-partitions": partitions}), reply_to=msg)


def process_age() -> float:
    """Seconds since this process started (Linux; NaN elsewhere): what starting it and importing cost."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, in ticks after boot
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return float("nan")


Work = Callable[["Node", dict[str, Any], "State"], tuple[dict[str, Any], "State | None"]]


def _timed(work: Work, msg: Message, context: Context) -> Message:
    """Run ``work`` on this message's node; the reply says where the node's time went (the server's
    ``flower-timing.json`` collects it)."""
    age, entered = process_age(), time.perf_counter()
    request, payload = records.read(msg)
    node = _node(request, context)
    opened = time.perf_counter()
    reply, upload = work(node, request, payload)
    reply["timing"] = {"startup": age, "open": opened - entered, "work": time.perf_counter() - opened}
    return Message(records.content(reply, upload), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _timed(lambda node, request, payload: node.train(request, payload), msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    from ...wire import score_to_json

    def work(node: Node, request: dict[str, Any], payload: State) -> tuple[dict[str, Any], None]:
        return score_to_json(node.evaluate(request, payload)), None

    return _timed(work, msg, context)
