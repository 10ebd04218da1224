"""Tests of fedtreelora.topology: distances, global tree, cuts, silhouette, depth alignment and ablations."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.cluster.hierarchy import cut_tree, is_valid_linkage
from scipy.cluster.hierarchy import linkage as scipy_linkage
from scipy.spatial.distance import pdist, squareform
from sklearn.metrics import silhouette_score

# Until the package is installed (editable) or pytest gets pythonpath=["src"], make the src layout importable.
if importlib.util.find_spec("fedtreelora") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from fedtreelora import topology as topo

LINKAGES = ["single", "complete", "average", "weighted"]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True if two label vectors describe the same partition (up to relabelling)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _refines(fine: np.ndarray, coarse: np.ndarray) -> bool:
    """True if every cluster of `fine` lies inside one cluster of `coarse`."""
    return all(len(set(coarse[fine == c].tolist())) == 1 for c in np.unique(fine))


def _random_d(rng: np.random.Generator, n: int, dim: int = 5) -> np.ndarray:
    return squareform(pdist(rng.normal(size=(n, dim))))


# --------------------------------------------------------------------------------------------- distances
def test_frobenius_by_hand() -> None:
    # rows (0,0), (3,4), (1,0): |0-1| = 5, |0-2| = 1, |1-2| = |(2,4)| = sqrt(20)
    b = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    d = topo.layer_distances([b])
    expected = np.array([[0.0, 5.0, 1.0], [5.0, 0.0, math.sqrt(20)], [1.0, math.sqrt(20), 0.0]])
    assert d.shape == (1, 3, 3) and d.dtype == np.float64
    np.testing.assert_allclose(d[0], expected, rtol=1e-12, atol=1e-12)


def test_cosine_by_hand() -> None:
    # (1,0), (0,2), (1,1), (0,0), (-3,0)
    b = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0], [-3.0, 0.0]])
    d = topo.layer_distances([b], metric="cosine")[0]
    h = 1.0 - 1.0 / math.sqrt(2.0)  # 45 degrees
    expected = np.array(
        [
            [0.0, 1.0, h, 1.0, 2.0],  # orthogonal -> 1, opposite -> 2
            [1.0, 0.0, h, 1.0, 1.0],
            [h, h, 0.0, 1.0, 1.0 + 1.0 / math.sqrt(2.0)],
            [1.0, 1.0, 1.0, 0.0, 1.0],  # the zero row: 1 to everything but itself
            [2.0, 1.0, 1.0 + 1.0 / math.sqrt(2.0), 1.0, 0.0],
        ]
    )
    np.testing.assert_allclose(d, expected, rtol=1e-12, atol=1e-12)


def test_two_zero_rows_cosine() -> None:
    d = topo.layer_distances([np.zeros((3, 4))], metric="cosine")[0]
    np.testing.assert_array_equal(d, 1.0 - np.eye(3))


def test_global_distance_by_hand() -> None:
    # layer 0: points 0, 3, 4 on a line; layer 1: points 0, 1, 1 -> mean of both matrices
    b0 = np.array([[0.0], [3.0], [4.0]])
    b1 = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    d_layers = topo.layer_distances([b0, b1])
    np.testing.assert_allclose(d_layers[1], [[0, 1, 1], [1, 0, 0], [1, 0, 0]], atol=1e-12)
    g = topo.global_distance(d_layers)
    np.testing.assert_allclose(g, [[0, 2, 2.5], [2, 0, 0.5], [2.5, 0.5, 0]], atol=1e-12)


@pytest.mark.parametrize("metric", ["frobenius", "cosine"])
def test_distances_match_scipy(metric: topo.Distance) -> None:
    rng = np.random.default_rng(0)
    b_layers = [rng.normal(size=(9, 7)).astype(np.float32) + 3.0, rng.normal(size=(9, 2))]
    d = topo.layer_distances(b_layers, metric=metric)
    scipy_metric = "euclidean" if metric == "frobenius" else "cosine"
    for layer, b in zip(d, b_layers, strict=True):
        assert np.array_equal(layer, layer.T) and np.all(np.diag(layer) == 0.0)
        # computed in the input's precision: float32 rows give float32-accurate distances
        atol = 1e-5 if b.dtype == np.float32 else 1e-9
        np.testing.assert_allclose(layer, squareform(pdist(b.astype(np.float64), scipy_metric)), atol=atol)


def test_distances_validation() -> None:
    with pytest.raises(ValueError, match="same number of clients"):
        topo.layer_distances([np.zeros((3, 2)), np.zeros((4, 2))])
    with pytest.raises(ValueError, match="metric"):
        topo.layer_distances([np.zeros((3, 2))], metric="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one layer"):
        topo.layer_distances([])
    with pytest.raises(ValueError, match="shape"):
        topo.layer_distances([np.zeros(3)])
    with pytest.raises(ValueError, match="non-finite"):
        topo.layer_distances([np.array([[0.0, np.nan], [1.0, 1.0]])])
    with pytest.raises(ValueError, match="shape"):
        topo.global_distance(np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------ tree and cuts
def test_build_tree_basics() -> None:
    rng = np.random.default_rng(1)
    d = _random_d(rng, 10)
    for method in LINKAGES:
        z = topo.build_tree(d, method)
        assert z.shape == (9, 4) and is_valid_linkage(z)
        np.testing.assert_allclose(z, scipy_linkage(squareform(d), method=method))
    assert topo.build_tree(np.zeros((1, 1))).shape == (0, 4)
    for bad in ["ward", "centroid", "median", "foo"]:
        with pytest.raises(ValueError, match="average"):
            topo.build_tree(d, bad)
    with pytest.raises(ValueError, match="symmetric"):
        topo.build_tree(np.array([[0.0, 1.0], [2.0, 0.0]]))


@pytest.mark.parametrize("method", LINKAGES)
def test_cut_matches_scipy_cut_tree_and_is_nested(method: str) -> None:
    rng = np.random.default_rng(2)
    n = 13
    z = topo.build_tree(_random_d(rng, n), method)
    prev = None
    for k in range(1, n + 1):
        labels = topo.cut(z, k)
        assert labels.shape == (n,) and set(labels.tolist()) == set(range(k))
        # canonical: cluster ids appear in increasing order of their smallest member
        first = [int(np.flatnonzero(labels == c)[0]) for c in range(k)]
        assert first == sorted(first)
        assert _same_partition(labels, cut_tree(z, n_clusters=k))
        if prev is not None:
            assert _refines(labels, prev)  # cut(K) refines cut(K-1)
        prev = labels


def test_cut_by_hand_and_errors() -> None:
    # points 0, 1, 10, 11, 30 on a line: merges {0,1}, {2,3}, {0,1,2,3}, then 4
    x = np.array([[0.0], [1.0], [10.0], [11.0], [30.0]])
    z = topo.build_tree(squareform(pdist(x)), "single")
    assert topo.cut(z, 1).tolist() == [0, 0, 0, 0, 0]
    assert topo.cut(z, 2).tolist() == [0, 0, 0, 0, 1]
    assert topo.cut(z, 3).tolist() == [0, 0, 1, 1, 2]
    assert topo.cut(z, 5).tolist() == [0, 1, 2, 3, 4]
    assert topo.cut(np.zeros((0, 4)), 1).tolist() == [0]
    for bad in [0, 6, -1]:
        with pytest.raises(ValueError, match=r"1\.\.5"):
            topo.cut(z, bad)


# ------------------------------------------------------------------------------------------- silhouette
def test_silhouette_by_hand() -> None:
    d = squareform(pdist(np.array([[0.0], [1.0], [4.0], [5.0]])))
    # points 0 and 5: a = 1, b = 4.5 -> 7/9; points 1 and 4: a = 1, b = 3.5 -> 5/7
    assert topo.silhouette(d, np.array([0, 0, 1, 1])) == pytest.approx((7 / 9 + 5 / 7) / 2, abs=1e-12)
    # singleton: points 0, 1 | 10: s = 0.9, 8/9, 0 (singleton)
    d = squareform(pdist(np.array([[0.0], [1.0], [10.0]])))
    assert topo.silhouette(d, np.array([3, 3, 7])) == pytest.approx((0.9 + 8 / 9) / 3, abs=1e-12)
    assert topo.silhouette(d, np.zeros(3)) == 0.0  # K == 1
    assert topo.silhouette(d, np.arange(3)) == 0.0  # K == N


def test_silhouette_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    for n in [5, 12, 40]:
        d = _random_d(rng, n)
        z = topo.build_tree(d)
        for k in range(2, n):
            labels = topo.cut(z, k)
            assert topo.silhouette(d, labels) == pytest.approx(
                silhouette_score(d, labels, metric="precomputed"), abs=1e-12
            )
        labels = rng.choice([5, -2, 9], size=n)  # arbitrary, non-canonical label values
        if 2 <= len(set(labels.tolist())) <= n - 1:
            assert topo.silhouette(d, labels) == pytest.approx(
                silhouette_score(d, labels, metric="precomputed"), abs=1e-12
            )


def test_silhouette_large_n_matches_sklearn() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 8))
    d = squareform(pdist(x))
    labels = rng.integers(0, 10, size=1000)
    assert topo.silhouette(d, labels) == pytest.approx(
        silhouette_score(d, labels, metric="precomputed"), abs=1e-10
    )


def test_silhouette_duplicates_give_zero_not_nan() -> None:
    d = np.zeros((4, 4))  # every point identical: a = b = 0 -> 0 (sklearn's nan_to_num convention)
    assert topo.silhouette(d, np.array([0, 0, 1, 1])) == 0.0


# -------------------------------------------------------------------------------------- depth alignment
def _structured_layers(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """16 clients in 4 groups (2 super-groups). Layers 0-1 pure noise, layer 2 separates the 2 super-groups,
    layer 3 the 4 groups. Returns (b_layers, super labels, group labels)."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(4), 4)  # (16,)
    sup = group // 2
    noise = [rng.normal(size=(16, 64)) for _ in range(2)]  # high-dimensional noise: no cluster structure
    layer2 = 10.0 * np.eye(2)[sup] + 0.1 * rng.normal(size=(16, 2))
    layer3 = 10.0 * np.eye(4)[group] + 0.1 * rng.normal(size=(16, 4))
    return [*noise, layer2, layer3], sup, group


