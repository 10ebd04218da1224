"""Sweeps: cells run once, resume after interruption, and tables regenerate from the files alone."""

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedtreelora.bench import cell_dir, load_grid, run_cell, run_grid, seconds_left
from fedtreelora.cli import app
from fedtreelora.config import ConfigError
from fedtreelora.report import markdown_table, markers, paste_tables, purity, task_split_table, write_report

from .conftest import write_task


def grid_file(tmp_path: Path, model: Path, data: Path) -> Path:
    other = write_task(tmp_path / "other", 60, 40, pair=True)
    text = f"""
base = ["model.name='{model}'", "data.n_clients=3", "data.n_train=8", "data.n_test=4", "federation.rounds=2",
        "fedtreelora.warmup_rounds=1", "model.max_length=16"]
seeds = [0, 1]
[tasks]
toy = ["data.dir='{data}'"]
pairs = ["data.dir='{other}'"]
hetero = ["data.partition='task'", "data.tasks=['{data}', '{other}']", "data.n_clients=4"]

[[table]]
name = "main"
title = "Main"
tasks = ["toy", "pairs"]
over_majority = true
[table.variants]
fedit = ["method='fedit'"]
fedtreelora = ["method='fedtreelora'"]

[[table]]
name = "hetero"
title = "Hetero"
tasks = ["hetero"]
[table.variants]
fedtreelora = ["method='fedtreelora'"]
"""
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_sweep_runs_each_cell_once_and_resumes(tmp_path: Path, tiny_bert: Path, tiny_task: Path) -> None:
    path = grid_file(tmp_path, tiny_bert, tiny_task)
    grid = load_grid(path)
    assert len(grid.cells()) == 2 * 2 * 2 + 2  # shared variant "fedtreelora" runs once per (task, seed)
    seeds = [seed for _, _, seed in grid.cells()]
    assert seeds == sorted(seeds)  # seed by seed: a sweep cut short covers every table for its first seeds
    out = tmp_path / "sweep"
    calls: list[int] = []

    def counting_run(cfg, folder):  # type: ignore[no-untyped-def]
        calls.append(cfg.seed)
        return run_cell(cfg, folder)

    assert run_grid(grid, out, counting_run).ran == 10
    (out / "fedit" / "toy" / "seed1" / "results.json").unlink()  # as if interrupted
    dry = CliRunner().invoke(app, ["bench", str(path), "--out", str(out), "--jobs", "2", "--dry-run"])
    assert dry.exit_code == 0 and "1 of 10 cells left, about 0.0 h at --jobs 2" in dry.output, dry.output
    assert run_grid(grid, out, counting_run).ran == 1
    assert len(calls) == 11

    written = write_report(out)
    tables = (out / "tables.md").read_text()
    assert "### Main" in tables and "| fedit |" in tables and "### Hetero" in tables
    assert "### Main: minus the majority label" in tables and "### Hetero: minus" not in tables
    assert "| *majority label* |" in tables and "**" in tables  # reference row, best per column in bold
    assert "### Does the tree split by task?" in tables
    assert len((out / "cells.csv").read_text().strip().splitlines()) == 1 + 10
    assert any(p.name.startswith("tree_fedtreelora_hetero") for p in written)
    assert any(p.name.startswith("k_per_layer_fedtreelora") for p in written)


def test_parallel_cells_give_the_numbers_of_one_thread(
    tmp_path: Path, tiny_bert: Path, tiny_task: Path
) -> None:
    grid = load_grid(grid_file(tmp_path, tiny_bert, tiny_task))
    grid.base.append("train.threads=1")
    grid.seeds = [0]
    assert run_grid(grid, tmp_path / "one", run_cell).ran == 5
    assert run_grid(grid, tmp_path / "two", run_cell, jobs=2).ran == 5
    for variant, task, seed in grid.cells():
        one, two = (
            json.loads((cell_dir(tmp_path / d, variant, task, seed) / "results.json").read_text())
            for d in ("one", "two")
        )
        assert one["mean_accuracy"] == two["mean_accuracy"] and one["rounds"][-1] == {
            **two["rounds"][-1],
            "seconds": one["rounds"][-1]["seconds"],
        }


