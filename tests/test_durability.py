"""Durable runs: kill and resume with identical numbers, failing clients, rejected uploads."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from fedtreelora.config import ConfigError, TrainConfig, load_config, resume_config
from fedtreelora.methods import REGISTRY, ClientPlan, options_for
from fedtreelora.runtime import executors
from fedtreelora.runtime.checkpoint import CHECKPOINT
from fedtreelora.runtime.embedded import run
from fedtreelora.validation import check_upload, norm_outliers

from .test_allocation import Blocks, blocks_batches, blocks_state
from .test_end_to_end import tiny_run
from .test_methods import lora, make, value

ROOT = Path(__file__).resolve().parents[1]


def tiny_sets(model: Path, data: Path, *extra: str) -> list[str]:
    return [
        f"model.name='{model}'", f"data.dir='{data}'", "data.n_clients=4", "data.n_train=12", "data.n_test=8",
        "federation.rounds=6", "federation.eval_every=1", "train.batch_size=4", "fedtreelora.warmup_rounds=2",
        "model.max_length=16", *extra,
    ]  # fmt: skip


def without_timings(res: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in res.items() if k != "timing"}
    out["rounds"] = [{k: v for k, v in r.items() if k != "seconds"} for r in res["rounds"]]
    return out


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedtreelora", *args]


def checkpoint_round(folder: Path) -> int:
    path = folder / CHECKPOINT
    if not path.exists():
        return -1
    try:
        return int(torch.load(path, weights_only=False)["progress"].next_round)
    except Exception:
        return -1


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_run_resumes_to_identical_results(
    tmp_path: Path, tiny_bert: Path, tiny_task: Path, workers: int
) -> None:
    sets = tiny_sets(
        tiny_bert, tiny_task, f"federation.workers={workers}", "train.threads=1", "federation.rounds=40"
    )
    args = [a for s in sets for a in ("--set", s)]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(cli("run", *args, "--out", str(whole)), check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cli("run", *args, "--out", str(killed)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env, start_new_session=True,
    )  # fmt: skip
    rng = random.Random(workers)
    target, deadline = rng.randint(3, 20), time.time() + 300
    while checkpoint_round(killed) < target and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the next round (or its checkpoint's write)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes
    proc.wait()
    assert not (killed / "results.json").exists(), "the run finished before it was killed; slow it down"
    resumed = subprocess.run(cli("run", "--resume", str(killed)), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((whole / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    assert without_timings(a) == without_timings(b)


def test_resume_extends_a_finished_run_to_the_numbers_of_a_longer_one(
    tmp_path: Path, tiny_bert: Path, tiny_task: Path
) -> None:
    sets = tiny_sets(tiny_bert, tiny_task, "federation.rounds=3")
    short = run(load_config(None, sets, options_for()), out=tmp_path)
    stored = load_config(None, sets, options_for()).to_dict()
    longer = resume_config(stored, ["federation.rounds=5"], options_for())
    extended = run(longer, out=tmp_path, resume=True)
    fresh = run(load_config(None, [*sets, "federation.rounds=5"], options_for()))
    assert without_timings(extended)["rounds"][:3] == without_timings(short)["rounds"]
    assert without_timings(extended) == without_timings(fresh)


def test_resume_refuses_to_change_the_experiment(tiny_bert: Path, tiny_task: Path) -> None:
    stored = load_config(None, tiny_sets(tiny_bert, tiny_task), options_for()).to_dict()
    with pytest.raises(ConfigError, match=r"--set train\.lr: a resumed run keeps its experiment"):
        resume_config(stored, ["train.lr=0.1"], options_for())
    with pytest.raises(ConfigError, match=r"federation\.rounds"):
        resume_config(stored, ["federation.rounds=2"], options_for())
    ok = resume_config(
        stored, ["federation.workers=2", "train.threads=1", "federation.rounds=9"], options_for()
    )
    assert ok.federation.rounds == 9


def test_resume_cli_errors_are_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(cli("run", "--resume", str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "holds no run" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------- failing clients
@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_survives_failing_clients(tiny_bert: Path, tiny_task: Path, method: str) -> None:
    res = tiny_run(tiny_bert, tiny_task, f"method='{method}'", "federation.client_failure=0.4", "seed=3")
    dropped = [set(r.get("failed", {})) for r in res["rounds"]]
    assert any(dropped), "p = 0.4 over 12 client-rounds: some client drops out"
    for row, gone in zip(res["rounds"], dropped, strict=True):
        assert not gone & set(row["trained_layers"])  # a dropped client trained nothing anyone sees
        assert all(v == "dropped out" for v in row.get("failed", {}).values())
    assert 0.0 <= res["mean_accuracy"] <= 1.0


def test_failures_are_seeded_and_min_clients_skips_rounds(tiny_bert: Path, tiny_task: Path) -> None:
    sets = ("method='fedit'", "federation.client_failure=0.5", "federation.min_clients=3")
    a, b = tiny_run(tiny_bert, tiny_task, *sets), tiny_run(tiny_bert, tiny_task, *sets)
    assert [r.get("failed") for r in a["rounds"]] == [r.get("failed") for r in b["rounds"]]
    for row in a["rounds"]:
        replies = 4 - len(row.get("failed", {}))
        assert row.get("skipped", False) == (replies < 3)
        if row.get("skipped"):
            assert row["trained_layers"] == {}


def test_a_client_that_missed_the_warmup_upload_joins_the_tree() -> None:
    """It counts as having trained no layer: its distances are imputed, it gets a cluster on every layer,
    and its cluster's experts are its members' averages (docs/DESIGN.md)."""
    m = make("fedtreelora", [1, 1, 1, 1], warmup_rounds=1)
    b1 = {0: 1.0, 1: 1.2, 2: 9.0}
    m.aggregate(0, {cid: lora("cluster", [cid, cid], [1.0, b1[cid]]) for cid in range(3)})
    topo = m.topology()
    assert all(len(p) == 4 for p in topo.partitions)
    payload = m.payload(3)
    assert {k for k in payload if ".cluster." in k} == set(lora("cluster", [0, 0], [0, 0]))
    members = [c for c in range(3) if topo.partitions[1][c] == topo.partitions[1][3]]
    if members:  # its layer-1 expert is the average of its members that did upload
        want = sum(b1[c] for c in members) / len(members)
        assert value(payload, "layers.1.query.cluster.B") == pytest.approx(want)


# ------------------------------------------------------------------------------------------ bad uploads
REFERENCE = {"l.lora.A": torch.ones(2, 3), "l.lora.B": torch.zeros(4, 2), "l.mix.alpha": torch.tensor(0.0)}
UPLOADED = ClientPlan.matcher(("*.lora.*",))


@pytest.mark.parametrize(
    ("upload", "reason"),
    [
        (
            {"l.lora.A": torch.ones(2, 3), "l.lora.C": torch.ones(1)},
            "l.lora.C: not a tensor this method uploads",
        ),
        ({"l.mix.alpha": torch.tensor(1.0)}, "l.mix.alpha: not a tensor this method uploads"),
        (
            {"l.lora.A": torch.ones(3, 2), "l.lora.B": torch.zeros(4, 2)},
            "l.lora.A: shape (3, 2), expected (2, 3)",
        ),
        (
            {"l.lora.A": torch.ones(2, 3, dtype=torch.float64), "l.lora.B": torch.zeros(4, 2)},
            "dtype torch.float64",
        ),
        (
            {"l.lora.A": torch.full((2, 3), float("nan")), "l.lora.B": torch.zeros(4, 2)},
            "l.lora.A: holds NaN",
        ),
        (
            {"l.lora.A": torch.ones(2, 3), "l.lora.B": torch.full((4, 2), float("inf"))},
            "l.lora.B: holds NaN or Inf",
        ),
        ({"l.lora.A": torch.ones(2, 3)}, "l.lora.A: sent without B"),
        ({"l.lora.A": [1.0, 2.0], "l.lora.B": torch.zeros(4, 2)}, "not a tensor (list)"),
    ],
)
def test_malformed_uploads_are_named(upload: dict[str, Any], reason: str) -> None:
    found = check_upload(upload, REFERENCE, UPLOADED)
    assert found is not None and reason in found
    assert (
        check_upload({"l.lora.A": torch.ones(2, 3), "l.lora.B": torch.zeros(4, 2)}, REFERENCE, UPLOADED)
        is None
    )


def test_norm_outliers_against_the_round_median() -> None:
    uploads = {cid: {"x": torch.full((4,), v)} for cid, v in enumerate([1.0, 1.2, 0.9, 1.1, 30.0])}
    assert list(norm_outliers(uploads, 10.0)) == [4]
    assert (
        norm_outliers(uploads, 10.0)[4] == "x: norm 60 is 27x the round's median 2.2"
    )  # median of 2.2 2.2 2.0 1.8 60
    assert norm_outliers({0: {"x": torch.ones(2)}, 1: {"x": torch.full((2,), 99.0)}}, 10.0) == {}  # < 3
    assert norm_outliers({c: {"x": torch.zeros(2)} for c in range(3)}, 10.0) == {}  # median 0


def corrupt(kind: str, client: int):  # type: ignore[no-untyped-def]
    """A run_train wrapper that damages one client's upload in the way ``kind`` says."""
    original = executors.run_train

    def run_train(fed, job):  # type: ignore[no-untyped-def]
        result = original(fed, job)
        if job.client_id != client or not result.upload:
            return result
        up = dict(result.upload)
        name = sorted(up)[0]
        if kind == "nan":
            up[name] = torch.full_like(up[name], float("nan"))
        elif kind == "scaled":
            up = {k: v * 1000 for k, v in up.items()}
        elif kind == "shape":
            up[name] = up[name][..., :1]
        elif kind == "key":
            up["layers.0.query.evil.A"] = up[name]
        return dataclasses.replace(result, upload=up)

    return run_train


