"""The Flower runtime through a real SuperLink and SuperNodes on 127.0.0.1 (never Flower's Ray simulation).

Slow (each message starts a process that loads the backbone): about two minutes per federation here.
"""

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr")

from fedtreelora.config import absolute_paths, load_config
from fedtreelora.methods import options_for
from fedtreelora.runtime.checkpoint import CHECKPOINT
from fedtreelora.runtime.embedded import run
from fedtreelora.runtime.flower.deploy import LocalFederation
from fedtreelora.runtime.processes import command_lines

from .test_durability import checkpoint_round, cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "examples" / "smoke.toml"
NODES = 4  # examples/smoke.toml has four clients


def smoke_folder(out: Path, method: str, *sets: str) -> Path:
    """A run folder holding the smoke config (data paths absolute, as `fedtreelora deploy` writes them)."""
    cfg = absolute_paths(load_config(SMOKE, [f"method='{method}'", "train.threads=1", *sets], options_for()))
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    return out


def scores(results: dict[str, Any]) -> list[Any]:
    return [(r["train_loss"], r["client_score"]) for r in results["rounds"]]


@pytest.fixture(autouse=True)
def flower_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))  # LocalFederation sets its own too


def test_a_flower_federation_gives_the_embedded_numbers(tmp_path: Path) -> None:
    with LocalFederation(tmp_path / "flower") as federation:
        federation.start(NODES)
        for method in ("fedtreelora", "fedit"):
            out = smoke_folder(tmp_path / method, method)
            federation.run(out, round_timeout=300, start_timeout=120)
            deployed = json.loads((out / "results.json").read_text())
            embedded = run(absolute_paths(load_config(SMOKE, [f"method='{method}'", "train.threads=1"],
                                                      options_for())))  # fmt: skip
            assert scores(deployed) == scores(embedded), method
            assert deployed["topology"] == embedded["topology"]
            assert (out / CHECKPOINT).is_file()
    assert all(p.poll() is not None for p in federation.processes.values())
    assert not leftovers(federation), "a Flower helper outlived the federation"


def leftovers(federation: LocalFederation) -> list[str]:
    """Running processes of the federation: on one of its ports (Flower's SuperExecs and apps) or working
    in its folder (the nodes' warm processes)."""
    ports = {
        a.split(":")[-1] for p in federation.processes.values() for a in p.args if "127.0.0.1:" in str(a)
    }
    ports |= {
        str(p.args[i + 1])
        for p in federation.processes.values()
        for i, a in enumerate(p.args)
        if a == "--port"
    }
    found = []
    for text in command_lines().values():
        ours = any(f"127.0.0.1:{port}" in text for port in ports) or str(federation.folder) in text
        if ours and "pytest" not in text:
            found.append(text)
    return found


def test_a_killed_node_is_left_out_then_rejoins_and_an_unregistered_node_is_refused(tmp_path: Path) -> None:
    out = smoke_folder(tmp_path / "run", "fedtreelora", "federation.rounds=4")
    with LocalFederation(tmp_path / "flower", secure=True) as federation:
        federation.start(NODES)
        key = federation.node_key("stranger", register=False)
        stranger = federation.start_node(0, NODES, key, name="stranger")
        assert stranger.wait(timeout=120) != 0  # its key was never registered: the SuperLink refuses it
        assert "failed to activate" in (federation.logs / "stranger.log").read_text().lower()

        def kill_then_restart() -> None:  # SIGKILL node 0 after round 0; bring it back after round 1
            kill, restart = (lambda: federation.kill("node-0")), (lambda: federation.start_node(0, NODES))
            for rnd, act in ((1, kill), (2, restart)):
                deadline = time.time() + 600
                while checkpoint_round(out) < rnd and time.time() < deadline:
                    time.sleep(0.1)
                act()

        chaos = threading.Thread(target=kill_then_restart)
        chaos.start()
        federation.run(out, round_timeout=60, start_timeout=120)
        chaos.join()
    assert not leftovers(federation), "a Flower helper outlived the federation"
    results = json.loads((out / "results.json").read_text())
    failed = [set(r.get("failed", {})) for r in results["rounds"]]
    assert failed[0] == set() and failed[1] == {"0"}, failed  # left out of the round it was killed in
    assert all(f <= {"0"} for f in failed), failed  # the others kept answering
    assert failed[-1] == set(), failed  # back (after a round or two) with its own state from disk
    assert results["rounds"][1].get("unevaluated") == [0]
    assert "unevaluated" not in results["rounds"][-1]


def test_plan_writes_the_commands_and_starts_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--config", str(SMOKE), "--out", str(out), "--plan", "--secure", "--address", "10.0.0.5"]
    done = subprocess.run(cli("deploy", *args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    script = (out / "flower" / "commands.sh").read_text()
    assert script.count("flower-supernode ") == 4 and script.count("flwr supernode register") == 4
    assert "--host 10.0.0.5 --port 9092" in script and "--enable-supernode-auth" in script
    assert "0.0.0.0" not in script and "--insecure" not in script
    assert json.loads((out / "config.json").read_text())["data"]["dir"].startswith("/")
    assert all((out / "flower" / "keys" / f"node-{i}.pub").is_file() for i in range(4))
    refused = subprocess.run(
        cli("deploy", "--config", str(SMOKE), "--address", "10.0.0.5"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "127.0.0.1 only" in refused.stderr
    assert "Traceback" not in refused.stderr