def test_a_cell_that_cannot_run_is_reported_and_the_sweep_goes_on(
    tmp_path: Path, tiny_bert: Path, tiny_task: Path
) -> None:
    grid = load_grid(grid_file(tmp_path, tiny_bert, tiny_task))
    grid.seeds = [0]
    seen: list[tuple[str, str]] = []

    def runner(cfg, folder):  # type: ignore[no-untyped-def]
        if cfg.method == "fedit" and "other" in cfg.data.dir:  # e.g. too few rows of a label for the skew
            raise ConfigError("data.partition=dirichlet: not enough examples")
        return {"seed": cfg.seed}

    outcome = run_grid(grid, tmp_path / "s", runner, lambda i, n, name, status: seen.append((name, status)))
    assert outcome.ran == 4 and list(outcome.failed) == ["fedit/pairs/seed0"]
    assert ("fedit/pairs/seed0", "failed: data.partition=dirichlet: not enough examples") in seen
    assert not (cell_dir(tmp_path / "s", "fedit", "pairs", 0) / "results.json").exists()
    assert (cell_dir(tmp_path / "s", "fedtreelora", "pairs", 0) / "results.json").exists()


def test_bad_grid_is_refused_before_anything_runs(tmp_path: Path, tiny_bert: Path, tiny_task: Path) -> None:
    path = grid_file(tmp_path, tiny_bert, tiny_task)
    path.write_text(path.read_text().replace("fedit = [\"method='fedit'\"]", 'fedit = ["train.lr=-1"]'))
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_grid(path)
    path.write_text(path.read_text().replace("over_majority = true", 'over_majority = "yes"'))
    with pytest.raises(ConfigError, match=r"table\[0\]\.over_majority"):
        load_grid(path)
    path.write_text(path.read_text().replace('over_majority = "yes"', 'over = "local"'))
    with pytest.raises(ConfigError, match=r"table\[0\]\.over: must name one of the table's variants"):
        load_grid(path)
    path.write_text(path.read_text().replace('over = "local"', 'over_task = "nope"'))
    with pytest.raises(ConfigError, match=r"table\[0\]\.over_task: must name one of the table's tasks"):
        load_grid(path)


def test_purity_is_the_share_of_clients_in_a_cluster_led_by_their_own_task() -> None:
    tasks = ["a", "a", "b", "b"]
    assert purity([0, 0, 0, 0], tasks) == 0.5  # one cluster: task a leads with 2 of 4
    assert purity([0, 0, 1, 1], tasks) == 1.0
    assert purity([0, 1, 1, 1], tasks) == 0.75  # cluster 1 = {a, b, b}: the a client is outvoted


def test_paste_tables_replaces_only_the_named_sweeps_region(tmp_path: Path) -> None:
    doc = tmp_path / "RESULTS.md"
    a, b = markers("glue"), markers("nlu")
    doc.write_text(f"intro\n{a[0]}\nold\n{a[1]}\nmiddle\n{b[0]}\nother\n{b[1]}\nreading\n")
    paste_tables("| new |\n", doc, "glue")
    paste_tables("| newer |\n", doc, "glue")  # idempotent: the markers stay
    expected = f"intro\n{a[0]}\n| newer |\n{a[1]}\nmiddle\n{b[0]}\nother\n{b[1]}\nreading\n"
    assert doc.read_text() == expected


def scored(seed: int, acc: float, majority: float = 0.5) -> dict[str, object]:
    """One finished cell as the report reads it: its seed, mean accuracy and majority-label level."""
    return {"seed": seed, "mean_accuracy": acc, "majority_baseline": majority}


def test_table_bolds_the_best_mean_and_leaves_missing_cells_plain() -> None:
    cells = {("a", "t1"): [scored(0, 0.6), scored(1, 0.8)], ("b", "t1"): [scored(0, 0.9)]}
    table = {"title": "T", "tasks": ["t1", "t2"], "variants": {"a": [], "b": []}}
    lines = markdown_table(table, cells).splitlines()
    assert lines[4] == "| a | 70.00 ± 14.14 (n=2) | – | – |"
    assert lines[5] == "| b | **90.00 ± 0.00 (n=1)** | – | – |"
    assert lines[6] == "| *majority label* | 50.00 (n=2) | – | – |"


