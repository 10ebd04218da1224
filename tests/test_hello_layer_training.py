"""Tests of benchmarks/hello_layer_training.py: layer training counts, their rank correlation with losses."""

from __future__ import annotations

import pytest

from .benchmark_scripts import load_benchmark

layer_training = load_benchmark("hello_layer_training")


def test_layer_counts_sum_client_rounds_per_layer() -> None:
    result = {
        "rounds": [
            {"trained_layers": {"0": [0, 1, 2, 3], "1": [2, 3]}},
            {"trained_layers": {"0": [0, 1], "1": [3]}},
            {},  # a round row without allocation records counts nothing
        ]
    }
    assert layer_training.layer_counts(result, 4) == [2, 2, 2, 3]


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
