"""Tests of benchmarks/hello_split_coverage.py: a layer counts as covered by a client that trained it in any
warmup round; federated rounds do not count."""

from __future__ import annotations

from .benchmark_scripts import load_benchmark

coverage = load_benchmark("hello_split_coverage")


def test_layer_rows_count_warmup_trainers_only() -> None:
    result = {
        "rounds": [
            {"phase": "warmup", "trained_layers": {"0": [0], "1": [0, 1], "2": []}},
            {"phase": "warmup", "trained_layers": {"0": [1], "1": [0], "2": []}},
            {"phase": "federated", "trained_layers": {"0": [0, 1, 2], "1": [2], "2": [0, 1, 2]}},
        ],
        "topology": {"k_per_layer": [1, 2, 2], "silhouettes": [{"2": 0.05}, {"2": 0.3}, {"2": 0.0}]},
    }
    # layer 0: clients 0 and 1; layer 1: 0 (second round) and 1; layer 2: nobody in the warmup
    assert coverage.layer_rows(result) == [(0, 2, 0.05, 1), (1, 2, 0.3, 2), (2, 0, 0.0, 2)]
