"""Tests of benchmarks/hello_ordering.py: pairing by pattern, FIM against a strategy's mean, the sign test."""

from __future__ import annotations

from pathlib import Path

import pytest

from .benchmark_scripts import load_benchmark

ordering = load_benchmark("hello_ordering")


def test_pairs_match_pattern_task_and_seed() -> None:
    acc = {
        ("m-gd-uni", "t", 0): 80.0,
        ("m-rgd-uni", "t", 0): 83.0,  # +3 against GD uniform, same seed
        ("m-gd-tri", "t", 0): 70.0,
        ("m-rgd-tri", "t", 0): 69.0,  # -1
        ("m-rgd-tri", "t", 1): 99.0,  # no GD partner at seed 1: not a pair
        ("m-gd-bot", "u", 0): 10.0,  # another task
    }
    assert ordering.pairs(acc, "m", "rgd", "gd", "t") == [3.0, -1.0]
    assert ordering.pairs(acc, "m", "rgd", "gd", "u") == []


def test_fim_is_paired_with_the_mean_of_all_four_patterns() -> None:
    acc = {(f"m-gd-{p}", "t", 0): x for p, x in zip(ordering.PATTERNS, (80.0, 70.0, 60.0, 90.0), strict=True)}
    acc[("m-fim", "t", 0)] = 77.0
    assert ordering.pairs(acc, "m", "fim", "mean-gd", "t") == [2.0]  # 77 - 75
    del acc[("m-gd-bot", "t", 0)]  # a strategy missing one pattern has no mean
    assert ordering.pairs(acc, "m", "fim", "mean-gd", "t") == []


def test_sign_test_by_hand() -> None:
    # 3 wins of 3: P(all on one side) = 2 * (1/8)
    assert ordering.sign_test([1.0, 2.0, 0.5]) == pytest.approx(0.25)
    # ties drop out: 2 wins, 1 loss of 3 -> 2 * (1 + 3) / 8 = 1
    assert ordering.sign_test([1.0, 0.0, 2.0, -1.0]) == pytest.approx(1.0)
    # 9 wins of 10: 2 * (1 + 10) / 1024
    assert ordering.sign_test([1.0] * 9 + [-1.0]) == pytest.approx(22 / 1024)
    assert ordering.sign_test([0.0]) == 1.0


def test_read_cells_filters_by_seed_and_task_prefix(tmp_path: Path) -> None:
    cells = tmp_path / "cells.csv"
    cells.write_text(
        "variant,task,seed,mean_score\n"
        "m-gd-uni,qnli-iid,0,0.8\n"
        "m-gd-uni,qnli-iid,1,0.7\n"
        "m-gd-uni,sst2-iid,1,0.9\n"
    )
    assert len(ordering.read_cells(cells)) == 3
    assert ordering.read_cells(cells, seed=1) == {
        ("m-gd-uni", "qnli-iid", 1): 70.0,
        ("m-gd-uni", "sst2-iid", 1): 90.0,
    }
    assert ordering.read_cells(cells, seed=1, task="qnli") == {("m-gd-uni", "qnli-iid", 1): 70.0}


def test_summary_names_ties() -> None:
    assert ordering.summary([1.0, -1.0, 3.0]) == "+1.00 (2/3)"
    assert ordering.summary([0.0, -1.0, -2.0]) == "-1.00 (0/3, 1 tie)"
    assert ordering.summary([0.0, 0.0, 3.0]) == "+1.00 (1/3, 2 ties)"