def test_table_over_majority_subtracts_each_seeds_own_majority_level() -> None:
    # a: 0.6 - 0.5 = 0.1 and 0.8 - 0.6 = 0.2 -> mean 15, std sqrt(0.005) = 7.07 points
    cells = {("a", "t1"): [scored(0, 0.6, 0.5), scored(1, 0.8, 0.6)], ("b", "t1"): [scored(0, 0.4, 0.5)]}
    table = {"title": "T", "tasks": ["t1"], "variants": {"a": [], "b": []}}
    lines = markdown_table(table, cells, over_majority=True).splitlines()
    assert lines[0] == "### T: minus the majority label, paired per seed"
    assert lines[4] == "| a | **+15.00 ± 7.07 (n=2)** | +15.00 |"
    assert lines[5] == "| b | -10.00 ± 0.00 (n=1) | -10.00 |"
    assert len(lines) == 6  # no majority row: it would be 0 by construction


def test_table_over_a_variant_pairs_each_seed_with_that_variants_same_seed() -> None:
    # b - local: seed 0: 0.9 - 0.7 = +20, seed 1: 0.7 - 0.6 = +10 -> +15 ± 7.07; seed 2 has no local yet.
    cells = {
        ("local", "t1"): [scored(0, 0.7), scored(1, 0.6)],
        ("b", "t1"): [scored(0, 0.9), scored(1, 0.7), scored(2, 0.99)],
    }
    table = {"title": "T", "tasks": ["t1"], "variants": {"local": [], "b": []}}
    lines = markdown_table(table, cells, over="local").splitlines()
    assert lines[0] == "### T: minus local, paired per seed"
    assert lines[4] == "| local | +0.00 ± 0.00 (n=2) | +0.00 |"
    assert lines[5] == "| b | **+15.00 ± 7.07 (n=2)** | +15.00 |"
    assert len(lines) == 6
    # the reference is +0.00 by construction: never bold, even when every contender is below it
    worse = {**cells, ("b", "t1"): [scored(0, 0.5)]}
    lines = markdown_table(table, worse, over="local").splitlines()
    assert lines[4] == "| local | +0.00 ± 0.00 (n=2) | +0.00 |"
    assert lines[5] == "| b | **-20.00 ± 0.00 (n=1)** | -20.00 |"


def test_table_over_a_task_pairs_each_cell_with_its_variants_same_seed_on_that_task() -> None:
    # a at p1 - a at p0: seed 0: 0.7 - 0.8 = -10, seed 1: 0.8 - 0.8 = 0 -> -5 ± 7.07; seed 2 has no p0 yet.
    cells = {
        ("a", "p0"): [scored(0, 0.8), scored(1, 0.8)],
        ("a", "p1"): [scored(0, 0.7), scored(1, 0.8), scored(2, 0.1)],
        ("b", "p0"): [scored(0, 0.6)],
        ("b", "p1"): [scored(0, 0.6)],
    }
    table = {"title": "T", "tasks": ["p0", "p1"], "variants": {"a": [], "b": []}}
    lines = markdown_table(table, cells, over_task="p0").splitlines()
    assert lines[0] == "### T: minus p0, paired per seed"
    assert lines[4] == "| a | **+0.00 ± 0.00 (n=2)** | -5.00 ± 7.07 (n=2) | -2.50 |"
    assert lines[5] == "| b | **+0.00 ± 0.00 (n=1)** | **+0.00 ± 0.00 (n=1)** | +0.00 |"
    assert len(lines) == 6


def test_no_majority_row_when_variants_drew_different_partitions() -> None:
    def result(seed: int, majority: float) -> dict[str, object]:
        return {"seed": seed, "mean_accuracy": 0.7, "majority_baseline": majority}

    # Two variants with another skew: seed 0's majority level differs, so no single level exists.
    cells = {("a", "t1"): [result(0, 0.5)], ("b", "t1"): [result(0, 0.6)]}
    table = {"title": "T", "tasks": ["t1"], "variants": {"a": [], "b": []}}
    assert markdown_table(table, cells).splitlines()[-1] == "| *majority label* | – | – |"
    same = {("a", "t1"): [result(0, 0.5)], ("b", "t1"): [result(0, 0.5)]}
    assert markdown_table(table, same).splitlines()[-1] == "| *majority label* | 50.00 (n=1) | 50.00 |"


