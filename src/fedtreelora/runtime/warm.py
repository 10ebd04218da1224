"""A warm node: one long-lived process per deployed node that keeps the backbone and the client's rows.

Flower starts a new ClientApp process for every message, and each one would import torch and
transformers and load the backbone again (about 5 s of CPU per message; docs/PERFORMANCE.md §10). The
ClientApp instead hands its request to this process over a Unix socket in the node's state-dir (owner
only), starting it on first use. It serves one request at a time, keeps the ``Node`` of the latest run
(the client's kept state still lives on disk, so a restart changes nothing but time), and exits when the
process that started its first caller (the node's SuperExec) is gone or after ``IDLE`` seconds without a
request. No Flower import here.

Frames: an 8-byte length and a JSON text, then an 8-byte length and a packed state (``wire.py``); the
caller passes both through as they came in Flower's message, so it never imports torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .processes import alive

SOCKET = "warm.sock"
PIDFILE = "warm.pid"
IDLE = 900.0  # seconds without a request before the warm process exits
START = 300.0  # seconds a caller waits for a new warm process to listen (it imports torch, loads nothing yet)


def _send(conn: socket.socket, data: dict[str, Any], buffer: bytes) -> None:
    text = json.dumps(data).encode()
    conn.sendall(struct.pack("!Q", len(text)) + text + struct.pack("!Q", len(buffer)) + buffer)


def _exactly(conn: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the warm node process closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(conn: socket.socket) -> tuple[dict[str, Any], bytes]:
    data: dict[str, Any] = json.loads(_exactly(conn, struct.unpack("!Q", _exactly(conn, 8))[0]))
    return data, _exactly(conn, struct.unpack("!Q", _exactly(conn, 8))[0])


# -- the caller's side (the ClientApp process) ----------------------------------------------------------


def call(folder: Path, data: dict[str, Any], buffer: bytes, threads: int) -> tuple[dict[str, Any], bytes]:
    """Send one request (JSON with the state's ``spec``, and the state's buffer) to the warm process of the
    node whose state-dir is ``folder``, starting it if needed; returns its reply in the same form (a
    failure: ``{"error": ...}``)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / SOCKET
    conn = _connect(path)
    if conn is None:
        with open(folder / "warm.lock", "w") as lock:  # one caller starts it; the others wait for it
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn = _connect(path) or _start(folder, path, threads)
    with conn:
        _send(conn, data, buffer)
        reply, out = _receive(conn)
    return reply, out


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        return conn
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None


def _start(folder: Path, path: Path, threads: int) -> socket.socket:
    path.unlink(missing_ok=True)  # a stale socket of a process that died
    with open(folder / "warm.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "fedtreelora.runtime.warm", str(path), str(os.getppid()), str(threads)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + START
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        time.sleep(0.05)
    raise RuntimeError(f"the warm node process did not start within {START:.0f} s; see {folder / 'warm.log'}")


# -- the warm process -----------------------------------------------------------------------------------


def serve(path: Path, watched: int, threads: int) -> None:
    """Answer requests on ``path`` until ``watched`` exits or nobody asks for ``IDLE`` seconds."""
    nodes: dict[str, Any] = {}  # the latest run's node only: a backbone each
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `finally` removes the socket
    (path.parent / PIDFILE).write_text(str(os.getpid()))  # `deploy` stops it by this
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen()
    server.settimeout(1.0)
    last = time.monotonic()
    try:
        while alive(watched) and time.monotonic() - last < IDLE:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(None)
                _send(conn, *handle(*_receive(conn), nodes, threads))
            last = time.monotonic()
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def handle(
    data: dict[str, Any], buffer: bytes, nodes: dict[str, Any], threads: int
) -> tuple[dict[str, Any], bytes]:
    """Answer one request with the node of its run, built unless ``nodes`` holds it (a cold ClientApp
    passes an empty dict); a failure becomes ``{"error": ...}`` for the caller to raise."""
    import torch

    from .. import wire
    from .node import Node

    try:
        request = data["request"]
        payload = wire.unpack_state(request.pop("spec"), buffer)
        key = json.dumps([request["config"], request["run_key"], data["client_id"], data["state_dir"],
                          data["data_root"]], sort_keys=True)  # fmt: skip
        if key not in nodes:
            nodes.clear()
            root = Path(data["data_root"]) if data["data_root"] else None
            nodes[key] = Node.open(request, data["client_id"], Path(data["state_dir"]), root)
        node: Node = nodes[key]
        if threads:  # the node's setting wins over the run's train.threads
            torch.set_num_threads(threads)
        opened = time.perf_counter()
        if data["op"] == "train":
            reply, upload = node.train(request, payload)
        else:
            reply, upload = wire.score_to_json(node.evaluate(request, payload)), {}
        # Only the work: the ClientApp counts everything else it waited for as opening the node.
        reply["timing"] = {"work": time.perf_counter() - opened}
        spec, out = wire.pack_state(upload)
        return {**reply, "spec": spec}, out
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}, b""


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
