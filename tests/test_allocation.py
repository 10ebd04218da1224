"""Fed-HeLLo allocation: patterns, strategies, Fisher ranking, partial aggregation, restricted training."""

from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from fedtreelora.adapters import AdapterHost
from fedtreelora.aggregation import cluster_and_complement_averages, partial_average
from fedtreelora.allocation import STRATEGIES, Assignment, create_allocator
from fedtreelora.allocation.base import budget_layers, client_fractions
from fedtreelora.allocation.fisher import layer_fisher, top_layers
from fedtreelora.allocation.patterns import priority, probabilities
from fedtreelora.client import client_round
from fedtreelora.config import AllocationConfig, ConfigError, TrainConfig, load_config
from fedtreelora.methods import ClientPlan, options_for
from fedtreelora.mixers import Sum
from fedtreelora.topology import build_topology, impute_unobserved, layer_distances, layer_silhouette

from .test_methods import lora, make, value


# ------------------------------------------------------------------------------------------------ patterns
@pytest.mark.parametrize(
    ("pattern", "n_layers", "counts"),
    [
        ("bottleneck", 12, [3, 3, 3, 2, 2, 1, 1, 1, 2, 3, 3, 3]),  # SPEC's reference vector (x 27)
        ("triangle", 12, [3, 3, 3, 3, 3, 3, 2, 2, 2, 1, 1, 1]),
        ("inverted_triangle", 12, [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3]),
        # 6 layers: budgets 3, 5 (4.5 rounds up), 6
        ("bottleneck", 6, [3, 3, 2, 1, 2, 3]),
        ("triangle", 6, [3, 3, 3, 2, 2, 1]),
        ("inverted_triangle", 6, [1, 2, 2, 3, 3, 3]),
    ],
)
def test_pattern_probabilities_by_hand(pattern: str, n_layers: int, counts: list[int]) -> None:
    np.testing.assert_allclose(probabilities(pattern, n_layers), np.array(counts) / sum(counts))


def test_uniform_is_flat_and_bottleneck_alternates_from_the_ends() -> None:
    np.testing.assert_allclose(probabilities("uniform", 6), np.full(6, 1 / 6))
    assert priority("bottleneck", 6) == [0, 5, 1, 4, 2, 3]
    assert priority("bottleneck", 30)[:4] == [0, 29, 1, 28]
    assert budget_layers(0.5, 6) == 3 and budget_layers(0.75, 6) == 5 and budget_layers(0.75, 30) == 23
    assert budget_layers(0.01, 6) == 1


@pytest.mark.parametrize(
    ("pattern", "n_layers"), [(p, n) for p in ("bottleneck", "triangle") for n in (6, 12)]
)
def test_gd_collective_allocation_follows_the_pattern(pattern: str, n_layers: int) -> None:
    """Default budgets, one client per group: the clients' collective allocation is the pattern itself."""
    alloc = create_allocator(AllocationConfig("gd", pattern), list(range(n_layers)), [0, 1, 2], seed=0)
    counts = np.zeros(n_layers)
    for cid in (0, 1, 2):
        layers = alloc.assign(3, cid).layers
        assert layers is not None and len(layers) == alloc.budgets[cid]
        counts[list(layers)] += 1
    np.testing.assert_allclose(counts / counts.sum(), probabilities(pattern, n_layers))
    assert alloc.assign(0, 0) == alloc.assign(7, 0)  # deterministic: the same every round


def test_gd_uniform_windows_cover_the_depth_evenly() -> None:
    alloc = create_allocator(AllocationConfig("gd", "uniform"), list(range(6)), list(range(6)), seed=0)
    assert [alloc.budgets[c] for c in range(6)] == [3, 3, 5, 5, 6, 6]
    counts = np.zeros(6)
    for cid in range(6):
        counts[list(alloc.assign(0, cid).layers or ())] += 1
    assert counts.sum() == 28 and counts.max() - counts.min() <= 1
    assert alloc.assign(0, 1).layers == (3, 4, 5)  # client 1 starts where client 0 (layers 0-2) ended


def test_layer_indices_are_the_models_not_positions() -> None:
    alloc = create_allocator(AllocationConfig("gd", "triangle", budgets=[0.5]), [4, 5, 6, 7], [9], seed=0)
    assert alloc.assign(0, 9) == Assignment((4, 5), 2)


