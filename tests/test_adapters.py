"""LoRA wrapper math and client-state swapping."""

from pathlib import Path

import torch
from torch import nn

from fedtreelora.adapters import AdapterHost, LoRALinear, init_lora, rename_expert
from fedtreelora.mixers import Scalar, Sum


class Tiny(nn.Module):
    """Two numbered layers with query/value projections, like an encoder's naming."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            nn.ModuleDict({"query": nn.Linear(4, 3), "value": nn.Linear(4, 3), "key": nn.Linear(4, 3)})
            for _ in range(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(block["query"](x) + block["value"](x) for block in self.layer)  # type: ignore[return-value]


def test_single_expert_is_plain_lora() -> None:
    torch.manual_seed(0)
    base = nn.Linear(4, 3)
    mod = LoRALinear(base, lora_alpha=4.0, dropout=0.0)  # rank 2 -> scaling 2
    a, b = torch.randn(2, 4), torch.randn(3, 2)
    mod.experts = {"lora": (a, b)}
    x = torch.randn(5, 4)
    assert torch.allclose(mod(x), base(x) + 2.0 * x @ a.T @ b.T, atol=1e-6)


def test_scalar_mixer_weights_external_by_sigmoid() -> None:
    base = nn.Linear(4, 3)
    mod = LoRALinear(base, lora_alpha=1.0, dropout=0.0)
    mod.layer_params = {"alpha": torch.tensor(0.0), "alpha_2": torch.tensor(100.0)}
    c, e, e2 = torch.ones(5, 3), torch.full((5, 3), 2.0), torch.full((5, 3), 3.0)
    out = Scalar()(torch.zeros(5, 4), {"cluster": c, "external": e, "external_2": e2}, mod)
    assert torch.allclose(out, c + 0.5 * e + 1.0 * e2)


def test_host_wraps_numbered_targets_and_round_trips_state() -> None:
    model = Tiny()
    host = AdapterHost(model, ["query", "value"], lora_alpha=4, dropout=0.0)
    assert [m.key for m in host.modules] == [
        "layers.0.query",
        "layers.0.value",
        "layers.1.query",
        "layers.1.value",
    ]
    assert host.n_layers == 2
    state = init_lora(host.modules, 2, "cluster", seed=0)
    state["layers.1.mix.alpha"] = torch.tensor(0.3)
    train = host.load(state, lambda n: n.endswith(".B"), Scalar())
    assert len(train) == 4 and all(p.requires_grad for p in train.values())
    back = host.state()
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    # the module list shares the layer's scalar
    assert host.wrapped["layers.1.query"].layer_params is host.wrapped["layers.1.value"].layer_params


def test_backbone_never_holds_client_tensors() -> None:
    model = Tiny()
    n_before = len(model.state_dict())
    host = AdapterHost(model, ["query"], lora_alpha=2, dropout=0.0)
    host.load(init_lora(host.modules, 2, "lora", 1), lambda n: True, Sum())
    assert len(model.state_dict()) == n_before  # wrapped weights only moved under .base
    assert all(not p.requires_grad for p in model.parameters())


def test_init_is_shared_by_seed_and_b_is_zero() -> None:
    model = Tiny()
    host = AdapterHost(model, ["query"], lora_alpha=2, dropout=0.0)
    a = init_lora(host.modules, 2, "lora", seed=7)
    b = init_lora(host.modules, 2, "lora", seed=7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.count_nonzero(v) == 0 for k, v in a.items() if k.endswith(".B"))
    assert set(rename_expert(a, "lora", "cluster")) == {k.replace(".lora.", ".cluster.") for k in a}


def test_backbone_dropout_overrides_every_dropout_in_the_config(tiny_bert: Path) -> None:
    from fedtreelora.models import load_classifier

    kept, _, _ = load_classifier(str(tiny_bert), 2, seed=0)
    assert kept.config.hidden_dropout_prob > 0 and kept.config.attention_probs_dropout_prob > 0
    model, _, _ = load_classifier(str(tiny_bert), 2, seed=0, backbone_dropout=0.0)
    assert model.config.hidden_dropout_prob == 0.0
    assert model.config.attention_probs_dropout_prob == 0.0
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
