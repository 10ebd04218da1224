"""LoRA adapters that can hold several experts, and the host that swaps client states in and out.

A client's whole state is a flat ``dict[str, Tensor]`` with these names:

- ``layers.{l}.{target}.{expert}.A`` (r, d_in) and ``...{expert}.B`` (d_out, r): one LoRA expert on one
  module;
  expert names carry no dots (``lora``, ``cluster``, ``external``, ``external_2``, ...).
- ``layers.{l}.{target}.{param}`` (anything not ending in ``.A``/``.B``): a module-level parameter,
  e.g. a router's ``router.weight``.
- ``layers.{l}.mix.{param}``: a parameter shared by every module of layer ``l`` (FedTreeLoRA's alpha).
- ``head.{name}``: classification-head parameters, present only when the head trains.

The backbone is loaded once; ``AdapterHost.load`` attaches a client's tensors to the wrapped modules as fresh
``nn.Parameter`` objects, so the set of experts may differ between clients, layers and rounds without any
masking, and the backbone itself never holds client state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .mixers import Mixer, Sum

State = dict[str, Tensor]

# Mixing parameters: per-layer scalars (``layers.l.mix.*``) and per-module routers (``*.router.*``). They
# weight experts rather than being experts, and may train at their own rate (``train.mixer_lr``).
MIXING = ("*.mix.*", "*.router.*")


@dataclass(frozen=True)
class AdaptedModule:
    """One linear module carrying LoRA: ``key`` = ``layers.{layer}.{target}``."""

    key: str
    layer: int
    target: str
    d_in: int
    d_out: int


class LoRALinear(nn.Module):
    """``h = W0 x + mixer({name: s * B_name A_name dropout(x)})``, ``s = lora_alpha / rank``; W0 stays frozen.

    The rank is read off each expert's A, so experts of different ranks (FFA-LoRA at 2r) need no setting.
    """

    def __init__(self, base: nn.Linear, lora_alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.lora_alpha = lora_alpha
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.mixer: Mixer = Sum()
        # Plain dicts on purpose: client tensors must not enter the backbone's state_dict or parameters().
        self.experts: dict[str, tuple[Tensor, Tensor]] = {}
        self.params: dict[str, Tensor] = {}  # module-level extras (routers)
        self.layer_params: dict[str, Tensor] = {}  # shared with the other modules of this layer

    def forward(self, x: Tensor) -> Tensor:  # x: (..., d_in) -> (..., d_out)
        out = self.base(x)
        if not self.experts:
            return out
        h = self.dropout(x)
        deltas = {
            name: (h @ a.T) @ b.T * (self.lora_alpha / a.shape[0])  # (..., d_in) -> (..., r) -> (..., d_out)
            for name, (a, b) in self.experts.items()
        }
        return out + self.mixer(h, deltas, self)


_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def find_targets(model: nn.Module, targets: Iterable[str]) -> list[tuple[str, int, str, nn.Linear]]:
    """(module path, layer index, target, module) for every ``nn.Linear`` whose name ends with a target."""
    wanted = set(targets)
    found = []
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if leaf in wanted and isinstance(module, nn.Linear):
            match = _LAYER_INDEX.search(path)
            if match is None:
                raise ValueError(f"model.targets: module {path!r} is not inside a numbered layer")
            found.append((path, int(match.group(1)), leaf, module))
    return found


# Query/value projection names by architecture family: LoRA's usual targets (Hu et al.), in the order tried.
QUERY_VALUE = (("query", "value"), ("q_proj", "v_proj"), ("q", "v"), ("q_lin", "v_lin"))


def default_targets(model: nn.Module) -> list[str]:
    """The model's query and value projections (the first name pair present as linear layers)."""
    linear = {path.rsplit(".", 1)[-1] for path, m in model.named_modules() if isinstance(m, nn.Linear)}
    for pair in QUERY_VALUE:
        if set(pair) <= linear:
            return list(pair)
    raise ValueError(
        "model.targets: cannot tell this model's attention projections; set model.targets to the names of "
        "its linear modules to adapt, e.g. ['q_proj', 'v_proj']"
    )