def test_rgd_is_seeded_and_follows_the_pattern() -> None:
    def draws(seed: int) -> list[tuple[int, ...] | None]:
        alloc = create_allocator(AllocationConfig("rgd", "bottleneck"), list(range(12)), [0, 1, 2], seed)
        return [alloc.assign(rnd, cid).layers for rnd in range(200) for cid in (0, 1, 2)]

    first = draws(0)
    assert first == draws(0) and first != draws(1)
    assert all(
        layers is not None and len(layers) == b for layers, b in zip(first, [6, 9, 12] * 200, strict=True)
    )
    counts = np.zeros(12)
    for layers in first[::3]:  # the 50 % client: ends far more often than the middle
        counts[list(layers or ())] += 1
    assert counts[[0, 1, 10, 11]].min() > 1.5 * counts[[5, 6]].max()


def test_default_budgets_are_three_equal_groups() -> None:
    assert client_fractions([], 6) == [0.5, 0.5, 0.75, 0.75, 1.0, 1.0]
    assert client_fractions([], 10) == [0.5] * 4 + [0.75] * 3 + [1.0] * 3
    assert client_fractions([0.2, 1.0], 2) == [0.2, 1.0]


def test_fim_measures_every_round_and_codesign_every_f_rounds() -> None:
    fim = create_allocator(AllocationConfig("fim", fisher_batches=3), list(range(4)), [0, 1, 2], seed=0)
    assert fim.assign(0, 2) == Assignment(None, 4, 3)
    cfg = AllocationConfig("codesign", "bottleneck", fisher_every=2, codesign_start="gd")
    co = create_allocator(cfg, list(range(4)), [0, 1, 2], seed=0)
    assert co.assign(0, 0) == Assignment((0, 3), 2) and co.assign(1, 0).layers == (0, 3)  # GD first
    assert co.assign(2, 0).layers is None  # round F: measure
    co.observe(0, {0: 0.1, 1: 5.0, 2: 3.0, 3: 0.2})
    assert co.assign(3, 0) == Assignment((1, 2), 2)  # reuse the latest scores
    assert co.assign(4, 0).layers is None  # round 2F: measure again


def test_top_layers_ranks_scores_ties_to_the_shallower() -> None:
    assert top_layers({0: 1.0, 1: 3.0, 2: 3.0, 3: 2.0}, 2) == (1, 2)
    assert top_layers({0: 1.0, 1: 3.0, 2: 3.0, 3: 2.0}, 1) == (1,)
    assert top_layers({5: 0.0, 6: 0.0}, 1) == (5,)