def test_a_generation_table_has_a_column_per_group_and_no_majority_row() -> None:
    def result(seed: int, groups: dict[str, float]) -> dict[str, object]:
        mean = sum(groups.values()) / len(groups)
        return {
            "seed": seed,
            "metric": "rouge1",
            "mean_score": mean,
            "groups": groups,
            "majority_baseline": None,
        }

    cells = {
        ("zeroshot", "flan"): [
            result(0, {"edit": 0.2, "senti": 0.4}),
            result(1, {"edit": 0.4, "senti": 0.4}),
        ],
        ("fedit", "flan"): [result(0, {"edit": 0.5, "senti": 0.9}), result(1, {"edit": 0.7, "senti": 0.7})],
    }
    table = {"title": "T", "tasks": ["flan"], "variants": {"zeroshot": [], "fedit": []}, "by_group": True}
    lines = markdown_table(table, cells).splitlines()
    assert lines[2] == "| variant | edit | senti | avg |"
    assert lines[4] == "| zeroshot | 30.00 ± 14.14 (n=2) | 40.00 ± 0.00 (n=2) | 35.00 |"
    assert lines[5] == "| fedit | **60.00 ± 14.14 (n=2)** | **80.00 ± 14.14 (n=2)** | 70.00 |"
    assert len(lines) == 6  # no majority-label row for generation
    # fedit - zeroshot per seed: edit +30, +30; senti +50, +30
    paired = markdown_table(table, cells, over="zeroshot").splitlines()
    assert paired[5] == "| fedit | **+30.00 ± 0.00 (n=2)** | **+40.00 ± 14.14 (n=2)** | +35.00 |"
    # a by-group table none of whose cells has finished yet is left out, not a crash (its groups are unknown)
    assert markdown_table({**table, "variants": {"router": []}}, cells) == ""


def test_task_split_table_reports_group_purity_where_tasks_come_in_groups() -> None:
    # Four clients: tasks a, b in group g1 and c, d in group g2. The tree joins (0,1), (2,3), then all.
    z = [[0, 1, 1.0, 2], [2, 3, 1.0, 2], [4, 5, 2.0, 4]]
    clients = [
        {"id": i, "task": t, "group": g}
        for i, (t, g) in enumerate([("a", "g1"), ("b", "g1"), ("c", "g2"), ("d", "g2")])
    ]
    topology = {
        "linkage": z,
        "k_per_layer": [1, 2, 4],
        "partitions": [[0, 0, 0, 0], [0, 0, 2, 2], [0, 1, 2, 3]],
    }
    cells = {("fedtreelora", "flan"): [{"seed": 0, "topology": topology, "clients": clients}]}
    lines = task_split_table(cells).splitlines()
    assert lines[4].endswith("| task-pure at K | group purity per layer | group-pure at K |")
    # layer 1 (K = 2) keeps each group's two tasks together: group purity 1, task purity 0.5
    assert lines[-1] == "| fedtreelora | flan | 0 | 1 2 4 | 0.25 0.50 1.00 | 4 | 0.50 1.00 1.00 | 2 |"


