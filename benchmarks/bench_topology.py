"""Topology build time (distances, global tree, per-layer K) on RoBERTa-large-shaped LoRA B matrices.

    python benchmarks/bench_topology.py [--clients 10 100 1000]

One JSON line per client count: {"n_clients": N, "seconds": median, ...}. Goals: <= 0.05 s at N = 10,
<= 5 s at N = 1000 (the paper: 4.21 s at N = 10).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
from common import LAYERS, as_numpy_layers, client_states, emit, median_seconds, roberta_large_layout

from fedtreelora.topology import build_tree, depth_alignment, global_distance, layer_distances


def build(b_layers: list[np.ndarray]) -> list[int]:
    d_layers = layer_distances(b_layers)
    z = build_tree(global_distance(d_layers))
    return depth_alignment(d_layers, z).k_per_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    layout = roberta_large_layout()
    for n in args.clients:
        b_layers = as_numpy_layers(layout, client_states(layout, n, "cluster"), "cluster")  # L x (N, 16384)
        repeats = 15 if n <= 100 else 3

        seconds = median_seconds(partial(build, b_layers), repeats)
        # One profiled pass, to say where the time goes.
        t0 = time.perf_counter()
        d_layers = layer_distances(b_layers)
        t1 = time.perf_counter()
        z = build_tree(global_distance(d_layers))
        t2 = time.perf_counter()
        ks = depth_alignment(d_layers, z).k_per_layer
        t3 = time.perf_counter()
        emit(
            n_clients=n,
            seconds=round(seconds, 5),
            repeats=repeats,
            layers=LAYERS,
            dims_per_layer=int(b_layers[0].shape[1]),
            split_seconds={
                "distances": round(t1 - t0, 4),
                "tree": round(t2 - t1, 4),
                "alignment": round(t3 - t2, 4),
            },
            k_per_layer=ks,
        )


if __name__ == "__main__":
    main()
