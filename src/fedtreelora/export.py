"""Export a client's personalised model from a run folder as a standard PEFT LoRA adapter.

The run's final checkpoint holds every client's kept state and the method's server state, so the client's
personalised adapter state is ``method.client_state(kept, method.payload(client))``, the state it is scored
with. On each adapted module the method's mixer says which experts enter the output with which fixed
weight (``Mixer.export``); a weighted sum of LoRA experts is exactly one LoRA whose A stacks the experts' A
and whose B stacks their B times weight times scale (``lora_alpha / r_e``). FedTreeLoRA's cluster expert
plus sigmoid(alpha) times the external expert is thus one LoRA of rank 2r. Ranks differ between modules
(a layer without an external expert has rank r), so every module is padded with zero rows to the largest:
zeros add nothing. PEFT's scaling ``lora_alpha / r`` is set to 1 (``lora_alpha = r``) since the scales are
folded into B. The classification head (created by the run, or trained by the client) is saved with the
adapter (``modules_to_save``), so ``PeftModel.from_pretrained`` on the untouched base model reproduces the
client's logits with no fedtreelora code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch import Tensor

from .adapters import ModuleState, State, default_targets, find_targets, split_state
from .config import ConfigError, RunConfig, from_raw
from .data import TaskData
from .federation import load_clients
from .methods import Method, options_for
from .mixers import NotExportable
from .runtime import checkpoint
from .runtime.node import local_node_states
from .tasks import Task


class ExportError(ValueError):
    """Why a client's model cannot be exported (one line)."""


def merged_lora(
    method: Method, module: ModuleState, layer: Mapping[str, Tensor], lora_alpha: float
) -> tuple[Tensor, Tensor]:
    """One module's experts as one LoRA: A (R, d_in), B (d_out, R) with weights and scales in B.
    ``layer``: the module's layer's mixing parameters (FedTreeLoRA's alphas)."""
    try:
        weighted = method.mixer.export(sorted(module.experts), module.params, layer)
    except NotExportable as err:
        raise ExportError(f"{type(method).__name__} cannot be exported as one LoRA: {err}") from err
    a_parts, b_parts = [], []
    for expert, weight in weighted:
        a, b = module.experts[expert]  # (r, d_in), (d_out, r)
        scale = lora_alpha / a.shape[0]
        a_parts.append(a)
        b_parts.append(b * (weight * scale))
    return torch.cat(a_parts, 0), torch.cat(b_parts, 1)


@dataclass(frozen=True)
class Run:
    """A run folder opened once (its checkpoint and its data), to export any of its clients."""

    cfg: RunConfig
    method: Method
    kept: dict[int, State]
    kind: type[Task]
    tasks: list[TaskData]


def open_run(folder: Path) -> Run:
    state = checkpoint.load(folder)
    if state is None:
        raise ExportError(
            f"{folder}: no {checkpoint.CHECKPOINT}; export reads a run folder written by fedtreelora run"
        )
    cfg = from_raw(state["config"], options_for())
    try:
        kind, tasks, _ = load_clients(cfg)
    except ConfigError as err:
        raise ExportError(f"the run's data is needed to rebuild its model: {err}") from err
    kept = state["kept"]
    deployed = local_node_states(folder, state.get("kept_round", {}))
    if deployed is not None:  # a Flower run: the nodes kept the states, the checkpoint only their rounds
        kept = deployed
    return Run(cfg, state["method"], kept, kind, tasks)


def export_client(folder: Path, client_id: int, out: Path) -> Path:
    """Write client ``client_id``'s personalised adapter from run folder ``folder`` into ``out``."""
    return export(open_run(folder), client_id, out)


def export(run: Run, client_id: int, out: Path) -> Path:
    """Write one client's personalised adapter into ``out`` (the backbone is loaded afresh: PEFT wraps it)."""
    cfg, method, kept, kind = run.cfg, run.method, run.kept, run.kind
    if client_id not in kept:
        raise ExportError(
            f"--client {client_id}: the run has clients 0..{cfg.data.n_clients - 1}"
            + (", and this one's state is not in this folder (a deployed run's nodes keep them)"
               if 0 <= client_id < cfg.data.n_clients else "")
        )  # fmt: skip
    personal = method.client_state(kept[client_id], method.payload(client_id))
    loaded = kind.load(cfg, run.tasks)
    model = loaded.model
    targets = cfg.model.targets or default_targets(model)
    modules = find_targets(model, targets)
    by_module, by_layer = split_state(personal)
    merged = {}
    for path, layer, target, _ in modules:
        module = by_module.get(f"layers.{layer}.{target}")
        if module is not None and module.experts:
            merged[path] = merged_lora(method, module, by_layer.get(layer, {}), cfg.model.lora_alpha)
    if not merged:
        raise ExportError(
            f"{cfg.method}: the client holds no LoRA (nothing was trained), so there is no adapter to export"
        )
    rank = max(a.shape[0] for a, _ in merged.values())
    with torch.no_grad():
        for name, param in loaded.head.items():  # the client's trained head, if it trained one
            if f"head.{name}" in personal:
                param.copy_(personal[f"head.{name}"])
    head_modules = sorted({name.rsplit(".", 1)[0] for name in loaded.head})
    config = LoraConfig(
        r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets, task_type=kind.peft_task_type,
        modules_to_save=head_modules or None,
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    root: Any = peft_model.base_model.model  # PEFT's LoRA layers are typed loosely
    with torch.no_grad():
        for path, _, _, _ in modules:
            lora_a, lora_b = (
                root.get_submodule(path).lora_A["default"],
                root.get_submodule(path).lora_B["default"],
            )
            lora_a.weight.zero_()  # zero rows and columns: padding to the largest rank adds nothing
            lora_b.weight.zero_()
            if path in merged:
                a, b = merged[path]
                lora_a.weight[: a.shape[0]].copy_(a)
                lora_b.weight[:, : b.shape[1]].copy_(b)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    return out
