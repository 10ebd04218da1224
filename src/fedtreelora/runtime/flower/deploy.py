"""A local Flower federation: a SuperLink and N SuperNodes on 127.0.0.1, each stopped by its PID.

``fedtreelora deploy`` uses this; so do the loopback tests. Everything Flower writes goes under one
folder (``{out}/flower``): its home (``FLWR_HOME``: the connection config, installed app bundles), the
app folder, certificates and keys, every process's log, and the nodes' client states. Nothing listens on
anything but 127.0.0.1. Flower's simulation engine (Ray, which listens on every interface) is never used:
the connection config is written here, so ``flwr run`` cannot fall back to its managed simulation.

Processes start in their own session, so stopping one stops its children too (Flower's SuperExec and
the app processes it spawns).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..processes import alive, command_line, descendants
from ..warm import PIDFILE
from .security import Certificates, make_certificates, make_node_key
from .serverapp import LOG_PREFIX

# Set for every Flower process: no telemetry or update check, and no `uv sync` of app dependencies
# (it would reach the network and might install a CUDA torch). SuperExec polls for work every 0.1 s
# instead of 1 s. The model hub stays offline.
ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
    "HF_HUB_OFFLINE": "1",
}
PLAN_PORT = 9092  # the SuperLink's port when nodes come from other machines (deploy --plan --address)
CONNECTION = "fedtreelora"  # the connection name in FLWR_HOME/config.toml
APP_TOML = """\
# A Flower app bundle for fedtreelora: the apps are the installed package's, so this file is all it holds.
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "fedtreelora-app"
version = "0.1.0"
description = "fedtreelora on the Flower deployment engine"
dependencies = ["fedtreelora[flower]"]

[tool.flwr.app]
publisher = "fedtreelora"

[tool.flwr.app.components]
serverapp = "fedtreelora.runtime.flower.serverapp:app"
clientapp = "fedtreelora.runtime.flower.clientapp:app"

