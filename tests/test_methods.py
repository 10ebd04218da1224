"""Each method's server side on hand-computed values (no model needed)."""

from typing import Any

import numpy as np
import pytest
import torch

from fedtreelora.adapters import AdaptedModule
from fedtreelora.methods import REGISTRY, ClientInfo, Layout
from fedtreelora.methods.fedlease import choose_clusters

# two layers, one module each, d_in = d_out = 2, rank 1
LAYOUT = Layout(
    modules=(
        AdaptedModule("layers.0.query", 0, "query", 2, 2),
        AdaptedModule("layers.1.query", 1, "query", 2, 2),
    ),
    rank=1,
)


def make(name: str, n_train: list[int], **options: Any) -> Any:
    cls = REGISTRY[name]
    opts = cls.Options(**options)
    return cls(opts, LAYOUT, [ClientInfo(i, n) for i, n in enumerate(n_train)], rounds=4, seed=0)


def lora(
    expert: str, a: list[float], b: list[float], which: tuple[str, ...] = ("A", "B")
) -> dict[str, torch.Tensor]:
    """Client state with A = a[l] * ones(1, 2) and B = b[l] * ones(2, 1) on layer l."""
    out = {}
    for layer in (0, 1):
        if "A" in which:
            out[f"layers.{layer}.query.{expert}.A"] = torch.full((1, 2), float(a[layer]))
        if "B" in which:
            out[f"layers.{layer}.query.{expert}.B"] = torch.full((2, 1), float(b[layer]))
    return out


def value(state: dict[str, torch.Tensor], name: str) -> float:
    return float(state[name].flatten()[0])


def test_fedit_weights_by_samples() -> None:
    m = make("fedit", [1, 3])
    m.aggregate(0, {0: lora("lora", [1, 1], [0, 4]), 1: lora("lora", [3, 5], [4, 0])})
    p = m.payload(0)
    assert value(p, "layers.0.query.lora.A") == pytest.approx(2.5)  # (1*1 + 3*3) / 4
    assert value(p, "layers.1.query.lora.A") == pytest.approx(4.0)  # (1 + 15) / 4
    assert value(p, "layers.0.query.lora.B") == pytest.approx(3.0)
    assert m.payload(1) is p


def test_fedsa_averages_a_and_never_touches_b() -> None:
    m = make("fedsa", [1, 1])
    plan = m.plan(0)
    after_training = {0: lora("lora", [1, 1], [7, 7]), 1: lora("lora", [3, 3], [9, 9])}
    uploads = {cid: plan.select(s, plan.upload) for cid, s in after_training.items()}
    assert all(not k.endswith(".B") for u in uploads.values() for k in u)  # only A travels
    kept = {cid: plan.select(s, plan.keep) for cid, s in after_training.items()}
    m.aggregate(0, uploads)
    for cid in (0, 1):
        state = m.client_state(kept[cid], m.payload(cid))
        assert value(state, "layers.0.query.lora.A") == pytest.approx(2.0)
        assert value(state, "layers.0.query.lora.B") == [7, 9][cid]  # each client's own B


def test_ffa_sends_only_b_and_keeps_a_frozen() -> None:
    m = make("ffa", [1, 1], rank_factor=2)
    assert all(k.endswith(".B") for k in m.payload(0))
    assert m.init_client_state(0)["layers.0.query.lora.A"].shape == (2, 2)  # rank 2r
    assert m.plan(0).train == ("*.lora.B",)
    m.aggregate(
        0, {0: {"layers.0.query.lora.B": torch.ones(2, 2)}, 1: {"layers.0.query.lora.B": torch.zeros(2, 2)}}
    )
    assert value(m.payload(1), "layers.0.query.lora.B") == 0.5


def test_fedalt_rest_of_world_excludes_the_client() -> None:
    m = make("fedalt", [1, 1, 1])
    assert m.payload(0) == {}  # no Rest-of-World in round 0
    m.aggregate(0, {cid: lora("individual", [v, v], [v, v]) for cid, v in enumerate([1.0, 2.0, 6.0])})
    expected = {0: 4.0, 1: 3.5, 2: 1.5}  # unweighted mean of the two others
    for cid, want in expected.items():
        p = m.payload(cid)
        assert set(p) == {k.replace("individual", "rest") for k in lora("individual", [0, 0], [0, 0])}
        assert value(p, "layers.1.query.rest.B") == pytest.approx(want)


def test_feddpa_trains_personal_then_global_and_sends_global() -> None:
    m = make("feddpa", [1, 1])
    plan = m.plan(0)
    assert plan.train == ("*.local.*",) and plan.then_train == ("*.global.*",)
    assert plan.upload == ("*.global.*",) and plan.keep == ("*.local.*",)
    assert all(".global." in k for k in m.payload(0))


