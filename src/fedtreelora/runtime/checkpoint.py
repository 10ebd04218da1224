"""Checkpoints: everything a run needs to continue after a crash with exactly the numbers it would have had.

After every round the run folder gets ``checkpoint.pt``: the method's server state (experts, tree,
routers: the ``Method`` object itself), every client's kept state and unsent layers (and the round each
kept state comes from: a deployed runtime's nodes keep the states themselves), the allocator (its Fisher
scores), the results so far and the global RNG states. Every random draw of a run is seeded from
(seed, round, client), so those states are kept for completeness, not because a round depends on them.
The file is written to a temporary name, synced, and renamed over the previous one: a kill at any instant
leaves the last complete checkpoint. Only the latest is kept; it stays after the run ends, so that
``fedtreelora export`` can read the final client states.

The file is a pickle (``torch.save``): load only checkpoints you wrote.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, experiment_changes, from_raw
from ..federation import Federation
from ..tasks import Score

CHECKPOINT = "checkpoint.pt"
FORMAT = 1


@dataclass
class Progress:
    """What the round loop has accumulated: the rounds done and everything results.json is built from."""

    next_round: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[int, Score] = field(default_factory=dict)  # the latest evaluation
    traffic: dict[str, int] = field(default_factory=lambda: {"upload_bytes": 0, "download_bytes": 0})
    train_seconds: float = 0.0
    agg_seconds: list[float] = field(default_factory=list)
    round_numel: int = 0  # numbers down + up in the latest round that aggregated
    elapsed: float = 0.0  # wall seconds spent on this run before the latest (re)start


def save(folder: Path, fed: Federation, progress: Progress) -> Path:
    """Write the checkpoint atomically; returns its path."""
    state = {
        "format": FORMAT,
        "config": fed.cfg.to_dict(),
        "method": fed.method,
        "kept": fed.kept,
        "unsent": fed.unsent,
        "kept_round": fed.kept_round,
        "allocator": fed.allocator,
        "progress": progress,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    path, tmp = folder / CHECKPOINT, folder / f"{CHECKPOINT}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half of one
    return path


def load(folder: Path) -> dict[str, Any] | None:
    """The folder's checkpoint, or None if it has none yet."""
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, weights_only=False)  # our own pickle (see module docstring)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r}, this version reads {FORMAT}")
    return state


def restore(fed: Federation, state: dict[str, Any]) -> Progress:
    """Put a checkpoint's state into a freshly prepared federation; returns the progress to continue from.

    Refused (ConfigError) when the checkpoint belongs to another experiment than ``fed.cfg``.
    """
    from ..methods import options_for

    changed = experiment_changes(from_raw(state["config"], options_for()), fed.cfg)
    if changed:
        raise ConfigError(
            f"checkpoint: written by a run with other settings ({', '.join(changed[:3])}); "
            f"delete {CHECKPOINT} to start this one afresh"
        )
    if state["progress"].next_round > fed.cfg.federation.rounds:
        raise ConfigError("federation.rounds: lower than the rounds the checkpoint already ran")
    fed.method = state["method"]
    fed.method.rounds = fed.cfg.federation.rounds  # a resumed run may have been extended
    fed.kept, fed.unsent, fed.allocator = state["kept"], state["unsent"], state["allocator"]
    fed.kept_round = state.get("kept_round", fed.kept_round)  # absent before the Flower runtime: unused then
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    progress: Progress = state["progress"]
    return progress
