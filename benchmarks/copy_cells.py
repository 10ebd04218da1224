"""Reuse finished cells of one sweep in another where they are the same run (same config, same numbers).

    .venv/bin/python benchmarks/copy_cells.py SRC_GRID SRC_OUT DST_GRID DST_OUT
    # the failure sweep's p = 0 cells are the NLU comparison's SST-2 cells (36 cells less 9):
    .venv/bin/python benchmarks/copy_cells.py benchmarks/nlu_grid.toml benchmarks/results/nlu \
        benchmarks/failure_grid.toml benchmarks/results/failure
    # the FLAN comparison's seed-0 cells at the tuned rates are the tuning's cells (36 cells less 8):
    .venv/bin/python benchmarks/copy_cells.py benchmarks/flan_lr_grid.toml benchmarks/results/flan_lr \
        benchmarks/flan_grid.toml benchmarks/results/flan

A destination cell is filled from a finished source cell whose stored config, read back as a config (settings
the stored run predates take their defaults: those runs were checked to give the same numbers, docs/DESIGN.md,
durable runs), equals the one the destination grid builds. Cells are matched by config, not by name, so the
two grids may name variants and tasks differently. Re-run it as source cells land; cells already in the
destination are left alone. A copy keeps the source's numbers and takes the destination's cell label.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedtreelora.bench import cell_dir, load_grid, save_cell
from fedtreelora.config import ConfigError, RunConfig, from_raw
from fedtreelora.methods import options_for
from fedtreelora.runtime.executors import one_thread


def stored_config(results: Path) -> RunConfig | None:
    """The config a finished cell ran with; None if today's validation refuses it (not a run we can reuse)."""
    try:
        return from_raw(json.loads(results.read_text())["config"], options_for())
    except ConfigError:
        return None


def main(src_grid: Path, src_out: Path, dst_grid: Path, dst_out: Path) -> None:
    src, dst = load_grid(src_grid), load_grid(dst_grid)
    # Every finished source cell once, with the config it ran with.
    stored = [
        (cell_dir(src_out, *cell), stored_config(path))
        for cell in src.cells()
        if (path := cell_dir(src_out, *cell) / "results.json").exists()
    ]
    copied = 0
    for cell in dst.cells():
        target = cell_dir(dst_out, *cell)
        if (target / "results.json").exists():
            continue
        want = one_thread(dst.cell_config(*cell))  # a bench cell runs on one thread
        match = next((folder for folder, have in stored if have == want), None)
        if match is None:
            continue
        # save_cell relabels the result with this grid's cell: the report groups cells by that label.
        save_cell(dst_out, cell, json.loads((match / "results.json").read_text()))
        print(f"{'/'.join(map(str, cell))}: copied from {match}")
        copied += 1
    print(f"{copied} cells copied into {dst_out}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: copy_cells.py SRC_GRID SRC_OUT DST_GRID DST_OUT")
    main(*map(Path, sys.argv[1:]))
