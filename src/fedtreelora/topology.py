"""Client topology of FedTreeLoRA (SPEC "FedTreeLoRA" items 2-4 and the clustering ablations of item 9).

After the warmup the server holds, for every layer ``l``, one flattened ``B`` vector per client. From them it
builds, once:

1. per-layer distance matrices ``D^l`` (Frobenius or cosine) and their mean ``D`` over layers;
2. one global agglomerative merge tree ``Z`` of ``D`` (SciPy linkage format);
3. a number of clusters ``K_l`` per layer by *depth alignment*: ``K`` may only grow with depth, by at most
   ``w`` per layer, and grows only when the silhouette of the finer cut of ``Z`` on ``D^l`` beats the current
   one and ``tau`` (the score of not splitting at all).

Every partition is a cut of the one tree, so partitions are nested across depth. Only numpy and scipy are
used; no global state is kept.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from scipy.cluster.hierarchy import is_valid_linkage
from scipy.cluster.hierarchy import linkage as scipy_linkage
from scipy.spatial.distance import squareform

Distance = Literal["frobenius", "cosine"]
Clustering = Literal["adaptive", "fixed", "independent"]
# Over whom a layer's silhouettes are taken: every client, or only those that trained the layer (Fed-HeLLo).
Scoring = Literal["all", "observed"]

# Linkages that are defined on an arbitrary dissimilarity matrix. "ward", "centroid" and "median" assume the
# distances are Euclidean distances between observations, which a cosine (or averaged) matrix is not.
LINKAGES: tuple[str, ...] = ("single", "complete", "average", "weighted")
SILHOUETTE_K_MAX = 16  # results record every layer's silhouette for K = 2..min(N-1, this)


# --------------------------------------------------------------------------------------------- distances
def _check_square(d: np.ndarray, name: str = "d") -> np.ndarray:
    """Return ``d`` as a float64 (N, N) array or raise a ValueError."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{name} contains non-finite values")
    return d


def _check_layers(d_layers: np.ndarray) -> np.ndarray:
    """Return ``d_layers`` as a float64 (L, N, N) array with L >= 1 and N >= 1, or raise a ValueError."""
    d_layers = np.asarray(d_layers, dtype=np.float64)
    if d_layers.ndim != 3 or d_layers.shape[1] != d_layers.shape[2]:
        raise ValueError(f"d_layers must have shape (L, N, N), got {d_layers.shape}")
    if d_layers.shape[0] == 0 or d_layers.shape[1] == 0:
        raise ValueError(f"d_layers needs at least one layer and one client, got shape {d_layers.shape}")
    if not np.all(np.isfinite(d_layers)):
        raise ValueError("d_layers contains non-finite values")
    return d_layers


def _layer_distance(x: np.ndarray, metric: Distance) -> np.ndarray:
    """(N, D) rows -> (N, N) distances, symmetric with an exactly zero diagonal."""
    # Compute in the input's precision: LoRA weights arrive as float32, and a float32 Gram matrix is twice as
    # fast as float64 (the N x N x D product dominates the topology's cost). Centring (below) keeps the
    # cancellation error of the Frobenius formula small; callers wanting float64 pass float64.
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if metric == "frobenius":
        # Euclidean distances are translation invariant; centring the rows first shrinks |x|^2 and thus the
        # cancellation error of |x_i|^2 + |x_j|^2 - 2 <x_i, x_j>.
        x = x - x.mean(axis=0, keepdims=True)
        gram = (x @ x.T).astype(np.float64)  # (N, N)
        sq = np.diag(gram)  # (N,) squared norms
        d2 = sq[:, None] + sq[None, :] - 2.0 * gram
        d = np.sqrt(np.clip(d2, 0.0, None))  # rounding can make d2 slightly negative
    else:
        gram = (x @ x.T).astype(np.float64)  # (N, N)
        norms = np.sqrt(np.diag(gram))  # (N,)
        denom = norms[:, None] * norms[None, :]
        # A zero row has no direction: similarity 0 to all rows, i.e. cosine distance 1 (self: 0, set below).
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = np.where(denom > 0.0, gram / denom, 0.0)
        d = np.clip(1.0 - sim, 0.0, 2.0)
    d = 0.5 * (d + d.T)  # BLAS need not return a bit-exact symmetric Gram matrix
    np.fill_diagonal(d, 0.0)
    return d


