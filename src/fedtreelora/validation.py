"""Checks on every upload before it reaches aggregation: a broken or hostile client must not poison a round.

An upload may hold only tensors the method's plan uploads and the client could hold this round (what it
starts from: the method's initial client state plus what it was sent), each with the shape and dtype it
had there, finite, and with A and B of an expert together. Across the round, a tensor whose norm is more
than ``max_norm_ratio`` times the median of that tensor's norms over the round's uploads (when 3 or more
clients sent it) is rejected: LoRA tensors of honest clients differ by small factors (they start from
one shared A and a zero B, and train at one rate), while a scaled update or an exploding client is off by
orders of magnitude. The median, not the mean, so that one outlier cannot hide itself.

Each check returns a one-line reason naming the tensor, or None; the runtime logs it with the client.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping

import torch
from torch import Tensor


def check_upload(
    upload: Mapping[str, object], reference: Mapping[str, Tensor], uploaded: Callable[[str], bool]
) -> str | None:
    """Why ``upload`` is malformed, or None. ``reference``: the tensors the client could hold this round;
    ``uploaded(name)``: whether the method's plan uploads that tensor."""
    for name in upload:
        if name not in reference or not uploaded(name):
            return f"{name}: not a tensor this method uploads"
    for name, tensor in upload.items():
        ref = reference[name]
        if not isinstance(tensor, Tensor):
            return f"{name}: not a tensor ({type(tensor).__name__})"
        if tensor.shape != ref.shape:
            return f"{name}: shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}"
        if tensor.dtype != ref.dtype:
            return f"{name}: dtype {tensor.dtype}, expected {ref.dtype}"
        if not bool(torch.isfinite(tensor).all()):
            return f"{name}: holds NaN or Inf"
    for name in upload:
        if name.endswith((".A", ".B")):
            partner = name[:-1] + ("B" if name.endswith(".A") else "A")
            if partner in reference and uploaded(partner) and partner not in upload:
                return f"{name}: sent without {partner.rsplit('.', 1)[-1]} (an expert travels whole)"
    return None


def norm_outliers(uploads: Mapping[int, Mapping[str, Tensor]], max_ratio: float) -> dict[int, str]:
    """Client id -> reason, for clients with a tensor ``max_ratio`` times above the round's median norm."""
    norms: dict[str, dict[int, float]] = {}
    for cid, upload in uploads.items():
        for name, tensor in upload.items():
            norms.setdefault(name, {})[cid] = float(torch.linalg.vector_norm(tensor.float()))
    out: dict[int, str] = {}
    for name, by_client in norms.items():
        if len(by_client) < 3:
            continue
        median = statistics.median(by_client.values())
        if median <= 0.0:
            continue
        for cid, norm in by_client.items():
            if norm > max_ratio * median and cid not in out:
                out[cid] = f"{name}: norm {norm:.3g} is {norm / median:.0f}x the round's median {median:.3g}"
    return out