class AdapterHost:
    """Wraps the target modules of one backbone and swaps client adapter states in and out."""

    def __init__(
        self,
        model: nn.Module,
        targets: list[str] | None,
        lora_alpha: float,
        dropout: float,
        head: Mapping[str, nn.Parameter] | None = None,
    ) -> None:
        self.model = model
        targets = targets or default_targets(model)
        self.targets = targets
        found = find_targets(model, targets)
        missing = set(targets) - {t for _, _, t, _ in found}
        if missing:
            raise ValueError(
                f"model.targets: no linear module named {sorted(missing)} in this model; "
                "use names of its attention projections (BERT: query, value; Llama: q_proj, v_proj)"
            )
        self.wrapped: dict[str, LoRALinear] = {}
        self.modules: list[AdaptedModule] = []
        for path, layer, target, linear in sorted(found, key=lambda f: (f[1], targets.index(f[2]))):
            wrapper = LoRALinear(linear, lora_alpha, dropout)
            parent_path, _, leaf = path.rpartition(".")
            setattr(model.get_submodule(parent_path), leaf, wrapper)
            key = f"layers.{layer}.{target}"
            self.wrapped[key] = wrapper
            self.modules.append(AdaptedModule(key, layer, target, linear.in_features, linear.out_features))
        self.n_layers = len({m.layer for m in self.modules})
        for p in model.parameters():
            p.requires_grad_(False)
        self.head = dict(head or {})  # name -> the model's own head parameter (trains in place)

    def initial_head(self) -> State:
        return {f"head.{n}": p.detach().clone() for n, p in self.head.items()}

    def load(
        self, state: Mapping[str, Tensor], trainable: Callable[[str], bool], mixer: Mixer
    ) -> dict[str, Tensor]:
        """Attach ``state`` to the model with forward rule ``mixer``; return the trainable tensors by name."""
        for wrapper in self.wrapped.values():
            wrapper.experts, wrapper.params, wrapper.mixer = {}, {}, mixer
        train: dict[str, Tensor] = {}
        attached: dict[str, Tensor] = {}
        for name in sorted(state):
            tensor = state[name]
            grad = trainable(name)
            if name.startswith("head."):
                param = self.head[name.removeprefix("head.")]
                with torch.no_grad():
                    param.copy_(tensor)
                param.requires_grad_(grad)
                if grad:
                    train[name] = param
                continue
            param = nn.Parameter(tensor.detach().clone(), requires_grad=grad)
            if grad:
                train[name] = param
            attached[name] = param
        modules, layer_params = split_state(attached)
        for key, module in modules.items():
            self.wrapped[key].experts, self.wrapped[key].params = module.experts, module.params
        for m in self.modules:
            self.wrapped[m.key].layer_params = layer_params.get(m.layer, {})
        return train

    def state(self) -> State:
        """The attached tensors, detached and cloned, under their state names."""
        out: State = {}
        for key, wrapper in self.wrapped.items():
            for expert, (a, b) in wrapper.experts.items():
                out[f"{key}.{expert}.A"] = a.detach().clone()
                out[f"{key}.{expert}.B"] = b.detach().clone()
            for name, p in wrapper.params.items():
                out[f"{key}.{name}"] = p.detach().clone()
        for m in self.modules:
            for name, p in self.wrapped[m.key].layer_params.items():
                out[f"layers.{m.layer}.mix.{name}"] = p.detach().clone()
        for name, p in self.head.items():
            out[f"head.{name}"] = p.detach().clone()
        return out


@dataclass
class ModuleState:
    """One adapted module's part of a client state: its experts and its own parameters (routers)."""

    experts: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)  # name -> (A, B)
    params: dict[str, Tensor] = field(default_factory=dict)


def split_state(state: Mapping[str, Tensor]) -> tuple[dict[str, ModuleState], dict[int, dict[str, Tensor]]]:
    """A client state (``head.*`` excluded) by module key (``layers.l.t``), and the per-layer mixing
    parameters (``layers.l.mix.*``) by layer: how the names above are read, in one place."""
    modules: dict[str, ModuleState] = {}
    layers: dict[int, dict[str, Tensor]] = {}
    halves: dict[tuple[str, str], dict[str, Tensor]] = {}  # (module key, expert) -> {"A": .., "B": ..}
    for name, tensor in state.items():
        if name.startswith("head."):
            continue
        _, layer, sub, rest = name.split(".", 3)
        if sub == "mix":
            layers.setdefault(int(layer), {})[rest] = tensor
        elif rest.endswith((".A", ".B")):
            expert, which = rest.rsplit(".", 1)
            halves.setdefault((f"layers.{layer}.{sub}", expert), {})[which] = tensor
        else:
            modules.setdefault(f"layers.{layer}.{sub}", ModuleState()).params[rest] = tensor
    for (key, expert), ab in halves.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"client state has {key}.{expert} without both A and B")
        modules.setdefault(key, ModuleState()).experts[expert] = (ab["A"], ab["B"])
    return modules, layers


def layer_of(name: str) -> int | None:
    """``layers.{l}.…`` -> ``l``; None for a tensor outside the layers (``head.*``)."""
    if not name.startswith("layers."):
        return None
    return int(name.split(".", 2)[1])


def init_lora(modules: Iterable[AdaptedModule], rank: int, expert: str, seed: int) -> State:
    """A fresh LoRA expert on every module: A ~ U(+-1/sqrt(d_in)) as PEFT's kaiming init, B = 0.

    The same seed gives every client the same A (SPEC: "the same seed on every client").
    """
    gen = torch.Generator().manual_seed(seed)
    out: State = {}
    for m in modules:
        bound = 1.0 / math.sqrt(m.d_in)
        out[f"{m.key}.{expert}.A"] = (torch.rand(rank, m.d_in, generator=gen) * 2 - 1) * bound
        out[f"{m.key}.{expert}.B"] = torch.zeros(m.d_out, rank)
    return out


def rename_expert(state: Mapping[str, Tensor], old: str, new: str) -> State:
    """``layers.l.t.{old}.A`` -> ``layers.l.t.{new}.A`` for every entry (others are dropped)."""
    out: State = {}
    for name, t in state.items():
        prefix, _, tail = name.rpartition(f".{old}.")
        if prefix and tail in ("A", "B"):
            out[f"{prefix}.{new}.{tail}"] = t
    return out
