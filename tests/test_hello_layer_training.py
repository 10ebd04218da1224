"""Tests of benchmarks/hello_layer_training.py: layer training counts, their rank correlation with losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .benchmark_scripts import load_benchmark

layer_training = load_benchmark("hello_layer_training")


def test_layer_counts_sum_client_rounds_per_layer() -> None:
    result = {
        "clients": [{"id": 0, "budget": 1.0}, {"id": 1, "budget": 0.5}],
        "rounds": [
            {"trained_layers": {"0": [0, 1, 2, 3], "1": [2, 3]}},
            {"trained_layers": {"0": [0, 1], "1": [3]}},
            {},  # a round row without allocation records counts nothing
        ],
    }
    assert layer_training.layer_counts(result) == [2, 2, 2, 3]


def test_correlations_by_hand() -> None:
    # three cells, two layers; the deep half is layer 1
    counts = [[10, 0], [5, 5], [0, 10]]
    losses = [-9.0, -4.0, -1.0]  # training layer 1 more loses less
    assert layer_training.correlations(losses, counts) == pytest.approx([-1.0, 1.0, 1.0])
    # a layer every cell trains equally often has no rank order
    rhos = layer_training.correlations(losses, [[10, 0], [10, 5], [10, 10]])
    assert rhos[0] is None and rhos[1] == pytest.approx(1.0)
    # every loss tied (a saturated setting): nothing to order
    assert layer_training.correlations([0.0, 0.0, 0.0], counts) == [None, None, None]


def write_cell(out: Path, variant: str, seed: int, score: float, layers: dict[str, list[int]]) -> None:
    cell = out / variant / "t" / f"seed{seed}"
    cell.mkdir(parents=True)
    clients = [{"id": int(c)} for c in layers]
    result = {"mean_score": score, "clients": clients, "rounds": [{"trained_layers": layers}]}
    (cell / "results.json").write_text(json.dumps(result))


def test_settings_pair_budgeted_cells_with_their_full_budget(tmp_path: Path) -> None:
    every = {"0": [0, 1], "1": [0, 1]}
    write_cell(tmp_path, "m-full", 0, 0.80, every)
    write_cell(tmp_path, "m-gd-tri", 0, 0.75, {"0": [0], "1": [0, 1]})
    write_cell(tmp_path, "m-gd-inv", 0, 0.79, {"0": [1], "1": [0, 1]})
    write_cell(tmp_path, "m-gd-tri", 1, 0.50, {"0": [0], "1": [0]})  # no full budget at seed 1: left out
    settings = layer_training.read_settings(tmp_path)
    assert list(settings) == [("m", "t", "seed0")]
    [(inv, inv_loss, inv_counts), (tri, tri_loss, tri_counts)] = settings[("m", "t", "seed0")]
    assert (inv, tri) == ("m-gd-inv", "m-gd-tri")
    assert (inv_loss, tri_loss) == (pytest.approx(-1.0), pytest.approx(-5.0))
    assert (inv_counts, tri_counts) == ([1, 2], [2, 1])


def test_variant_table_averages_over_settings_every_variant_finished() -> None:
    settings = {
        ("m", "t", "seed0"): [("m-a", -1.0, [2, 0]), ("m-b", -3.0, [0, 2])],
        ("m", "t", "seed1"): [("m-a", -3.0, [2, 0]), ("m-b", -5.0, [0, 2])],
        ("m", "t", "seed2"): [("m-a", -50.0, [2, 0])],  # m-b missing: the setting is left out
    }
    table = layer_training.variant_table(settings, "m")
    assert table.startswith("m: 2 settings with all 2 budgeted variants finished")
    assert "| m-a | -2.00 | 2 0 |" in table and "| m-b | -4.00 | 0 2 |" in table