# -------------------------------------------------------------------------------------------------- Fisher
class Blocks(nn.Module):
    """Three parallel linear 'layers'; layer 1's output enters the loss 10x, layer 2's 0.1x."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([nn.ModuleDict({"query": nn.Linear(4, 4)}) for _ in range(3)])
        self.scale = (1.0, 10.0, 0.1)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        out = sum(s * block["query"](input_ids) for s, block in zip(self.scale, self.layers, strict=True))
        return SimpleNamespace(loss=((out - labels) ** 2).mean())


def blocks_state(expert: str) -> dict[str, torch.Tensor]:
    """Rank-2 LoRA on all three blocks: the same random A, zero B."""
    a = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    state = {}
    for layer in range(3):
        state[f"layers.{layer}.query.{expert}.A"] = a.clone()
        state[f"layers.{layer}.query.{expert}.B"] = torch.zeros(4, 2)
    return state


def blocks_batches(n: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        {"input_ids": torch.randn(8, 4, generator=gen), "labels": torch.randn(8, 4, generator=gen)}
        for _ in range(n)
    ]


def test_fisher_ranks_the_layer_that_matters() -> None:
    model = Blocks()
    host = AdapterHost(model, ["query"], lora_alpha=1.0, dropout=0.0)
    params = host.load(blocks_state("lora"), lambda name: True, Sum())
    scores = layer_fisher(model, params, blocks_batches(2))
    assert set(scores) == {0, 1, 2}
    # Equal A, zero B: B's gradient is the layer's output scale times a common factor, so Fisher ~ scale^2
    assert scores[0] > 0 and scores[1] / scores[0] == pytest.approx(100.0, rel=1e-4)
    assert scores[0] / scores[2] == pytest.approx(100.0, rel=1e-4)
    assert top_layers(scores, 1) == (1,) and top_layers(scores, 2) == (0, 1)
    assert all(p.grad is None for p in params.values())  # measuring leaves no gradients behind


# -------------------------------------------------------------------------------------- partial averaging
def t(x: float) -> torch.Tensor:
    return torch.tensor([x])


def test_partial_average_renormalises_over_the_holders() -> None:
    states = [{"a": t(1.0), "b": t(2.0)}, {"a": t(5.0)}, {"c": t(7.0)}]
    out = partial_average(states, [1.0, 3.0, 2.0])
    assert out["a"].item() == pytest.approx((1 * 1 + 3 * 5) / 4)  # clients 0 and 1 trained it
    assert out["b"].item() == 2.0 and out["c"].item() == 7.0  # one client each
    assert partial_average([{}, {}], [1.0, 1.0]) == {}  # nobody trained anything


def test_cluster_averages_over_the_members_that_trained() -> None:
    # clusters {0, 1} and {2, 3}; x trained by 0, 2, 3 (weights 1, 1, 2); y only by client 1; z by nobody
    states = [{"x": t(1.0)}, {"y": t(4.0)}, {"x": t(3.0)}, {"x": t(6.0)}]
    clusters, comps = cluster_and_complement_averages(states, [1, 1, 1, 2], [0, 0, 1, 1], ["x", "y", "z"])
    assert clusters[0]["x"].item() == 1.0 and clusters[1]["x"].item() == pytest.approx(5.0)  # (3 + 12) / 3
    assert clusters[0]["y"].item() == 4.0 and "y" not in clusters[1]
    assert comps[0] is not None and comps[1] is not None
    assert comps[0]["x"].item() == pytest.approx(5.0) and comps[1]["x"].item() == 1.0
    assert "y" not in comps[0] and comps[1]["y"].item() == 4.0
    assert all("z" not in s for s in [*clusters, *comps] if s is not None)


def test_fedit_keeps_what_nobody_trained() -> None:
    m = make("fedit", [1, 3])
    before = dict(m.payload(0))
    layer0 = {k: v for k, v in lora("lora", [1, 1], [2, 2]).items() if k.startswith("layers.0.")}
    m.aggregate(0, {0: layer0, 1: {}})  # client 1 trained nothing; nobody trained layer 1
    after = m.payload(0)
    assert value(after, "layers.0.query.lora.B") == 2.0  # only client 0's: weights renormalised
    for k in before:
        if k.startswith("layers.1."):
            assert torch.equal(after[k], before[k])


def only(state: dict[str, torch.Tensor], layer: int) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(f"layers.{layer}.")}


def test_fedtreelora_partial_within_clusters() -> None:
    m = make("fedtreelora", [1, 1, 1, 3], warmup_rounds=1)
    b1 = {0: 1.0, 1: 1.2, 2: 9.0, 3: 9.4}
    m.aggregate(0, {cid: lora("cluster", [cid, cid], [1.0, b1[cid]]) for cid in range(4)})
    assert m.topology().partitions[1] == [0, 0, 1, 1]
    start = m.payload(0)
    # Round 1: layer 1 trained by client 0 and by client 3 only; layer 0 by nobody.
    new = {cid: lora("cluster", [0, 0], [0, v]) for cid, v in enumerate([2.0, 4.0, 10.0, 20.0])}
    m.aggregate(1, {0: only(new[0], 1), 1: {}, 2: {}, 3: only(new[3], 1)})
    p0, p2 = m.payload(0), m.payload(2)
    assert value(p0, "layers.1.query.cluster.B") == 2.0  # cluster {0, 1}: client 0 alone
    assert value(p2, "layers.1.query.cluster.B") == 20.0  # cluster {2, 3}: client 3 alone
    assert value(p0, "layers.1.query.external.B") == 20.0 and value(p2, "layers.1.query.external.B") == 2.0
    for k in start:
        if k.startswith("layers.0."):
            assert torch.equal(p0[k], start[k])  # nobody trained layer 0: unchanged


def test_unobserved_clients_get_the_mean_observed_distance() -> None:
    d = np.array([[0.0, 1.0, 2.0, 4.0], [1.0, 0.0, 3.0, 5.0], [2.0, 3.0, 0.0, 6.0], [4.0, 5.0, 6.0, 0.0]])
    out = impute_unobserved(d, np.array([True, True, True, False]))
    fill = (1.0 + 2.0 + 3.0) / 3
    np.testing.assert_allclose(out[:3, :3], d[:3, :3])
    np.testing.assert_allclose(out[3], [fill, fill, fill, 0.0])
    np.testing.assert_allclose(out[:, 3], [fill, fill, fill, 0.0])
    lone = impute_unobserved(d, np.array([True, False, False, False]))
    np.testing.assert_allclose(lone, np.zeros((4, 4)))  # no observed pair: a constant layer


def test_never_trained_clients_do_not_cluster_together() -> None:
    """Two clients that skipped layer 1 hold the zero init there: literally 0 apart. Imputed, they are
    as far from each other as the layer's typical pair, so the budget does not form a cluster."""
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    seen = np.array([True, True, False, False])
    literal = layer_distances([rows])[0]
    imputed = layer_distances([rows], observed=[seen])[0]
    assert literal[2, 3] == 0.0 and imputed[2, 3] == pytest.approx(np.sqrt(2.0))


