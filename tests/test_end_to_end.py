"""Full runs of the embedded runtime on a tiny random BERT."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedtreelora.config import load_config
from fedtreelora.methods import REGISTRY, options_for
from fedtreelora.runtime.embedded import run
from fedtreelora.topology import cut

CONTRACT = {
    "method",
    "seed",
    "config",
    "rounds",
    "clients",
    "mean_accuracy",
    "topology",
    "timing",
    "communication",
}


def tiny_sets_for(model: Path, data: Path, *sets: str) -> list[str]:
    base = [
        f"model.name='{model}'",
        f"data.dir='{data}'",
        "data.n_clients=4",
        "data.n_train=12",
        "data.n_test=8",
        "federation.rounds=3",
        "federation.eval_every=1",
        "train.batch_size=4",
        "fedtreelora.warmup_rounds=1",
        "fedlease.warmup_rounds=1",
        "model.max_length=16",
    ]
    return [*base, *sets]


def tiny_run(model: Path, data: Path, *sets: str) -> dict[str, Any]:
    return run(load_config(None, tiny_sets_for(model, data, *sets), options_for()))


def check_contract(res: dict[str, Any]) -> None:
    assert set(res) >= CONTRACT
    assert [r["round"] for r in res["rounds"]] == list(range(len(res["rounds"])))
    for r in res["rounds"]:
        assert r["phase"] in ("warmup", "federated", "local")
        assert isinstance(r["train_loss"], float) and r["seconds"] >= 0
    assert all({"id", "n_train", "n_test", "accuracy"} <= set(c) for c in res["clients"])
    assert 0.0 <= res["mean_accuracy"] <= 1.0
    assert set(res["timing"]) >= {
        "topology_seconds",
        "aggregation_seconds_mean",
        "train_seconds_total",
        "total_seconds",
    }
    assert set(res["communication"]) == {"upload_bytes", "download_bytes"}


def check_tree(topology: dict[str, Any], n_clients: int) -> None:
    ks = topology["k_per_layer"]
    assert ks == sorted(ks), "K never decreases with depth"
    z = np.asarray(topology["linkage"])
    for k, part in zip(ks, topology["partitions"], strict=True):
        assert len(part) == n_clients and len(set(part)) == k
        assert list(cut(z, k)) == part, "every layer's partition is a cut of the one tree"


def test_fedtreelora_runs_and_keeps_the_contract(tiny_bert: Path, tiny_task: Path) -> None:
    res = tiny_run(tiny_bert, tiny_task)
    check_contract(res)
    assert [r["phase"] for r in res["rounds"]] == ["warmup", "federated", "federated"]
    check_tree(res["topology"], 4)
    assert res["communication"]["upload_bytes"] > 0 and res["communication"]["download_bytes"] > 0


def test_same_seed_same_numbers(tiny_bert: Path, tiny_task: Path) -> None:
    a = tiny_run(tiny_bert, tiny_task, "seed=3")
    b = tiny_run(tiny_bert, tiny_task, "seed=3")
    assert [r["train_loss"] for r in a["rounds"]] == [r["train_loss"] for r in b["rounds"]]
    assert [c["accuracy"] for c in a["clients"]] == [c["accuracy"] for c in b["clients"]]
    assert a["topology"] == b["topology"]


@pytest.mark.parametrize("clustering", ["fixed", "independent"])
def test_clustering_ablations_run(tiny_bert: Path, tiny_task: Path, clustering: str) -> None:
    res = tiny_run(tiny_bert, tiny_task, f"fedtreelora.clustering='{clustering}'", "fedtreelora.fixed_k=2")
    check_contract(res)
    if clustering == "fixed":
        assert set(res["topology"]["k_per_layer"]) == {2}


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_runs_two_rounds(tiny_bert: Path, tiny_task: Path, method: str) -> None:
    res = tiny_run(tiny_bert, tiny_task, f"method='{method}'", "federation.rounds=2")
    check_contract(res)
    assert len(res["rounds"]) == 2


STRATEGY_PATTERNS = [
    ("gd", "bottleneck"),
    ("rgd", "triangle"),
    ("fim", "uniform"),
    ("codesign", "inverted_triangle"),
]


@pytest.mark.parametrize(("strategy", "pattern"), STRATEGY_PATTERNS, ids=[s for s, _ in STRATEGY_PATTERNS])
@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_runs_under_every_allocation(
    tiny_bert: Path, tiny_task: Path, method: str, strategy: str, pattern: str
) -> None:
    res = tiny_run(
        tiny_bert, tiny_task, f"method='{method}'", f"allocation.strategy='{strategy}'",
        f"allocation.pattern='{pattern}'", "allocation.fisher_every=1", "allocation.fisher_batches=1",
        "federation.rounds=2",
    )  # fmt: skip
    check_contract(res)
    budgets = {str(c["id"]): c["budget_layers"] for c in res["clients"]}
    assert sorted(budgets.values()) == [2, 2, 3, 4]  # 4 layers; 4 clients in groups 0.5, 0.5, 0.75, 1.0
    for row in res["rounds"]:
        for cid, layers in row["trained_layers"].items():
            assert layers == [] if method == "zeroshot" else len(layers) == budgets[cid]


def test_full_budget_records_every_layer(tiny_bert: Path, tiny_task: Path) -> None:
    res = tiny_run(tiny_bert, tiny_task, "method='fedit'", "federation.rounds=1")
    assert res["rounds"][0]["trained_layers"] == {str(i): [0, 1, 2, 3] for i in range(4)}
    assert {c["budget"] for c in res["clients"]} == {1.0}


def test_trainable_head_stays_local(tiny_bert: Path, tiny_task: Path) -> None:
    res = tiny_run(tiny_bert, tiny_task, "model.train_head=true", "method='fedit'", "federation.rounds=2")
    frozen = tiny_run(tiny_bert, tiny_task, "method='fedit'", "federation.rounds=2")
    # the head never travels: the same traffic with or without it
    assert res["communication"] == frozen["communication"]
    assert res["rounds"][-1]["train_loss"] != frozen["rounds"][-1]["train_loss"]


@pytest.mark.parametrize(
    "sets",
    [
        ("fedtreelora.interaction='isolationist'",),
        ("fedtreelora.interaction='decomposed'", "fedtreelora.clustering='fixed'", "fedtreelora.fixed_k=3"),
        ("fedtreelora.interaction='router'",),
        ("fedtreelora.distance='cosine'",),
        ("method='ffa'", "ffa.rank_factor=2"),
    ],
    ids=["isolationist", "decomposed", "router", "cosine", "ffa-2r"],
)
def test_variants_and_ablations_run(tiny_bert: Path, tiny_task: Path, sets: tuple[str, ...]) -> None:
    res = tiny_run(tiny_bert, tiny_task, *sets)
    check_contract(res)
    assert res["params"]["trainable"] > 0


def test_traffic_follows_each_methods_protocol(tiny_bert: Path, tiny_task: Path) -> None:
    """FedSA uploads only A; FFA downloads only B; local sends nothing; isolationist < scalar downloads."""
    r = 8  # model.rank
    lora = 4 * 2 * (r * 32 + 32 * r)  # 4 layers x (query, value) x (A + B) numbers on the tiny BERT
    results = {
        name: tiny_run(tiny_bert, tiny_task, *sets)
        for name, sets in {
            "fedit": ("method='fedit'",),
            "fedsa": ("method='fedsa'",),
            "ffa": ("method='ffa'",),
            "local": ("method='local'",),
        }.items()
    }
    per_round = {name: res["params"]["communicated_per_round"] for name, res in results.items()}
    assert per_round["fedit"] == 2 * lora  # down + up
    assert per_round["fedsa"] == lora  # A down, A up
    assert per_round["ffa"] == lora  # B down, B up
    assert per_round["local"] == 0
    assert results["local"]["communication"] == {"upload_bytes": 0, "download_bytes": 0}
    iso = tiny_run(tiny_bert, tiny_task, "fedtreelora.interaction='isolationist'", "fedtreelora.tau=-1")
    scalar = tiny_run(tiny_bert, tiny_task, "fedtreelora.tau=-1")
    assert iso["communication"]["upload_bytes"] == scalar["communication"]["upload_bytes"]
    assert iso["communication"]["download_bytes"] < scalar["communication"]["download_bytes"]


@pytest.mark.parametrize("strategy", ["none", "codesign"])
def test_worker_pool_gives_the_sequential_numbers(tiny_bert: Path, tiny_task: Path, strategy: str) -> None:
    """Two worker processes (one thread each) reproduce the one-thread sequential run exactly (with a
    Fisher-driven allocation too: scores measured in the workers steer the server's later rounds)."""
    alloc = [f"allocation.strategy='{strategy}'", "allocation.fisher_every=1"]
    sequential = tiny_run(tiny_bert, tiny_task, "train.threads=1", *alloc)
    pooled = tiny_run(tiny_bert, tiny_task, "federation.workers=2", *alloc)
    assert [r["trained_layers"] for r in pooled["rounds"]] == [
        r["trained_layers"] for r in sequential["rounds"]
    ]
    assert [r["train_loss"] for r in pooled["rounds"]] == [r["train_loss"] for r in sequential["rounds"]]
    assert [c["accuracy"] for c in pooled["clients"]] == [c["accuracy"] for c in sequential["clients"]]
    assert pooled["topology"] == sequential["topology"]
    assert pooled["communication"] == sequential["communication"]