def test_depth_alignment_grows_with_structure() -> None:
    b_layers, sup, group = _structured_layers()
    d_layers = topo.layer_distances(b_layers)
    z = topo.build_tree(topo.global_distance(d_layers))
    t = topo.depth_alignment(d_layers, z, tau=0.1, w=2)
    assert t.k_per_layer == [1, 1, 2, 4]
    assert t.partitions[0] == t.partitions[1] == [0] * 16
    assert _same_partition(np.array(t.partitions[2]), sup)
    assert _same_partition(np.array(t.partitions[3]), group)
    assert list(t.scores[0]) == [1, 2, 3] and t.scores[0][1] == 0.1
    assert list(t.scores[3]) == [2, 3, 4]
    assert t.linkage is not None and np.array_equal(t.linkage, z)
    # the one-call server entry point gives the same topology, plus every layer's silhouette profile
    full = topo.build_topology(b_layers)
    assert dataclasses.replace(full, silhouettes=[]) == t
    assert [list(layer) for layer in full.silhouettes] == [list(range(2, 16))] * 4  # N = 16: K = 2..15
    for layer, d in zip(full.silhouettes, d_layers, strict=True):
        for k, value in layer.items():
            assert value == topo.silhouette(d, topo.cut(z, k))
    assert t.scores[3][4] == full.silhouettes[3][4]  # a candidate's score is its silhouette
    as_json = full.to_json()
    assert as_json["scores"][0] == {"1": 0.1, "2": t.scores[0][2], "3": t.scores[0][3]}
    assert list(as_json["silhouettes"][3]) == [str(k) for k in range(2, 16)]