def test_observed_scoring_takes_silhouettes_over_the_clients_that_trained_the_layer() -> None:
    """Clients 0, 1 at 0 and 1, clients 2, 3 at 10 and 12; client 4 never trained the layer (imputed at the
    mean observed distance, 45 / 6 = 7.5, from everyone). Over the four trainers, cut(2) = {0, 1} | {2, 3}:
    s = (10/11 + 9/10 + 7.5/9.5 + 9.5/11.5) / 4. Counting client 4 drags it under tau = 0.8."""
    rows = np.array([[0.0], [1.0], [10.0], [12.0], [0.0]])
    seen = np.array([True, True, True, True, False])
    by_hand = (10 / 11 + 9 / 10 + 7.5 / 9.5 + 9.5 / 11.5) / 4
    d = layer_distances([rows], observed=[seen])[0]
    assert d[4, 0] == d[4, 3] == pytest.approx(7.5)
    labels = np.array([0, 0, 1, 1, 0])
    assert layer_silhouette(d, labels, seen) == pytest.approx(by_hand)
    assert layer_silhouette(d, labels) < 0.8 < by_hand
    every = build_topology([rows], observed=[seen], tau=0.8)
    trainers = build_topology([rows], observed=[seen], tau=0.8, scoring="observed")
    assert every.k_per_layer == [1] and trainers.k_per_layer == [2]
    assert trainers.partitions[0][:4] == [0, 0, 1, 1]  # client 4 joins a side; its rows decided nothing
    assert trainers.scores[0][2] == trainers.silhouettes[0][2] == pytest.approx(by_hand)
    assert every.linkage is not None and trainers.linkage is not None
    assert np.array_equal(every.linkage, trainers.linkage)  # the same tree
    # every client trained: the two scorings agree
    assert build_topology([rows[:4]], scoring="observed") == build_topology([rows[:4]])
    with pytest.raises(ValueError, match="scoring must be one of"):
        build_topology([rows], scoring="some")  # type: ignore[arg-type]


def test_fedtreelora_silhouette_option_reaches_the_tree() -> None:
    """Layer 0 is the same for everyone; on layer 1 clients {0, 1} and {2, 3} separate (silhouette ~0.96 over
    them) and client 4 never trained it: its imputed row keeps layer 1 under tau = 0.9 unless only trainers
    score."""
    b1 = {0: 1.0, 1: 1.2, 2: 9.0, 3: 9.4, 4: 0.0}
    ks = {}
    for scoring in ("all", "observed"):
        m = make("fedtreelora", [1] * 5, warmup_rounds=1, tau=0.9, silhouette=scoring)
        uploads = {cid: lora("cluster", [1.0, 1.0], [1.0, b1[cid]]) for cid in range(5)}
        uploads[4] = only(uploads[4], 0)
        m.aggregate(0, uploads)
        ks[scoring] = m.topology().k_per_layer
    assert ks == {"all": [1, 1], "observed": [1, 2]}