@pytest.mark.parametrize("kind", ["nan", "scaled", "shape", "key"])
def test_a_bad_upload_is_rejected_and_the_round_goes_on(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tiny_bert: Path,
    tiny_task: Path,
    kind: str,
) -> None:
    monkeypatch.setattr(executors, "run_train", corrupt(kind, client=2))
    res = tiny_run(tiny_bert, tiny_task, "method='fedit'")
    for row in res["rounds"]:
        assert "upload rejected" in row["failed"]["2"]
        assert set(row["trained_layers"]) == {"0", "1", "3"}
    assert "client 2 upload rejected" in caplog.text
    monkeypatch.undo()
    assert all("failed" not in r for r in tiny_run(tiny_bert, tiny_task, "method='fedit'")["rounds"])


def test_a_diverging_client_reports_a_failure_instead_of_uploading() -> None:
    from fedtreelora.adapters import AdapterHost
    from fedtreelora.client import client_round

    host = AdapterHost(Blocks(), ["query"], lora_alpha=1.0, dropout=0.0)
    batches = blocks_batches(3)
    batches[1]["labels"] = torch.full_like(batches[1]["labels"], float("nan"))
    task = SimpleNamespace(batches=lambda data, bs, order, group: iter(batches))
    m = make("fedit", [1, 1])
    kept: dict[str, torch.Tensor] = {}
    plan = ClientPlan("federated", train=("*.lora.*",), upload=("*.lora.*",))
    result = client_round(host, task, None, m, plan, kept, blocks_state("lora"), TrainConfig(), 0)  # type: ignore[arg-type]
    assert result.failure == "local loss became NaN or Inf at step 2" and result.upload == {}