def test_fedlease_picks_k_by_silhouette() -> None:
    # cosine distance: directions matter, so make three groups of distinct directions
    dirs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    rows = np.stack([dirs[g] + 0.01 * i for i, g in enumerate([0, 0, 1, 1, 2, 2])])
    topology, scores = choose_clusters([rows, rows], k_max=4)
    assert topology.k_per_layer == [3, 3]
    assert max(scores, key=lambda k: scores[k]) == 3
    assert (
        len(set(topology.partitions[0][:2])) == 1 and topology.partitions[0][0] != topology.partitions[0][2]
    )
    two, _ = choose_clusters([rows, rows], k_max=2)
    assert two.k_per_layer == [2, 2]


def test_fedlease_payload_puts_own_expert_first() -> None:
    m = make("fedlease", [1, 1, 1, 1], warmup_rounds=1)
    # clients 0,1 point one way, 2,3 another: two clusters
    uploads = {
        cid: lora("expert_0", [1, 1], b) for cid, b in enumerate([[1, 1], [1.1, 1], [-1, -1], [-1, -1.1]])
    }
    m.aggregate(0, uploads)
    assert m.topology().k_per_layer == [2, 2]
    p0, p2 = m.payload(0), m.payload(2)
    assert value(p0, "layers.0.query.expert_0.B") == pytest.approx(1.05)
    assert value(p0, "layers.0.query.expert_1.B") == pytest.approx(-1.0)
    assert value(p2, "layers.0.query.expert_0.B") == pytest.approx(-1.0)
    assert p0["layers.0.query.router.weight"].shape == (3, 2)  # 2M - 1 outputs


def fedtree_uploads() -> dict[int, dict[str, torch.Tensor]]:
    """Layer 0: everyone alike; layer 1: clients {0, 1} vs {2, 3}."""
    b1 = {0: 1.0, 1: 1.2, 2: 9.0, 3: 9.4}
    return {cid: lora("cluster", [cid, cid], [1.0, b1[cid]]) for cid in range(4)}


@pytest.mark.parametrize("interaction", ["scalar", "isolationist", "decomposed", "router"])
def test_fedtreelora_experts_by_hand(interaction: str) -> None:
    m = make("fedtreelora", [1, 1, 1, 1], warmup_rounds=1, interaction=interaction, tau=0.1)
    assert m.payload(0) == {}
    m.aggregate(0, fedtree_uploads())
    topo = m.topology()
    assert topo.k_per_layer == [1, 2]
    assert topo.partitions[1] == [0, 0, 1, 1]
    p = m.payload(0)
    # layer 0: one cluster of everyone: A = mean(0, 1, 2, 3) = 1.5, no external expert
    assert value(p, "layers.0.query.cluster.A") == pytest.approx(1.5)
    assert not any(k.startswith("layers.0.") and ".external" in k for k in p)
    # layer 1: cluster {0, 1}: B = 1.1; the other cluster {2, 3}: B = 9.2
    assert value(p, "layers.1.query.cluster.B") == pytest.approx(1.1)
    externals = {k for k in p if ".external" in k}
    if interaction == "isolationist":
        assert externals == set()
    elif interaction == "decomposed":
        assert value(p, "layers.1.query.external_1.B") == pytest.approx(9.2)
    else:
        assert value(p, "layers.1.query.external.B") == pytest.approx(9.2)
        assert value(p, "layers.1.query.external.A") == pytest.approx(2.5)
    state = m.client_state({}, p)
    mixing = {k for k in state if ".mix." in k or ".router." in k}
    expected = {
        "scalar": {"layers.1.mix.alpha"},
        "isolationist": set(),
        "decomposed": {"layers.1.mix.alpha_1"},
        "router": {"layers.1.query.router.weight"},
    }[interaction]
    assert mixing == expected


def test_fedtreelora_reaggregates_within_clusters() -> None:
    m = make("fedtreelora", [1, 1, 1, 3], warmup_rounds=1)
    m.aggregate(0, fedtree_uploads())
    new = {cid: lora("cluster", [0, 0], [0, v]) for cid, v in enumerate([2.0, 4.0, 10.0, 20.0])}
    m.aggregate(1, new)
    # cluster {2, 3} with weights 1:3 -> (10 + 60) / 4 = 17.5; its external for client 0's cluster
    assert value(m.payload(3), "layers.1.query.cluster.B") == pytest.approx(17.5)
    assert value(m.payload(0), "layers.1.query.external.B") == pytest.approx(17.5)
    assert value(m.payload(0), "layers.1.query.cluster.B") == pytest.approx(3.0)
    assert m.topology().k_per_layer == [1, 2]  # the tree is built once