def test_silhouette_profile_is_capped() -> None:
    b_layers, _, _ = _structured_layers()
    d_layers = topo.layer_distances(b_layers)
    z = topo.build_tree(topo.global_distance(d_layers))
    assert [list(layer) for layer in topo.silhouette_profile(d_layers, z, k_max=5)] == [[2, 3, 4, 5]] * 4


def test_depth_alignment_step_limited_by_w() -> None:
    b_layers, _, group = _structured_layers()
    d_layers = topo.layer_distances(b_layers)
    z = topo.build_tree(topo.global_distance(d_layers))
    # w = 1: layer 2 reaches 2 and layer 3 can only reach 3
    assert topo.depth_alignment(d_layers, z, w=1).k_per_layer == [1, 1, 2, 3]
    # w = 0: nothing can ever split
    assert topo.depth_alignment(d_layers, z, w=0).k_per_layer == [1, 1, 1, 1]
    # deep structure only in the last layer, w = 3: a single jump to 4
    t = topo.depth_alignment(d_layers[[0, 1, 3]], z, w=3)
    assert t.k_per_layer == [1, 1, 4] and _same_partition(np.array(t.partitions[2]), group)


@pytest.mark.parametrize(
    ("tau", "w", "method"), [(0.1, 2, "average"), (-0.5, 1, "complete"), (0.0, 3, "single")]
)
def test_depth_alignment_properties_random(tau: float, w: int, method: str) -> None:
    rng = np.random.default_rng(5)
    n, n_layers = 11, 8
    b_layers = [rng.normal(size=(n, 6)) * (1 + i) + rng.normal(size=(1, 6)) for i in range(n_layers)]
    d_layers = topo.layer_distances(b_layers)
    z = topo.build_tree(topo.global_distance(d_layers), method)
    t = topo.depth_alignment(d_layers, z, tau=tau, w=w)
    prev = 1
    for layer, (k, part, sc) in enumerate(zip(t.k_per_layer, t.partitions, t.scores, strict=True)):
        assert prev <= k <= min(prev + w, n)  # monotone, bounded step
        assert list(sc) == list(range(prev, min(prev + w, n) + 1))  # exactly the candidate set
        assert part == topo.cut(z, k).tolist()  # a cut of the one global tree
        assert sc[k] == max(sc.values()) and all(
            sc[j] < sc[k] for j in sc if j < k
        )  # argmax, ties -> smaller
        for j, s in sc.items():
            assert s == (tau if j == 1 else topo.silhouette(d_layers[layer], topo.cut(z, j)))
        if layer > 0:
            assert _refines(np.array(part), np.array(t.partitions[layer - 1]))
        prev = k


