"""Sweeps: methods x tasks x seeds from one grid file, resumable, one results.json per cell.

A grid file (TOML) names a base config, the tasks (each a list of ``--set`` overrides), the seeds, and
tables; a table lists variants (each a list of overrides) and the tasks it runs on. A cell is
(variant, task, seed) and lives in ``OUT/<variant>/<task>/seed<k>/results.json``; a cell whose file
exists is skipped, so an interrupted sweep resumes where it stopped. Cells run seed by seed, table by
table, in file order, so a partial sweep already holds every table for its first seeds. Variants that
appear in several tables with the same overrides run once.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import statistics
import tomllib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, check, load_config
from .methods import options_for
from .runtime.checkpoint import CHECKPOINT
from .runtime.executors import die_with_parent, one_thread

Cell = tuple[str, str, int]  # (variant, task, seed)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    variants: dict[str, list[str]]  # variant name -> overrides
    tasks: list[str]
    over_majority: bool = False  # report also shows it minus the majority-label predictor, paired per seed
    over: str = ""  # a variant (e.g. "local"): report also shows every variant minus it, paired per seed
    over_task: str = ""  # a task (e.g. "p0"): report also shows every cell minus its variant on that task
    by_group: bool = False  # one column per task group of a task's clients (FLAN), not one per task


@dataclass
class Grid:
    config: Path | None
    base: list[str]
    seeds: list[int]
    tasks: dict[str, list[str]]  # task name -> overrides
    tables: list[Table] = field(default_factory=list)

    def variants(self) -> dict[str, list[str]]:
        """Every variant of every table, checking that a name means the same overrides everywhere."""
        out: dict[str, list[str]] = {}
        for table in self.tables:
            for name, sets in table.variants.items():
                check(
                    out.get(name, sets) == sets,
                    f"table {table.name}",
                    f"variant {name!r} differs from its twin",
                )
                out[name] = sets
        return out

    def cells(self) -> list[Cell]:
        """Every (variant, task, seed) once, seed by seed: a sweep cut short still covers every table."""
        seen: dict[Cell, None] = {}
        for seed in self.seeds:
            for table in self.tables:
                for task in table.tasks:
                    for variant in table.variants:
                        seen[(variant, task, seed)] = None
        return list(seen)

    def cell_config(self, variant: str, task: str, seed: int) -> RunConfig:
        sets = [*self.base, *self.tasks[task], *self.variants()[variant], f"seed={seed}"]
        return load_config(self.config, sets, options_for())


def load_grid(path: Path) -> Grid:
    check(path.is_file(), "GRID", f"no such file: {path}")
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"GRID: {path} is not valid TOML: {err}") from err
    config = raw.get("config")
    grid = Grid(
        config=(path.parent / config) if config else None,
        base=list(raw.get("base", [])),
        seeds=list(raw.get("seeds", [0])),
        tasks={name: list(sets) for name, sets in raw.get("tasks", {}).items()},
    )
    check(bool(grid.tasks), "tasks", "the grid needs a [tasks] table: name = [overrides]")
    for i, t in enumerate(raw.get("table", [])):
        tasks = list(t.get("tasks", list(grid.tasks)))
        for task in tasks:
            check(
                task in grid.tasks,
                f"table[{i}].tasks",
                f"unknown task {task!r}; known: {', '.join(grid.tasks)}",
            )
        over_majority = t.get("over_majority", False)
        check(isinstance(over_majority, bool), f"table[{i}].over_majority", "write true or false")
        variants = {k: list(v) for k, v in t["variants"].items()}
        by_group = t.get("by_group", False)
        check(isinstance(by_group, bool), f"table[{i}].by_group", "write true or false")
        over = t.get("over", "")
        check(
            over == "" or over in variants,
            f"table[{i}].over",
            f"must name one of the table's variants ({', '.join(variants)}), got {over!r}",
        )
        over_task = t.get("over_task", "")
        check(
            over_task == "" or over_task in tasks,
            f"table[{i}].over_task",
            f"must name one of the table's tasks ({', '.join(tasks)}), got {over_task!r}",
        )
        grid.tables.append(
            Table(
                name=t["name"],
                title=t.get("title", t["name"]),
                variants=variants,
                tasks=tasks,
                over_majority=over_majority,
                over=over,
                over_task=over_task,
                by_group=by_group,
            )
        )
    check(bool(grid.tables), "table", "the grid needs at least one [[table]]")
    for cell in grid.cells():  # validate every cell's config before running anything
        grid.cell_config(*cell)
    return grid


def cell_dir(out: Path, variant: str, task: str, seed: int) -> Path:
    return out / variant / task / f"seed{seed}"


def cell_name(cell: Cell) -> str:
    """``variant/task/seed<k>``: how progress lines and failure reports name a cell."""
    return "{}/{}/seed{}".format(*cell)


@dataclass
class SweepRun:
    ran: int = 0  # cells that finished in this call
    failed: dict[str, str] = field(default_factory=dict)  # cell name -> the one-line reason


def run_grid(
    grid: Grid,
    out: Path,
    runner: Callable[[RunConfig, Path], dict[str, Any]],
    on_cell: Callable[[int, int, str, str], None] | None = None,
    jobs: int = 1,
) -> SweepRun:
    """Run every unfinished cell. ``on_cell(i, total, name, status)`` reports each cell as "skipped",
    "started" (one job only), "finished" or "failed: <reason>".

    A cell whose settings turn out impossible only once its data is drawn (a ``ConfigError``, e.g. too few
    rows of a label for the skew asked) is recorded as failed and the sweep goes on: hours of other cells
    must not be lost to one of them. ``jobs > 1`` runs that many cells at once, each as one thread in one
    process (``runner`` must then be picklable): on a small machine this beats a worker pool inside each
    cell, whose start-up and transfers are paid per cell.
    """
    cells = grid.cells()
    # Written first, so that `fedtreelora report` can tabulate a sweep that is still running or was cut off.
    out.mkdir(parents=True, exist_ok=True)
    tables = [t.__dict__ for t in grid.tables]
    (out / "grid.json").write_text(json.dumps({"seeds": grid.seeds, "tables": tables}, indent=1))
    position = {cell: i for i, cell in enumerate(cells, start=1)}
    outcome = SweepRun()

    def report(cell: Cell, status: str) -> None:
        if on_cell is not None:
            on_cell(position[cell], len(cells), cell_name(cell), status)

    def finish(cell: Cell, result: Callable[[], dict[str, Any]]) -> None:
        try:
            save_cell(out, cell, result())
        except ConfigError as err:
            outcome.failed[cell_name(cell)] = str(err)
            report(cell, f"failed: {err}")
            return
        (cell_dir(out, *cell) / CHECKPOINT).unlink(missing_ok=True)  # a finished cell needs only its results
        outcome.ran += 1
        report(cell, "finished")

    todo = []
    for cell in cells:
        if (cell_dir(out, *cell) / "results.json").exists():
            report(cell, "skipped")
        else:
            todo.append(cell)
    if jobs <= 1:
        for cell in todo:
            report(cell, "started")
            finish(cell, functools.partial(runner, grid.cell_config(*cell), cell_dir(out, *cell)))
        return outcome
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=die_with_parent) as pool:
        # Submitted in order; the pool starts them as its processes free up.
        running = {
            pool.submit(runner, one_thread(grid.cell_config(*cell)), cell_dir(out, *cell)): cell
            for cell in todo
        }
        for future in as_completed(running):
            finish(running[future], future.result)
    return outcome


def finished_seconds(out: Path, cells: list[Cell]) -> dict[Cell, float]:
    """Each finished cell's wall time (results.json's timing), the evidence for ``seconds_left``."""
    done = {}
    for cell in cells:
        path = cell_dir(out, *cell) / "results.json"
        if path.is_file():
            try:
                done[cell] = float(json.loads(path.read_text())["timing"]["total_seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # an older or foreign file: no evidence, not an error
    return done


def seconds_left(done: dict[Cell, float], todo: list[Cell], jobs: int) -> float | None:
    """Wall time the ``todo`` cells will take, guessed from finished ones: a cell costs the median time of
    the finished cells of its variant and task (other seeds), else of its task (the data sets the length
    of the rows), else of its variant, else of all. None before any cell has finished. Cells run ``jobs`` at
    a time, and the measured times already include sharing the cores with the other jobs."""
    if not done:
        return None
    if not todo:
        return 0.0
    total = 0.0
    for cell in todo:
        for fields in ((0, 1), (1,), (0,), ()):  # (variant, task), task, variant, any cell
            times = [t for c, t in done.items() if all(c[f] == cell[f] for f in fields)]
            if times:
                total += statistics.median(times)  # a median: a cell paused or shared with other work
                break  # (a test run, a cut-off session) must not inflate the guess
    return total / max(1, min(jobs, len(todo)))


def run_cell(cfg: RunConfig, folder: Path) -> dict[str, Any]:
    """The default runner: the embedded runtime, checkpointing into the cell's folder every round, so that a
    killed sweep resumes inside its unfinished cells (with the numbers an uninterrupted cell gets)."""
    from .runtime.embedded import run

    return run(cfg, out=folder, resume=True)


def save_cell(out: Path, cell: Cell, result: dict[str, Any]) -> None:
    variant, task, seed = cell
    result["cell"] = {"variant": variant, "task": task, "seed": seed}
    folder = cell_dir(out, *cell)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.rename(folder / "results.json")  # a cell is finished only once its file is whole
