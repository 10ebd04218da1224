"""Aggregation on hand-computed values."""

import pytest
import torch

from fedtreelora.aggregation import cluster_and_complement_averages, weighted_average


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values)


def test_weighted_average_by_hand() -> None:
    states = [{"a": t(1.0, 2.0)}, {"a": t(3.0, 6.0)}]
    # weights 1:3 -> (1*1 + 3*3)/4 = 2.5, (1*2 + 3*6)/4 = 5
    out = weighted_average(states, [1.0, 3.0])
    assert torch.allclose(out["a"], t(2.5, 5.0))


def test_weighted_average_normalises_weights_and_keeps_shape() -> None:
    states = [{"m": torch.ones(2, 3)}, {"m": torch.zeros(2, 3)}]
    out = weighted_average(states, [0.2, 0.2])
    assert out["m"].shape == (2, 3)
    assert torch.allclose(out["m"], torch.full((2, 3), 0.5))


def test_weighted_average_rejects_mismatched_names() -> None:
    with pytest.raises(ValueError, match="disagree"):
        weighted_average([{"a": t(1.0)}, {"b": t(1.0)}], [1, 1])


def test_cluster_and_complement_by_hand() -> None:
    # clients 0,1 in cluster 0; client 2 in cluster 1; client 3 in cluster 0
    states = [{"x": t(1.0)}, {"x": t(2.0)}, {"x": t(10.0)}, {"x": t(4.0)}]
    weights = [0.1, 0.2, 0.3, 0.4]
    clusters, complements = cluster_and_complement_averages(states, weights, [0, 0, 1, 0])
    # cluster 0: (0.1*1 + 0.2*2 + 0.4*4) / 0.7 = 2.1 / 0.7 = 3
    assert clusters[0]["x"].item() == pytest.approx(3.0)
    assert clusters[1]["x"].item() == pytest.approx(10.0)
    # complement of cluster 0 is client 2 alone; complement of cluster 1 is cluster 0
    assert complements[0] is not None and complements[0]["x"].item() == pytest.approx(10.0)
    assert complements[1] is not None and complements[1]["x"].item() == pytest.approx(3.0)


def test_single_cluster_has_no_complement() -> None:
    states = [{"x": t(1.0)}, {"x": t(3.0)}]
    clusters, complements = cluster_and_complement_averages(states, [1, 1], [0, 0])
    assert clusters[0]["x"].item() == pytest.approx(2.0)
    assert complements == [None]


def test_names_restrict_the_tensors() -> None:
    states = [{"x": t(1.0), "y": t(5.0)}, {"x": t(3.0), "y": t(7.0)}]
    clusters, _ = cluster_and_complement_averages(states, [1, 1], [0, 1], names=["y"])
    assert set(clusters[0]) == {"y"} and clusters[1]["y"].item() == 7.0


def test_empty_cluster_is_an_error() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        cluster_and_complement_averages([{"x": t(1.0)}], [1], [1])