def test_tau_extremes() -> None:
    rng = np.random.default_rng(6)
    d_layers = np.stack([_random_d(rng, 9) for _ in range(5)])
    z = topo.build_tree(topo.global_distance(d_layers))
    assert topo.depth_alignment(d_layers, z, tau=1e6).k_per_layer == [1] * 5
    assert topo.depth_alignment(d_layers, z, tau=-2.0).k_per_layer[0] > 1  # any silhouette >= -1 beats it
    # well-separated structure is kept even when tau is high, but not above the silhouette maximum of 1
    b_layers, _, _ = _structured_layers()
    assert topo.build_topology(b_layers, tau=0.7).k_per_layer == [1, 1, 2, 4]
    assert topo.build_topology(b_layers, tau=1.0).k_per_layer == [1, 1, 1, 1]


def test_ties_go_to_smaller_k() -> None:
    rng = np.random.default_rng(7)
    d_layers = np.stack([_random_d(rng, 8) for _ in range(3)])
    z = topo.build_tree(topo.global_distance(d_layers))
    s2 = topo.silhouette(d_layers[0], topo.cut(z, 2))
    t = topo.depth_alignment(d_layers, z, tau=s2, w=1)  # score(1) == score(2) exactly at layer 0
    assert t.scores[0] == {1: s2, 2: s2} and t.k_per_layer[0] == 1
    # N = 2: K = 2 = N scores 0, a tie with tau = 0
    d2 = np.array([[[0.0, 1.0], [1.0, 0.0]]])
    assert topo.depth_alignment(d2, topo.build_tree(d2[0]), tau=0.0).k_per_layer == [1]
    assert topo.depth_alignment(d2, topo.build_tree(d2[0]), tau=-0.1).k_per_layer == [2]


def test_single_client() -> None:
    t = topo.build_topology([np.ones((1, 3)), np.ones((1, 5))])
    assert t.k_per_layer == [1, 1] and t.partitions == [[0], [0]]
    assert t.to_json()["linkage"] == []


def test_alignment_validation() -> None:
    rng = np.random.default_rng(8)
    d_layers = np.stack([_random_d(rng, 6) for _ in range(2)])
    z = topo.build_tree(topo.global_distance(d_layers))
    with pytest.raises(ValueError, match="w must"):
        topo.depth_alignment(d_layers, z, w=-1)
    with pytest.raises(ValueError, match="tau"):
        topo.depth_alignment(d_layers, z, tau=float("nan"))
    with pytest.raises(ValueError, match="leaves"):
        topo.depth_alignment(d_layers[:, :5, :5], z)
    with pytest.raises(ValueError, match="shape"):
        topo.depth_alignment(d_layers[0], z)
    b = [rng.normal(size=(6, 3))]
    with pytest.raises(ValueError, match="clustering"):
        topo.build_topology(b, clustering="kmeans")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="w must"):
        topo.build_topology(b, w=-2)
    with pytest.raises(ValueError, match="linkage"):
        topo.build_topology(b, linkage="ward")
    for k in [0, 7]:
        with pytest.raises(ValueError, match=r"1\.\.6"):
            topo.build_topology(b, clustering="fixed", fixed_k=k)