[tool.flwr.app.config]
out = ""               # the run folder (holds config.json; gets results.json and checkpoint.pt)
resume = false
round-timeout = 600.0  # seconds a node may take for one message before it is left out
start-timeout = 300.0  # seconds to wait for every partition's node before the first round
"""


class DeployError(RuntimeError):
    """A Flower process did not start or the run did not finish; the message names the log to read."""


def write_app(folder: Path) -> Path:
    """The Flower app folder ``flwr run`` takes; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(APP_TOML)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeployError(f"a Flower process exited with code {process.returncode}; see {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise DeployError(f"nothing answered on 127.0.0.1:{port} after {seconds:.0f} s; see {log}")


@dataclass
class LocalFederation:
    """A SuperLink and its SuperNodes, all on 127.0.0.1; use as a context manager (stops on exit).

    ``script`` writes the same federation out as commands to run by hand, across machines too."""

    folder: Path
    secure: bool = False  # TLS for every connection, and only registered node keys may join
    threads: int = 1  # torch threads per node (the nodes share this machine's cores)
    port: int = 0
    address: str = "127.0.0.1"  # where nodes and the flwr CLI reach the SuperLink (and where it listens)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    keys: dict[int, Path] = field(default_factory=dict)  # partition -> its node's registered private key
    certs: Certificates | None = None

    def __post_init__(self) -> None:
        self.home = self.folder / "home"
        self.logs = self.folder / "logs"
        self.app = write_app(self.folder / "app")
        for d in (self.home, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **ENV, "FLWR_HOME": str(self.home)}
        # Flower starts its helpers (flower-superexec, flwr-clientapp) by bare name: ours must come first.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        exe = shutil.which(args[0], path=self.env["PATH"]) or args[0]
        with open(log, "ab") as f:
            process = subprocess.Popen([exe, *args[1:]], stdout=f, stderr=subprocess.STDOUT, env=self.env,
                                       start_new_session=True)  # fmt: skip
        self.processes[name] = process
        return process

    def _flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("flwr", path=self.env["PATH"]) or "flwr"
        return subprocess.run([exe, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def prepare(self, address: str = "127.0.0.1") -> None:
        """Certificates (when secure) and the ``flwr`` connection to the SuperLink at ``address``; the
        port is a free one on this machine unless set."""
        self.port = self.port or (free_port() if address == "127.0.0.1" else PLAN_PORT)
        self.address = address
        if self.secure:
            hosts = tuple(dict.fromkeys((address, "127.0.0.1", "localhost")))
            self.certs = make_certificates(self.folder / "certs", hosts)
        connection = f'address = "{address}:{self.port}"\n' + (
            f'root-certificates = "{self.certs.ca}"\n' if self.certs else "insecure = true\n"
        )
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n{connection}'
        )

    def superlink_args(self) -> list[str]:
        args = ["flower-superlink", "--host", self.address, "--port", str(self.port)]
        if self.certs is None:
            return [*args, "--insecure"]
        return [*args, "--ssl-ca-certfile", str(self.certs.ca), "--ssl-certfile", str(self.certs.server_cert),
                "--ssl-keyfile", str(self.certs.server_key), "--enable-supernode-auth"]  # fmt: skip

    def node_args(self, partition: int, partitions: int, key: Path | None, port: int) -> list[str]:
        state = self.folder / "nodes" / f"partition-{partition}"
        config = f'partition-id={partition} num-partitions={partitions} state-dir="{state}"'
        config += f" threads={self.threads}"
        args = ["flower-supernode", "--superlink", f"{self.address}:{self.port}", "--host", "127.0.0.1",
                "--port", str(port), "--node-config", config]  # fmt: skip
        if self.certs is None:
            return [*args, "--insecure"]
        args += ["--root-certificates", str(self.certs.ca)]
        return [*args, "--auth-supernode-private-key", str(key)] if key is not None else args

    def register_args(self, key: Path) -> list[str]:
        return ["flwr", "supernode", "register", str(key.with_suffix(".pub")), CONNECTION]

    def run_args(self, out: Path, resume: bool, round_timeout: float, start_timeout: float) -> list[str]:
        settings = (f'out="{out.resolve()}" resume={str(resume).lower()} '
                    f"round-timeout={round_timeout:.1f} start-timeout={start_timeout:.1f}")  # fmt: skip
        return ["flwr", "run", str(self.app), CONNECTION, "--run-config", settings, "--stream"]

    def start_superlink(self) -> None:
        self.prepare()
        process = self._start("superlink", self.superlink_args())
        _wait_port(self.port, process, self.logs / "superlink.log")

    def node_key(self, name: str, register: bool = True) -> Path:
        """A new node key (OpenSSH ECDSA), registered with the SuperLink unless told otherwise."""
        key = make_node_key(self.folder / "keys" / name)
        if register:
            done = self._flwr(*self.register_args(key)[1:])
            if done.returncode != 0:
                said = (done.stdout + done.stderr).strip()[-300:]
                raise DeployError(f"flwr supernode register failed: {said}")
        return key

    def start_node(
        self, partition: int, partitions: int, key: Path | None = None, name: str | None = None
    ) -> subprocess.Popen[bytes]:
        """SuperNode serving client ``partition`` (again, after a crash: it continues from its state on disk).

        A secure federation's node uses ``key``, by default the one ``start`` registered for the partition."""
        args = self.node_args(partition, partitions, key or self.keys.get(partition), free_port())
        return self._start(name or f"node-{partition}", args)

    def start(self, nodes: int) -> None:
        """The SuperLink and one SuperNode per partition (each with a registered key when secure)."""
        self.start_superlink()
        for i in range(nodes):
            if self.secure:
                self.keys[i] = self.node_key(f"node-{i}")
            self.start_node(i, nodes)

    def script(self, nodes: int, out: Path, round_timeout: float = 600.0, start_timeout: float = 300.0
               ) -> str:  # fmt: skip
        """The shell commands that run this federation by hand (``fedtreelora deploy --plan``): one per
        process, each for its own terminal or machine. Writes the node keys (secure) first."""
        env = " ".join(f"{k}={v}" for k, v in {**ENV, "FLWR_HOME": str(self.home)}.items())
        lines = [f"export {env}", "", "# the SuperLink (server machine):", shlex.join(self.superlink_args())]
        keys = [self.node_key(f"node-{i}", register=False) if self.secure else None for i in range(nodes)]
        if self.secure:
            lines += ["", "# register every node's public key (server machine, SuperLink running):"]
            lines += [shlex.join(self.register_args(k)) for k in keys if k is not None]
        lines += ["", "# one SuperNode per client (each on its own machine, or its own terminal):"]
        lines += [shlex.join(self.node_args(i, nodes, keys[i], 9094 + i)) for i in range(nodes)]
        lines += ["", "# the federation (server machine; writes the run folder):"]
        lines.append(shlex.join(self.run_args(out, False, round_timeout, start_timeout)))
        return "\n".join(lines) + "\n"

    def run(
        self,
        out: Path,
        resume: bool = False,
        round_timeout: float = 600.0,
        start_timeout: float = 300.0,
        on_line: Callable[[str], object] | None = None,
    ) -> None:
        """``flwr run`` of the apps on ``out`` (a run folder holding config.json); returns when it ends.

        ``on_line`` gets the ServerApp's own log lines (rounds, failures) as they come."""
        path = self.logs / "flwr-run.log"
        earlier = path.stat().st_size if path.exists() else 0  # a resumed run appends to the same log
        process = self._start("flwr-run", self.run_args(out, resume, round_timeout, start_timeout))
        with open(path, errors="replace") as log:
            log.seek(earlier)
            while True:
                done = process.poll() is not None
                for line in log.readlines():
                    if on_line is not None and LOG_PREFIX in line:
                        on_line(line.split(LOG_PREFIX, 1)[1].rstrip())
                if done:
                    break
                time.sleep(0.2)
        if not (out / "results.json").is_file():
            raise DeployError(
                f"the federation ended without results (flwr run exit {process.returncode}); see {path}"
            )

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal a process and everything it started (its session)."""
        process = self.processes.get(name)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            process.wait()

    def stop(self) -> None:
        """Stop every process started here and every process they started (Flower's SuperExec runs in a
        session of its own): SIGTERM, then SIGKILL whatever is left after 10 s. Returns when all are gone."""
        helpers = descendants({p.pid for p in self.processes.values()}) | self._warm_nodes()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for pid in helpers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name, process in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(name)
        while helpers and time.monotonic() < deadline:
            helpers = {pid for pid in helpers if alive(pid)}
            time.sleep(0.1)
        for pid in helpers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _warm_nodes(self) -> set[int]:
        """The nodes' warm processes (runtime/warm.py): started by short-lived ClientApps, so no longer
        anybody's descendants; found by the pid files in the nodes' state-dirs."""
        pids = set()
        for pidfile in self.folder.glob(f"nodes/*/{PIDFILE}"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text())
                if "fedtreelora.runtime.warm" in command_line(pid):
                    pids.add(pid)
        return pids