def test_layer_spans_in_plot_labels() -> None:
    from fedtreelora.plots import spans

    assert spans([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert spans(list(range(30))) == "0-29"


def test_generation_plots_draw_a_single_evaluation_as_a_level(tmp_path: Path) -> None:
    from fedtreelora.plots import leaf_labels, write_plots

    def rows(scores: list[float | None]) -> list[dict[str, object]]:
        return [
            {"round": i, "phase": "warmup" if i == 0 else "federated", "mean_score": s}
            for i, s in enumerate(scores)
        ]

    clients = [
        {"id": i, "task": t, "group": g, "label_counts": [4]}
        for i, (t, g) in enumerate([("a", "x"), ("b", "y")])
    ]
    run_ = {"method": "fedtreelora", "metric": "rouge1", "rounds": rows([0.3, 0.5]), "clients": clients}
    run_ |= {"majority_baseline": None, "topology": None, "config": {}}
    zero = {"method": "zeroshot", "metric": "rouge1", "rounds": rows([0.2]), "majority_baseline": None}
    written = write_plots(run_, tmp_path, {"zeroshot": zero})
    assert written == [tmp_path / "rouge1.png"] and written[0].stat().st_size > 1000
    assert leaf_labels(clients) == ["c0\na\nx", "c1\nb\ny"]  # tasks differ: task and group name a leaf


def test_a_killed_cell_resumes_inside_from_its_checkpoint(
    tmp_path: Path, tiny_bert: Path, tiny_task: Path
) -> None:
    """A cell cut off after its first round (its checkpoint says round 1 of 2) continues from there, ends
    with the numbers of a cell that ran whole, and leaves no checkpoint behind."""
    from fedtreelora.runtime.checkpoint import CHECKPOINT
    from fedtreelora.runtime.embedded import run

    grid = load_grid(grid_file(tmp_path, tiny_bert, tiny_task))
    grid.seeds = [0]
    cell = ("fedit", "toy", 0)
    cut = tmp_path / "cut"
    cfg = grid.cell_config(*cell)
    half = run(dataclasses.replace(cfg, federation=dataclasses.replace(cfg.federation, rounds=1)),
               out=cell_dir(cut, *cell))  # fmt: skip
    assert (cell_dir(cut, *cell) / CHECKPOINT).exists() and len(half["rounds"]) == 1
    calls: list[int] = []

    def counting(cfg, folder):  # type: ignore[no-untyped-def]
        calls.append(cfg.seed)
        return run_cell(cfg, folder)

    outcome = run_grid(grid, cut, counting)
    assert not outcome.failed, outcome.failed
    run_grid(grid, tmp_path / "whole", run_cell)
    a, b = (json.loads((cell_dir(d, *cell) / "results.json").read_text()) for d in (cut, tmp_path / "whole"))
    assert [r["train_loss"] for r in a["rounds"]] == [r["train_loss"] for r in b["rounds"]]
    assert a["mean_accuracy"] == b["mean_accuracy"] and a["communication"] == b["communication"]
    assert not (cell_dir(cut, *cell) / CHECKPOINT).exists()


def test_allocation_sweeps_report_budget_groups_and_geometry(
    tmp_path: Path, tiny_bert: Path, tiny_task: Path
) -> None:
    path = tmp_path / "hello.toml"
    path.write_text(f"""
base = ["model.name='{tiny_bert}'", "data.n_clients=3", "data.n_train=8", "data.n_test=4",
        "federation.rounds=2", "model.max_length=16"]
seeds = [0]
[tasks]
toy = ["data.dir='{tiny_task}'"]
[[table]]
name = "hello"
title = "Hello"
tasks = ["toy"]
over = "full"
[table.variants]
full = ["method='fedit'"]
rgd = ["method='fedit'", "allocation.strategy='rgd'", "allocation.pattern='bottleneck'"]
""")
    out = tmp_path / "s"
    assert run_grid(load_grid(path), out, run_cell).ran == 2
    written = write_report(out)
    tables = (out / "tables.md").read_text()
    assert "### Hello: by the clients' layer budget, minus full (same clients)" in tables
    assert "| 50 % layers | 75 % layers | 100 % layers |" in tables
    full_row = next(line for line in tables.splitlines() if line.startswith("| full | –"))
    assert "+0.00 ± 0.00" in full_row  # the reference against itself: its own clients, nothing else
    assert any(p.name == "allocation_rgd_toy.png" for p in written)


def test_time_left_is_guessed_from_the_nearest_finished_cells() -> None:
    done = {
        ("a", "sst2", 0): 100.0,
        ("a", "qnli", 0): 300.0,
        ("b", "sst2", 0): 200.0,
        ("b", "sst2", 1): 900.0,
    }
    assert seconds_left({}, [("a", "sst2", 1)], 2) is None  # no evidence yet
    assert seconds_left(done, [], 2) == 0.0
    # same variant and task: 100; same task only: median(100, 200, 900) = 200 (a paused cell's 900 does
    # not count for more); same variant only: median(100, 300) = 200; nothing alike: median of all, 250
    todo = [("a", "sst2", 1), ("c", "sst2", 0), ("a", "mnli", 0), ("c", "mnli", 0)]
    assert seconds_left(done, todo, 1) == 100 + 200 + 200 + 250
    assert seconds_left(done, todo, 2) == (100 + 200 + 200 + 250) / 2
    assert seconds_left(done, todo[:1], 2) == 100  # one cell left: a second job does not halve it