def layer_distances(
    b_layers: Sequence[np.ndarray],
    metric: Distance = "frobenius",
    observed: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Per-layer client distance matrices (SPEC item 2).

    ``b_layers[l]`` has shape (N, D_l): row ``i`` is client ``i``'s flattened B matrices of layer ``l``
    (D_l may differ between layers, N may not). Returns ``D`` of shape (L, N, N), float64, symmetric, with a
    zero diagonal. Frobenius is the Euclidean distance of the rows (via the Gram matrix); cosine is
    ``1 - <b_i, b_j> / (|b_i| |b_j|)``, where a zero row has distance 1 to every other row and 0 to itself.
    ``observed[l]`` (N,) bool marks the clients that trained layer ``l`` (Fed-HeLLo budgets); the other
    rows' distances are imputed (:func:`impute_unobserved`).
    """
    if metric not in get_args(Distance):
        raise ValueError(f"metric must be one of {get_args(Distance)}, got {metric!r}")
    if len(b_layers) == 0:
        raise ValueError("b_layers must hold at least one layer")
    n: int | None = None
    out: list[np.ndarray] = []
    for layer, b in enumerate(b_layers):
        b = np.asarray(b)
        if b.ndim != 2:
            raise ValueError(f"b_layers[{layer}] must have shape (N, D_l), got {b.shape}")
        if n is None:
            n = b.shape[0]
        if b.shape[0] != n:
            raise ValueError(
                f"all layers must have the same number of clients N: layer 0 has {n}, "
                f"layer {layer} has {b.shape[0]}"
            )
        if n == 0:
            raise ValueError("b_layers must hold at least one client")
        d = _layer_distance(b, metric)
        # Checking the (N, N) result is far cheaper than scanning the (N, D_l) input; NaN/inf propagate to it.
        if not np.all(np.isfinite(d)):
            raise ValueError(f"b_layers[{layer}] contains non-finite values (or values too large to square)")
        if observed is not None:
            d = impute_unobserved(d, np.asarray(observed[layer], dtype=bool))
        out.append(d)
    return np.stack(out)  # (L, N, N)


def impute_unobserved(d: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Distances of a client that never trained the layer: the mean of the layer's observed distances.

    Its B there is the shared initialisation, not data: taken literally, every such client would sit at
    distance 0 from the others that skipped the layer (a cluster of budgets, not of data) and at ``|B_j|``
    from the rest. The mean observed distance says "no evidence either way": it adds the same constant to
    each of its pairs, so it neither pulls it toward nor pushes it from anyone. With fewer than two observed
    clients the layer has no observed pair and every off-diagonal distance becomes 0 (a constant layer: no
    silhouette, no effect on the tree's merge order). (N, N) -> (N, N).
    """
    if observed.shape != (d.shape[0],):
        raise ValueError(f"observed must have shape ({d.shape[0]},), got {observed.shape}")
    if observed.all():
        return d
    both = np.outer(observed, observed)
    np.fill_diagonal(both, False)
    fill = float(d[both].mean()) if both.any() else 0.0
    out = np.where(np.outer(observed, observed), d, fill)
    np.fill_diagonal(out, 0.0)
    return out


def global_distance(d_layers: np.ndarray) -> np.ndarray:
    """Mean of the per-layer distances: (L, N, N) -> (N, N) (SPEC item 2)."""
    return _check_layers(d_layers).mean(axis=0)


# ------------------------------------------------------------------------------------------ tree and cuts
def build_tree(d: np.ndarray, linkage: str = "average") -> np.ndarray:
    """Agglomerative merge tree of the (N, N) distance matrix ``d`` as a SciPy linkage matrix (N-1, 4).

    Row ``t`` of ``Z`` merges clusters ``Z[t, 0]`` and ``Z[t, 1]`` (ids < N are clients, id ``N + t'`` is the
    cluster made by row ``t'``) at height ``Z[t, 2]`` into a cluster of ``Z[t, 3]`` clients. N == 1 gives an
    empty (0, 4) tree.
    """
    if linkage not in LINKAGES:
        raise ValueError(
            f"linkage must be one of {LINKAGES} (ward/centroid/median need Euclidean observations), "
            f"got {linkage!r}"
        )
    d = _check_square(d)
    if not np.allclose(d, d.T, rtol=1e-10, atol=1e-12):
        raise ValueError("d must be symmetric")
    if np.any(d < 0.0):
        raise ValueError("d must be non-negative")
    n = d.shape[0]
    if n == 1:
        return np.zeros((0, 4), dtype=np.float64)
    # checks=False: the diagonal is ignored and only the upper triangle is read (symmetry was checked above).
    z = scipy_linkage(squareform(d, checks=False), method=linkage)  # (N-1, 4)
    is_valid_linkage(z, throw=True, name="Z")
    return np.asarray(z, dtype=np.float64)


def _n_leaves(z: np.ndarray) -> int:
    """Number of clients of a linkage matrix, validating its shape (and content when N >= 2)."""
    z = np.asarray(z)
    if z.ndim != 2 or z.shape[1] != 4:
        raise ValueError(f"z must be a linkage matrix of shape (N-1, 4), got {z.shape}")
    if z.shape[0] > 0:
        is_valid_linkage(np.asarray(z, dtype=np.float64), throw=True, name="z")
    return z.shape[0] + 1


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..K-1 in order of their smallest member. (N,) -> (N,) int64."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)  # first-appearance order == smallest-member order
    return rank[inverse.reshape(-1)]


def cut(z: np.ndarray, k: int) -> np.ndarray:
    """Partition into exactly ``k`` clusters: apply only the first N-k merges of ``z`` (SPEC item 3).

    Returns canonical int labels of shape (N,): clusters numbered 0..k-1 in order of their smallest member.
    For a monotonic linkage this equals ``scipy.cluster.hierarchy.cut_tree(z, n_clusters=k)`` up to
    relabelling, and ``cut(z, k + 1)`` refines ``cut(z, k)``.
    """
    n = _n_leaves(z)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in 1..{n}, got {k!r}")
    k = int(k)
    children = np.asarray(z[:, :2], dtype=np.int64)  # (N-1, 2) cluster ids merged by each row
    # parent[c] = id of the cluster that absorbs cluster c among the applied merges, -1 if c stays a root.
    parent = np.full(2 * n - 1, -1, dtype=np.int64)
    for t in range(n - k):
        parent[children[t]] = n + t
    # A parent always has a larger id than its children, so one sweep from the top resolves every root.
    root = np.arange(2 * n - 1, dtype=np.int64)
    for c in range(2 * n - 2, -1, -1):
        if parent[c] >= 0:
            root[c] = root[parent[c]]
    return _canonical(root[:n])


# ------------------------------------------------------------------------------------------- silhouette
def silhouette(d: np.ndarray, labels: np.ndarray) -> float:
    """Mean Rousseeuw silhouette of ``labels`` (N,) under the precomputed distances ``d`` (N, N).

    ``s_i = (b_i - a_i) / max(a_i, b_i)`` with ``a_i`` the mean distance to the other members of i's cluster
    and ``b_i`` the smallest mean distance to another cluster; a member of a singleton cluster has ``s_i = 0``
    (and so does a point with ``a_i = b_i = 0``). Returns 0.0 when K == 1 or K == N. Matches
    ``sklearn.metrics.silhouette_score(d, labels, metric="precomputed")`` for 2 <= K <= N-1.
    """
    d = _check_square(d)
    labels = np.asarray(labels)
    n = d.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    _, lab = np.unique(labels, return_inverse=True)
    lab = lab.reshape(-1)  # (N,) in 0..K-1
    k = int(lab.max()) + 1 if n > 0 else 0
    if k <= 1 or k >= n:
        return 0.0
    onehot = np.zeros((n, k), dtype=np.float64)
    onehot[np.arange(n), lab] = 1.0  # (N, K)
    sums = d @ onehot  # (N, K): sum of distances from point i to the members of cluster c
    sizes = onehot.sum(axis=0)  # (K,)
    rows = np.arange(n)
    own_size = sizes[lab]  # (N,)
    # Rousseeuw excludes the point itself; subtracting d[i, i] keeps that true even for a non-zero diagonal.
    own_sum = sums[rows, lab] - np.diag(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(own_size > 1, own_sum / (own_size - 1), 0.0)  # (N,)
    means = sums / sizes[None, :]  # (N, K)
    means[rows, lab] = np.inf  # b_i looks only at the other clusters
    b = means.min(axis=1)  # (N,)
    top = np.maximum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where((own_size > 1) & (top > 0.0), (b - a) / top, 0.0)  # (N,)
    return float(s.mean())


def layer_silhouette(d: np.ndarray, labels: np.ndarray, seen: np.ndarray | None = None) -> float:
    """:func:`silhouette` over the clients ``seen`` (N,) bool only; every client when ``seen`` is None.

    Why: an imputed row (:func:`impute_unobserved`) is equally far from both sides of any cut, so its own
    silhouette is 0 and it lengthens the others' within-cluster means; counting it pulls the layer's score
    toward 0, so a layer whose trainers separate well may still not beat ``tau`` (RESULTS §6, QNLI).
    """
    if seen is None or seen.all():
        return silhouette(d, labels)
    return silhouette(d[np.ix_(seen, seen)], np.asarray(labels)[seen])


def _seen_rows(seen: np.ndarray | None, n_layers: int) -> list[np.ndarray | None]:
    """Per layer the (N,) mask :func:`layer_silhouette` takes; ``seen`` is (L, N) bool or None."""
    return [None] * n_layers if seen is None else list(np.asarray(seen, dtype=bool))


# ----------------------------------------------------------------------------------------------- topology
@dataclass(frozen=True, eq=False)  # eq=False: the generated __eq__ cannot compare ndarray fields; see __eq__
class Topology:
    """Per-layer clustering of the clients.

    ``k_per_layer[l]`` clusters at layer ``l``; ``partitions[l][i]`` is client i's cluster id there (canonical
    labels as :func:`cut` returns); ``linkage`` is the global tree (None for the independent ablation);
    ``scores[l]`` maps every candidate K considered at layer ``l`` to its score; ``silhouettes[l]`` maps
    every K in 2..min(N-1, SILHOUETTE_K_MAX) to the silhouette of the tree's cut on ``D^l``, whether or not
    it was a candidate: the natural scale that ``tau`` must sit in (paper, appendix C.1).
    """

    k_per_layer: list[int]
    partitions: list[list[int]]
    linkage: np.ndarray | None
    scores: list[dict[int, float]]
    silhouettes: list[dict[int, float]] = field(default_factory=list)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topology):
            return NotImplemented
        same_tree = (self.linkage is None and other.linkage is None) or (
            self.linkage is not None
            and other.linkage is not None
            and np.array_equal(self.linkage, other.linkage)
        )
        return (
            same_tree
            and self.k_per_layer == other.k_per_layer
            and self.partitions == other.partitions
            and self.scores == other.scores
            and self.silhouettes == other.silhouettes
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: K per layer, partitions, and the tree as ``[i, j, dist, size]`` rows (or None)."""
        tree = None
        if self.linkage is not None:
            tree = [[int(i), int(j), float(h), int(s)] for i, j, h, s in np.asarray(self.linkage).tolist()]
        return {
            "k_per_layer": [int(k) for k in self.k_per_layer],
            "partitions": [[int(c) for c in p] for p in self.partitions],
            "linkage": tree,
            "scores": [{str(k): float(v) for k, v in layer.items()} for layer in self.scores],
            "silhouettes": [{str(k): float(v) for k, v in layer.items()} for layer in self.silhouettes],
        }


def _check_tau(tau: float) -> float:
    if (
        isinstance(tau, bool)
        or not isinstance(tau, int | float | np.integer | np.floating)
        or not math.isfinite(tau)
    ):
        raise ValueError(f"tau must be a finite real number, got {tau!r}")
    return float(tau)


def _check_w(w: int) -> int:
    if isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 0:
        raise ValueError(f"w must be an integer >= 0, got {w!r}")
    return int(w)


def _check_tree_matches(d_layers: np.ndarray, z: np.ndarray) -> None:
    n_tree = _n_leaves(z)
    if n_tree != d_layers.shape[1]:
        raise ValueError(f"the tree has {n_tree} leaves but d_layers has N={d_layers.shape[1]} clients")


def depth_alignment(
    d_layers: np.ndarray, z: np.ndarray, tau: float = 0.1, w: int = 2, seen: np.ndarray | None = None
) -> Topology:
    """Layer-wise depth alignment (SPEC item 4).

    ``K_0 = 1``; for layer l the candidates are ``K_{l-1}, ..., min(K_{l-1} + w, N)``; ``score(1) = tau`` and
    ``score(K > 1) = silhouette(D^l, cut(z, K))``; ``K_l`` is the best candidate, ties going to the smaller K.
    Hence K never decreases with depth and every partition is a cut of the one tree ``z``. ``seen`` (L, N)
    bool: take layer l's silhouettes over ``seen[l]`` only (:func:`layer_silhouette`).
    """
    d_layers = _check_layers(d_layers)
    tau, w = _check_tau(tau), _check_w(w)
    _check_tree_matches(d_layers, z)
    n = d_layers.shape[1]
    cuts: dict[int, np.ndarray] = {}  # K -> cut(z, K); the same K recurs over many layers
    k_prev = 1
    ks: list[int] = []
    partitions: list[list[int]] = []
    scores: list[dict[int, float]] = []
    for d, mask in zip(d_layers, _seen_rows(seen, len(d_layers)), strict=True):  # d: (N, N)
        layer_scores: dict[int, float] = {}
        best_k, best = k_prev, -math.inf
        for k in range(k_prev, min(k_prev + w, n) + 1):  # ascending, so '>' keeps the smaller K on ties
            if k not in cuts:
                cuts[k] = cut(z, k)
            score = tau if k == 1 else layer_silhouette(d, cuts[k], mask)
            layer_scores[k] = score
            if score > best:
                best_k, best = k, score
        if best_k not in cuts:
            cuts[best_k] = cut(z, best_k)
        ks.append(best_k)
        partitions.append(cuts[best_k].tolist())
        scores.append(layer_scores)
        k_prev = best_k
    return Topology(
        k_per_layer=ks, partitions=partitions, linkage=np.asarray(z, dtype=np.float64), scores=scores
    )


def fixed_k_topology(d_layers: np.ndarray, z: np.ndarray, k: int, seen: np.ndarray | None = None) -> Topology:
    """Fixed-K ablation (SPEC item 9): every layer uses ``cut(z, k)``.

    ``scores[l]`` holds ``{k: silhouette(D^l, cut(z, k))}`` for reference (0.0 when k is 1 or N); ``seen`` as
    in :func:`depth_alignment`.
    """
    d_layers = _check_layers(d_layers)
    _check_tree_matches(d_layers, z)
    n_layers, n = d_layers.shape[0], d_layers.shape[1]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"fixed k must be an integer in 1..{n}, got {k!r}")
    labels = cut(z, int(k))
    return Topology(
        k_per_layer=[int(k)] * n_layers,
        partitions=[labels.tolist() for _ in range(n_layers)],
        linkage=np.asarray(z, dtype=np.float64),
        scores=[
            {int(k): layer_silhouette(d, labels, mask)}
            for d, mask in zip(d_layers, _seen_rows(seen, n_layers), strict=True)
        ],
    )


def independent_topology(
    d_layers: np.ndarray, linkage: str, tau: float, k_max: int | None = None, seen: np.ndarray | None = None
) -> Topology:
    """Independent-clustering ablation (SPEC item 9): every layer gets its own tree on ``D^l``.

    ``K_l`` maximises the score over K in 1..k_max (default N): ``tau`` for K = 1, the silhouette of the
    layer's own cut otherwise; ties go to the smaller K. No global tree and no monotonicity; ``linkage`` is
    None. ``seen`` as in :func:`depth_alignment`.
    """
    d_layers = _check_layers(d_layers)
    tau = _check_tau(tau)
    n = d_layers.shape[1]
    if k_max is None:
        k_max = n
    if isinstance(k_max, bool) or not isinstance(k_max, int | np.integer) or not 1 <= k_max <= n:
        raise ValueError(f"k_max must be an integer in 1..{n} or None, got {k_max!r}")
    ks: list[int] = []
    partitions: list[list[int]] = []
    scores: list[dict[int, float]] = []
    for d, mask in zip(d_layers, _seen_rows(seen, len(d_layers)), strict=True):  # d: (N, N)
        z_l = build_tree(d, linkage)
        layer_scores: dict[int, float] = {}
        best_k, best, best_labels = 1, -math.inf, np.zeros(n, dtype=np.int64)
        for k in range(1, int(k_max) + 1):
            labels = cut(z_l, k)
            score = tau if k == 1 else layer_silhouette(d, labels, mask)
            layer_scores[k] = score
            if score > best:  # ascending K and strict '>': ties keep the smaller K
                best_k, best, best_labels = k, score, labels
        ks.append(best_k)
        partitions.append(best_labels.tolist())
        scores.append(layer_scores)
    return Topology(k_per_layer=ks, partitions=partitions, linkage=None, scores=scores)


def build_topology(
    b_layers: Sequence[np.ndarray],
    *,
    metric: Distance = "frobenius",
    linkage: str = "average",
    clustering: Clustering = "adaptive",
    tau: float = 0.1,
    w: int = 2,
    fixed_k: int = 2,
    observed: Sequence[np.ndarray] | None = None,
    scoring: Scoring = "all",
) -> Topology:
    """Server entry point: per-layer distances -> global tree -> per-layer K according to ``clustering``.

    ``adaptive`` is depth alignment (SPEC item 4), ``fixed`` uses ``cut(fixed_k)`` on every layer and
    ``independent`` clusters every layer on its own (SPEC item 9). ``observed``: see :func:`layer_distances`.
    ``scoring = "observed"`` takes each layer's silhouettes (and the recorded profile) over ``observed[l]``
    only; the distances, and so the tree, still hold every client.
    """
    if scoring not in get_args(Scoring):
        raise ValueError(f"scoring must be one of {get_args(Scoring)}, got {scoring!r}")
    if clustering not in get_args(Clustering):
        raise ValueError(f"clustering must be one of {get_args(Clustering)}, got {clustering!r}")
    if linkage not in LINKAGES:  # fail before the (expensive) distances
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    tau, w = _check_tau(tau), _check_w(w)
    d_layers = layer_distances(b_layers, metric, observed)  # (L, N, N)
    seen = np.stack(observed) if scoring == "observed" and observed is not None else None  # (L, N) bool
    if clustering == "independent":
        return independent_topology(d_layers, linkage, tau, seen=seen)
    z = build_tree(global_distance(d_layers), linkage)  # (N-1, 4)
    if clustering == "fixed":
        topology = fixed_k_topology(d_layers, z, fixed_k, seen=seen)
    else:
        topology = depth_alignment(d_layers, z, tau=tau, w=w, seen=seen)
    return dataclasses.replace(topology, silhouettes=silhouette_profile(d_layers, z, seen=seen))


def silhouette_profile(
    d_layers: np.ndarray, z: np.ndarray, k_max: int = 0, seen: np.ndarray | None = None
) -> list[dict[int, float]]:
    """Per layer, ``{K: silhouette(D^l, cut(z, K))}`` for K in 2..min(N-1, k_max or SILHOUETTE_K_MAX).

    O(L * k_max * N^2): capped so that a thousand clients do not pay for a million cuts. ``seen`` as in
    :func:`depth_alignment`.
    """
    n = d_layers.shape[1]
    ks = range(2, min(n - 1, k_max or SILHOUETTE_K_MAX) + 1)
    cuts = {k: cut(z, k) for k in ks}
    masks = _seen_rows(seen, len(d_layers))
    return [
        {k: layer_silhouette(d, cuts[k], mask) for k in ks} for d, mask in zip(d_layers, masks, strict=True)
    ]
