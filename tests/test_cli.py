"""The command line on the packaged MiniLM: the smoke example, methods list, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedtreelora.config import load_config
from fedtreelora.methods import REGISTRY, options_for
from fedtreelora.runtime.embedded import run

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "glue" / "sst2"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedtreelora", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.skipif(not SST2.exists(), reason="needs ../shared/data beside the checkout")
def test_smoke_example_writes_results_and_plots(tmp_path: Path) -> None:
    proc = cli(
        "run", "--config", "examples/smoke.toml", "--out", str(tmp_path), "--compare", "local:train.lr=1e-3"
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["method"] == "fedtreelora" and res["topology"] is not None
    ks = res["topology"]["k_per_layer"]
    assert len(ks) == 6 and ks == sorted(ks)  # MiniLM has 6 layers
    assert [list(layer) for layer in res["topology"]["silhouettes"]] == [["2", "3"]] * 6  # 4 clients
    evaluated = [r for r in res["rounds"] if r["mean_accuracy"] is not None]
    assert all(set(r["client_accuracy"]) == {"0", "1", "2", "3"} for r in evaluated)
    for png in ("tree.png", "k_per_layer.png", "accuracy.png", "silhouettes.png"):
        assert (tmp_path / png).stat().st_size > 1000
    # --compare: the same seed and budget under another method, stored beside and drawn on accuracy.png
    local = json.loads((tmp_path / "compare" / "local" / "results.json").read_text())
    assert local["method"] == "local" and local["seed"] == res["seed"]
    assert local["config"]["train"]["lr"] == 1e-3 != res["config"]["train"]["lr"]  # its own rate
    assert len(local["rounds"]) == len(res["rounds"])
    assert local["majority_baseline"] == res["majority_baseline"]
    assert "local (train.lr=1e-3) with the same seed and budget" in proc.stdout


@pytest.mark.skipif(not SST2.exists(), reason="needs ../shared/data beside the checkout")
def test_allocation_from_the_command_line_writes_its_geometry(tmp_path: Path) -> None:
    proc = cli(
        "run", "--config", "examples/smoke.toml", "--out", str(tmp_path),
        "--set", "allocation.strategy=rgd", "--set", "allocation.pattern=bottleneck",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert [c["budget_layers"] for c in res["clients"]] == [3, 3, 5, 6]  # MiniLM: 6 layers
    assert all(len(row["trained_layers"]["0"]) == 3 for row in res["rounds"])
    assert (tmp_path / "allocation.png").stat().st_size > 1000


def test_allocations_lists_every_strategy() -> None:
    proc = cli("allocations")
    assert proc.returncode == 0
    for name in ("none", "gd", "rgd", "fim", "codesign", "bottleneck"):
        assert name in proc.stdout


def test_methods_lists_every_registered_method() -> None:
    proc = cli("methods")
    assert proc.returncode == 0
    for name in REGISTRY:
        assert name in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "train.lr=oops"], "train.lr: must be a number"),
        (["--set", "fedtreelora.linkage=ward"], "fedtreelora.linkage: must be one of"),
        (["--config", "missing.toml"], "--config: no such file"),
        (["--set", "data.dir='/nonexistent'"], "data.dir"),
        (["--set", "data.n_train=100000"], "data.n_train"),
        (["--compare", "nosuch"], "method: must be one of"),
        (["--compare", "local:train.lr=oops"], "train.lr: must be a number"),
        (["--compare", "local", "--compare", "local:train.lr=1e-3"], "--compare: 'local' given twice"),
        (["--set", "fedtreelora.alpha_init=1.0"], "fedtreelora.alpha_init: must be in (0, 1)"),
        (["--set", "train.mixer_lr=0"], "train.mixer_lr: must be > 0"),
        (["--set", "data.kind=ner"], "data.kind: must be one of auto, classification, generation"),
        (["--set", "allocation.strategy=greedy"], "allocation.strategy: must be one of codesign, fim, gd"),
        (["--set", "allocation.budgets=[0.5]"], "allocation.budgets: give one fraction per client"),
        (["--set", "data.dir='../shared/data/flan/sentiment/sst2'"], "data.partition: 'dirichlet' skews"),
        (
            ["--config", "examples/nlg-smoke.toml", "--set", "generation.max_new_tokens=0"],
            "generation.max_new",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = cli("run", *args, "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1


VARIANTS = [
    *[[f"method={name}"] for name in sorted(REGISTRY)],
    ["method=ffa", "ffa.rank_factor=2"],
    *[[f"fedtreelora.interaction={v}"] for v in ("isolationist", "decomposed", "router")],
    *[[f"fedtreelora.clustering={v}"] for v in ("fixed", "independent")],
    ["fedtreelora.distance=cosine"],
]


@pytest.mark.skipif(not SST2.exists(), reason="needs ../shared/data beside the checkout")
@pytest.mark.parametrize("sets", VARIANTS, ids=[" ".join(v) for v in VARIANTS])
def test_smoke_example_runs_every_method_and_variant(sets: list[str]) -> None:
    cfg = load_config(ROOT / "examples" / "smoke.toml", sets, options_for())
    res = run(cfg)
    assert 0.0 <= res["mean_accuracy"] <= 1.0
    assert res["params"]["trainable"] > 0 or sets == ["method=zeroshot"]  # the untrained reference row


@pytest.mark.skipif(not SST2.exists(), reason="needs ../shared/data beside the checkout")
def test_generation_example_runs_end_to_end_on_a_tiny_decoder(tmp_path: Path, tiny_llama: Path) -> None:
    """examples/nlg-smoke.toml as written, with the packaged SmolLM2 swapped for a tiny random Llama."""
    proc = cli(
        "run", "--config", "examples/nlg-smoke.toml", "--set", f"model.name='{tiny_llama}'",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["metric"] == "rouge1" and len(res["clients"]) == 4
    assert set(res["groups"]) == {"text_editing", "struct_to_text", "sentiment", "commonsense"}
    assert "mean personalised rouge1" in proc.stdout and "by group:" in proc.stdout
    for png in ("rouge1.png", "tree.png", "k_per_layer.png"):
        assert (tmp_path / png).stat().st_size > 1000


@pytest.mark.skipif(not SST2.exists(), reason="needs ../shared/data beside the checkout")
def test_the_generation_job_config_is_valid_and_its_data_exists() -> None:
    from fedtreelora.federation import load_clients

    cfg = load_config(ROOT / "examples" / "nlg.toml", [], options_for())
    kind, _, clients = load_clients(cfg)
    assert kind.kind == "generation" and len(clients) == 8
    assert sorted({c.group for c in clients}) == [
        "commonsense",
        "sentiment",
        "struct_to_text",
        "text_editing",
    ]
