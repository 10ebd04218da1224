"""Forward rules on hand-computed values."""

import torch

from fedtreelora.adapters import LoRALinear
from fedtreelora.mixers import Convex, Gate, Sum, TopM


def module(**params: torch.Tensor) -> LoRALinear:
    mod = LoRALinear(torch.nn.Linear(2, 1), lora_alpha=1.0, dropout=0.0)
    mod.params = dict(params)
    return mod


def ones(v: float) -> torch.Tensor:
    return torch.full((3, 1), float(v))


def test_sum_adds_experts() -> None:
    assert torch.equal(Sum()(torch.zeros(3, 2), {"a": ones(1), "b": ones(2)}, module()), ones(3))


def test_gate_with_zero_router_is_half_half_and_falls_back_without_other() -> None:
    mod = module(**{"router.weight": torch.zeros(2, 2)})
    gate = Gate("own", "other")
    x = torch.randn(3, 2)
    assert torch.allclose(gate(x, {"own": ones(2), "other": ones(4)}, mod), ones(3))
    assert torch.equal(gate(x, {"own": ones(2)}, mod), ones(2))


def test_gate_follows_the_router() -> None:
    # logits = [0, 10 * x0]: for x0 = 1 the 'other' expert dominates
    mod = module(**{"router.weight": torch.tensor([[0.0, 0.0], [10.0, 0.0]]), "router.bias": torch.zeros(2)})
    out = Gate("own", "other")(
        torch.tensor([[1.0, 0.0]]), {"own": torch.zeros(1, 1), "other": torch.ones(1, 1)}, mod
    )
    assert out.item() == torch.sigmoid(torch.tensor(10.0)).item()


def test_convex() -> None:
    out = Convex("g", "p", 0.25)(torch.zeros(3, 2), {"g": ones(4), "p": ones(8)}, module())
    assert torch.allclose(out, ones(0.75 * 4 + 0.25 * 8))


def test_top_m_maps_high_outputs_to_the_own_expert() -> None:
    # M = 2 experts, router has 2M-1 = 3 outputs; output 2 (>= M) means the own expert (index 0).
    # logits [0, -inf-ish, 5]: top-2 are outputs 2 and 0, both the own expert -> all weight on expert_0.
    w = torch.tensor([[0.0, 0.0], [-50.0, 0.0], [5.0, 0.0]])
    mod = module(**{"router.weight": w})
    x = torch.tensor([[1.0, 0.0]])
    out = TopM()(x, {"expert_0": torch.full((1, 1), 3.0), "expert_1": torch.full((1, 1), 7.0)}, mod)
    assert torch.allclose(out, torch.full((1, 1), 3.0))


def test_top_m_renormalises_the_chosen_outputs() -> None:
    # logits [1, 1, -50]: top-2 are outputs 0 and 1 with equal weight -> mean of the two experts
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-50.0, 0.0]])
    mod = module(**{"router.weight": w})
    out = TopM()(
        torch.tensor([[1.0, 0.0]]), {"expert_0": torch.ones(1, 1), "expert_1": torch.full((1, 1), 3.0)}, mod
    )
    assert torch.allclose(out, torch.full((1, 1), 2.0))


def test_top_m_without_router_is_the_own_expert() -> None:
    out = TopM()(torch.zeros(3, 2), {"expert_0": ones(5)}, module())
    assert torch.equal(out, ones(5))
