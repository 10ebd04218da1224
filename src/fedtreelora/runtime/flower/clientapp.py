"""The Flower ClientApp: one node serves the client its node config names.

Node config (``flower-supernode --node-config``): ``partition-id`` (the client id), ``num-partitions``
(the run's ``data.n_clients``), optionally ``state-dir`` (where the client's kept states live; default
``~/.cache/fedtreelora/nodes``), ``threads`` (torch threads; 1 when several nodes share a machine),
``data-root`` (where this machine holds the run's data, if not at the paths in the run's config) and
``warm`` (default true).

Flower starts a new process for every message. Building the node in it (importing torch, loading the
backbone, tokenising the client's rows) would cost seconds per message, so by default the ClientApp hands
each request, as it came, to the node's warm process (``runtime/warm.py``), which keeps them between
messages; ``warm=false`` builds the node in the ClientApp's own process every time. Either way the
client's state between rounds lives on disk (``runtime/node.py``), not in Flower's per-run context, which
a restarted node loses. No handler imports torch.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from .. import processes, warm
from . import records

app = ClientApp()


def _partition(context: Context) -> tuple[int, int]:
    config = context.node_config
    if "partition-id" not in config or "num-partitions" not in config:
        raise ValueError(
            "this SuperNode has no partition: start it with --node-config 'partition-id=I num-partitions=N'"
        )
    return int(config["partition-id"]), int(config["num-partitions"])


@app.query()
def query(msg: Message, context: Context) -> Message:
    partition, partitions = _partition(context)
    return Message(records.content({"partition-id": partition, "num-partitions": partitions}), reply_to=msg)


def _answer(op: str, msg: Message, context: Context) -> Message:
    """The node's answer to a train or evaluate request; the reply says where the node's time went
    (the server's ``flower-timing.json`` collects it)."""
    age, entered = processes.age(), time.perf_counter()
    data, buffer = records.read_raw(msg)
    config = context.node_config
    default = Path.home() / ".cache" / "fedtreelora" / "nodes"
    state_dir = Path(str(config.get("state-dir", default))).expanduser()
    request = {
        "op": op,
        "request": data,
        "client_id": _partition(context)[0],
        "state_dir": str(state_dir),
        "data_root": str(Path(str(config["data-root"])).expanduser()) if "data-root" in config else None,
    }
    threads = int(config.get("threads", 0))
    if bool(config.get("warm", True)):
        reply, out = warm.call(state_dir, request, buffer, threads)
    else:
        reply, out = warm.handle(request, buffer, {}, threads)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    timing = reply["timing"]
    timing["open"] = time.perf_counter() - entered - timing["work"]  # with a warm node: the hand-over
    timing["startup"] = age
    return Message(records.raw_content(reply, out), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _answer("train", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _answer("evaluate", msg, context)
