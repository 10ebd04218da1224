"""What crosses the network between a server and its clients: states as one flat buffer, the rest as JSON.

A client's upload and its payload travel as one byte buffer (every tensor's bytes back to back, each
padded to 8 bytes so that any dtype can be viewed in place) plus a spec: the JSON list of (name, dtype,
shape). Plans, assignments, statistics and scores travel as JSON. Neither side unpickles what the other
sent: a node must not be able to run code on the server, nor the server on a node.

No runtime is imported here; the Flower runtime puts these buffers and dicts into its records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .adapters import State
from .allocation import Assignment
from .methods import ClientPlan
from .tasks import Score
from .training import TrainStats

Spec = list[tuple[str, str, list[int]]]  # (name, dtype without "torch.", shape) per tensor, in buffer order
ALIGN = 8  # bytes; the widest dtype a state holds (float64) views in place at any multiple of it


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def pack_state(state: Mapping[str, Tensor]) -> tuple[Spec, bytes]:
    """``state`` as a spec and one buffer; ``unpack_state`` inverts it exactly (bit for bit)."""
    spec: Spec = []
    parts: list[bytes] = []
    for name, t in state.items():
        raw = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        spec.append((name, str(t.dtype).removeprefix("torch."), list(t.shape)))
        parts.append(raw + bytes(_padded(len(raw)) - len(raw)))
    return spec, b"".join(parts)


def unpack_state(spec: Spec, data: bytes | bytearray | memoryview) -> State:
    """The tensors of a packed state, as views into one copy of ``data``."""
    # frombuffer cannot take an empty buffer; bytearray: one writable copy the tensors may share
    buffer = (
        torch.frombuffer(bytearray(data), dtype=torch.uint8)
        if len(data)
        else torch.zeros(0, dtype=torch.uint8)
    )
    out: State = {}
    offset = 0
    for name, dtype_name, shape in spec:
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"packed state: tensor {name!r} has unknown dtype {dtype_name!r}")
        numel = 1
        for d in shape:
            numel *= d
        size = numel * dtype.itemsize
        if offset + size > len(buffer):
            raise ValueError(f"packed state: buffer too short for tensor {name!r} ({len(buffer)} bytes)")
        out[name] = buffer[offset : offset + size].view(dtype).view(shape)
        offset += _padded(size)
    if offset != len(buffer):
        raise ValueError(f"packed state: {len(buffer) - offset} bytes left over after the last tensor")
    return out


def _sorted(layers: frozenset[int] | None) -> list[int] | None:
    return None if layers is None else sorted(layers)


def _frozen(layers: list[int] | None) -> frozenset[int] | None:
    return None if layers is None else frozenset(layers)


def plan_to_json(plan: ClientPlan) -> dict[str, Any]:
    return {
        "phase": plan.phase,
        "train": list(plan.train),
        "upload": list(plan.upload),
        "keep": list(plan.keep),
        "then_train": list(plan.then_train),
        "layers": _sorted(plan.layers),
        "sent": _sorted(plan.sent),
    }


def plan_from_json(d: Mapping[str, Any]) -> ClientPlan:
    return ClientPlan(
        phase=d["phase"],
        train=tuple(d["train"]),
        upload=tuple(d["upload"]),
        keep=tuple(d["keep"]),
        then_train=tuple(d["then_train"]),
        layers=_frozen(d["layers"]),
        sent=_frozen(d["sent"]),
    )


def assignment_to_json(a: Assignment | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {"layers": None if a.layers is None else list(a.layers), "budget": a.budget,
            "fisher_batches": a.fisher_batches}  # fmt: skip


def assignment_from_json(d: Mapping[str, Any] | None) -> Assignment | None:
    if d is None:
        return None
    layers = None if d["layers"] is None else tuple(d["layers"])
    return Assignment(layers=layers, budget=d["budget"], fisher_batches=d["fisher_batches"])


def stats_to_json(s: TrainStats) -> dict[str, Any]:
    return {"loss": s.loss, "samples": s.samples, "steps": s.steps, "diverged": s.diverged}


def stats_from_json(d: Mapping[str, Any]) -> TrainStats:
    return TrainStats(float(d["loss"]), int(d["samples"]), int(d["steps"]), bool(d["diverged"]))


def score_to_json(s: Score) -> dict[str, Any]:
    return {"value": s.value, "samples": list(s.samples)}


def score_from_json(d: Mapping[str, Any]) -> Score:
    return Score(float(d["value"]), tuple(dict(x) for x in d["samples"]))
