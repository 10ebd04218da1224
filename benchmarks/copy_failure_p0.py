"""Reuse the NLU comparison's SST-2 cells as the failure sweep's p = 0 cells (the same runs: 36 cells less 9).

    .venv/bin/python benchmarks/copy_failure_p0.py   # then: fedtreelora bench benchmarks/failure_grid.toml

A cell is copied only if its stored config equals the one the failure grid builds, except for settings
the stored run predates (written before they existed), which must then hold their defaults: those runs
were checked to give the same numbers (docs/DESIGN.md, durable runs). Re-run it as NLU cells land.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fedtreelora.bench import cell_dir, load_grid
from fedtreelora.config import RunConfig
from fedtreelora.runtime.executors import one_thread

ROOT = Path(__file__).resolve().parents[1]


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def main() -> None:
    failure, defaults = load_grid(ROOT / "benchmarks" / "failure_grid.toml"), flat(RunConfig().to_dict())
    for variant, task, seed in failure.cells():
        if task != "p0":
            continue
        src = cell_dir(ROOT / "benchmarks" / "results" / "nlu", variant, "sst2", seed) / "results.json"
        dst = cell_dir(ROOT / "benchmarks" / "results" / "failure", variant, task, seed) / "results.json"
        if dst.exists() or not src.exists():
            print(f"{variant} seed {seed}: {'already there' if dst.exists() else 'not run yet'}")
            continue
        want = flat(one_thread(failure.cell_config(variant, task, seed)).to_dict())
        have = flat(json.loads(src.read_text())["config"])
        differ = [
            k
            for k in want
            if have.get(k, defaults.get(k)) != want[k] or (k not in have and k not in defaults)
        ]
        if differ:
            print(f"{variant} seed {seed}: not the same run ({', '.join(differ[:3])})")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        print(f"{variant} seed {seed}: copied")


if __name__ == "__main__":
    main()