# ------------------------------------------------------------------------------------------- ablations
def test_fixed_k_topology() -> None:
    b_layers, sup, _ = _structured_layers()
    t = topo.build_topology(b_layers, clustering="fixed", fixed_k=2)
    assert t.k_per_layer == [2, 2, 2, 2]
    assert all(_same_partition(np.array(p), sup) for p in t.partitions)
    d_layers = topo.layer_distances(b_layers)
    z = topo.build_tree(topo.global_distance(d_layers))
    assert dataclasses.replace(t, silhouettes=[]) == topo.fixed_k_topology(d_layers, z, 2)
    assert t.scores[2][2] == topo.silhouette(d_layers[2], topo.cut(z, 2))
    assert topo.fixed_k_topology(d_layers, z, 16).partitions[0] == list(range(16))


def test_independent_topology() -> None:
    rng = np.random.default_rng(9)
    group = np.repeat(np.arange(3), 4)  # 12 clients
    # layer 0: 3 groups; layer 1: noise; layer 2: 2 groups that cut across the layer-0 groups
    other = np.tile(np.arange(2), 6)
    b_layers = [
        10.0 * np.eye(3)[group] + 0.1 * rng.normal(size=(12, 3)),
        rng.normal(size=(12, 64)),
        10.0 * np.eye(2)[other] + 0.1 * rng.normal(size=(12, 2)),
    ]
    t = topo.build_topology(b_layers, clustering="independent", linkage="complete")
    assert t.linkage is None and t.to_json()["linkage"] is None
    assert t.k_per_layer == [3, 1, 2]  # no monotonicity, no shared tree
    assert _same_partition(np.array(t.partitions[0]), group)
    assert _same_partition(np.array(t.partitions[2]), other)
    d_layers = topo.layer_distances(b_layers)
    for layer in range(3):
        assert list(t.scores[layer]) == list(range(1, 13))
        assert (
            t.partitions[layer]
            == topo.cut(topo.build_tree(d_layers[layer], "complete"), t.k_per_layer[layer]).tolist()
        )
    limited = topo.independent_topology(d_layers, "complete", tau=0.1, k_max=2)
    assert limited.k_per_layer == [2, 1, 2] and all(list(s) == [1, 2] for s in limited.scores)
    with pytest.raises(ValueError, match="k_max"):
        topo.independent_topology(d_layers, "complete", tau=0.1, k_max=13)


# ---------------------------------------------------------------------------------------------- to_json
def test_to_json() -> None:
    b_layers, _, _ = _structured_layers()
    t = topo.build_topology(b_layers)
    js = t.to_json()
    assert set(js) == {"k_per_layer", "partitions", "linkage", "scores", "silhouettes"}
    assert js["k_per_layer"] == [1, 1, 2, 4]
    assert len(js["partitions"]) == 4 and all(len(p) == 16 for p in js["partitions"])
    assert len(js["linkage"]) == 15
    for row in js["linkage"]:
        assert [type(v) for v in row] == [int, int, float, int]
    assert json.loads(json.dumps(js)) == js
    assert t.linkage is not None
    np.testing.assert_array_equal(np.array(js["linkage"], dtype=float), t.linkage)


def test_all_partitions_are_cuts_for_every_linkage_and_metric() -> None:
    rng = np.random.default_rng(10)
    b_layers = [rng.normal(size=(7, 5)) for _ in range(4)]
    for method, metric in itertools.product(LINKAGES, ["frobenius", "cosine"]):
        t = topo.build_topology(b_layers, metric=metric, linkage=method, tau=-1.0)  # type: ignore[arg-type]
        assert t.linkage is not None
        for k, part in zip(t.k_per_layer, t.partitions, strict=True):
            assert part == topo.cut(t.linkage, k).tolist()
