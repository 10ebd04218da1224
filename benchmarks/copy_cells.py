"""Reuse finished cells of one sweep in another where they are the same run (same config, same numbers).

    .venv/bin/python benchmarks/copy_cells.py SRC_GRID SRC_OUT DST_GRID DST_OUT
    # the failure sweep's p = 0 cells are the NLU comparison's SST-2 cells (36 cells less 9):
    .venv/bin/python benchmarks/copy_cells.py benchmarks/nlu_grid.toml benchmarks/results/nlu \
        benchmarks/failure_grid.toml benchmarks/results/failure
    # the FLAN comparison's seed-0 cells at the tuned rates are the tuning's cells (36 cells less 8):
    .venv/bin/python benchmarks/copy_cells.py benchmarks/flan_lr_grid.toml benchmarks/results/flan_lr \
        benchmarks/flan_grid.toml benchmarks/results/flan

A destination cell is filled from a finished source cell whose stored config equals the one the destination
grid builds, except for settings the stored run predates (written before they existed), which must then
hold their defaults: those runs were checked to give the same numbers (docs/DESIGN.md, durable runs).
Cells are matched by config, not by name, so the two grids may name variants and tasks differently.
Re-run it as source cells land; cells already in the destination are left alone.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from fedtreelora.bench import cell_dir, load_grid
from fedtreelora.config import RunConfig
from fedtreelora.runtime.executors import one_thread


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def same_run(have: dict[str, Any], want: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """``have`` (a stored run's flat config) is ``want`` once settings it predates take their defaults."""
    return all(k in have or k in defaults for k in want) and all(
        have.get(k, defaults.get(k)) == v for k, v in want.items()
    )


def main(src_grid: Path, src_out: Path, dst_grid: Path, dst_out: Path) -> None:
    src, dst, defaults = load_grid(src_grid), load_grid(dst_grid), flat(RunConfig().to_dict())
    # Every finished source cell once, with its stored config.
    stored = [
        (cell_dir(src_out, *cell), flat(json.loads(path.read_text())["config"]))
        for cell in src.cells()
        if (path := cell_dir(src_out, *cell) / "results.json").exists()
    ]
    copied = 0
    for cell in dst.cells():
        target = cell_dir(dst_out, *cell)
        if (target / "results.json").exists():
            continue
        want = flat(one_thread(dst.cell_config(*cell)).to_dict())
        match = next((folder for folder, have in stored if same_run(have, want, defaults)), None)
        if match is None:
            continue
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(match / "results.json", target / "results.json")
        print(f"{'/'.join(map(str, cell))}: copied from {match}")
        copied += 1
    print(f"{copied} cells copied into {dst_out}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: copy_cells.py SRC_GRID SRC_OUT DST_GRID DST_OUT")
    main(*map(Path, sys.argv[1:]))