def test_fedtreelora_tree_from_partial_warmup() -> None:
    """Client 3 never trained layer 1 in the warmup: the tree is built, and every expert stays defined."""
    m = make("fedtreelora", [1, 1, 1, 1], warmup_rounds=1)
    b1 = {0: 1.0, 1: 1.2, 2: 9.0, 3: 9.4}
    uploads = {cid: lora("cluster", [cid, cid], [1.0, b1[cid]]) for cid in range(4)}
    uploads[3] = only(uploads[3], 0)
    m.aggregate(0, uploads)
    assert len(m.topology().partitions) == 2
    for cid in range(4):
        assert {k for k in m.payload(cid) if ".cluster." in k} == set(lora("cluster", [0, 0], [0, 0]))


# ---------------------------------------------------------------------------------- restricted training
class Recorder(torch.optim.AdamW):
    made: ClassVar[list["Recorder"]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Recorder.made.append(self)


def test_untrained_layers_get_no_gradients_no_optimizer_state_no_upload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = Blocks()
    host = AdapterHost(model, ["query"], lora_alpha=1.0, dropout=0.0)
    m = make("fedit", [1, 1])
    layout_state = blocks_state("lora")
    rows = blocks_batches(3)
    task = SimpleNamespace(batches=lambda data, bs, order, group: iter(rows))
    monkeypatch.setattr(torch.optim, "AdamW", Recorder)
    Recorder.made.clear()
    plan = ClientPlan("federated", train=("*.lora.*",), upload=("*.lora.*",))
    result = client_round(
        host, task, None, m, plan, {}, layout_state, TrainConfig(lr=0.1), seed=0,  # type: ignore[arg-type]
        assignment=Assignment((1,), 1), unsent=frozenset({2}),
    )  # fmt: skip
    (opt,) = Recorder.made
    held = {id(p) for p in opt.state}
    for layer in range(3):
        a, b = host.wrapped[f"layers.{layer}.query"].experts["lora"]
        assert (id(a) in held and id(b) in held) == (layer == 1)
        assert a.grad is None and b.grad is None
        assert a.requires_grad == (layer == 1)
    assert result.layers == (1,)
    assert {k.split(".")[1] for k in result.upload} == {"1", "2"}  # this round's layer + the unsent one
    assert not torch.equal(result.upload["layers.1.query.lora.B"], layout_state["layers.1.query.lora.B"])
    assert torch.equal(result.upload["layers.2.query.lora.B"], layout_state["layers.2.query.lora.B"])
    assert result.unsent == frozenset()


def test_warmup_uploads_every_layer_trained_since_the_last_upload() -> None:
    m = make("fedtreelora", [1, 1], warmup_rounds=2)
    host = AdapterHost(Blocks(), ["query"], lora_alpha=1.0, dropout=0.0)
    rows = blocks_batches(1)
    task = SimpleNamespace(batches=lambda data, bs, order, group: iter(rows))
    state = blocks_state("cluster")
    first = client_round(
        host, task, None, m, m.plan(0), state, {}, TrainConfig(), 0, Assignment((0,), 1),  # type: ignore[arg-type]
    )  # fmt: skip
    assert first.upload == {} and first.unsent == frozenset({0})
    last = client_round(
        host, task, None, m, m.plan(1), first.keep, {}, TrainConfig(), 1, Assignment((2,), 1), first.unsent,  # type: ignore[arg-type]
    )  # fmt: skip
    assert {k.split(".")[1] for k in last.upload} == {"0", "2"} and last.unsent == frozenset()


# ------------------------------------------------------------------------------------------------- config
def test_allocation_settings_are_checked() -> None:
    load = lambda *sets: load_config(None, list(sets), options_for())  # noqa: E731
    with pytest.raises(ConfigError, match=r"allocation\.strategy: must be one of"):
        load("allocation.strategy=greedy")
    with pytest.raises(ConfigError, match=r"allocation\.pattern"):
        load("allocation.pattern=diamond")
    with pytest.raises(ConfigError, match=r"allocation\.budgets\[1\]"):
        load("allocation.budgets=[0.5, 1.5]")
    with pytest.raises(ConfigError, match="one fraction per client"):
        load("allocation.budgets=[0.5, 1.0]", "data.n_clients=3")
    assert set(STRATEGIES) == {"none", "gd", "rgd", "fim", "codesign"}
