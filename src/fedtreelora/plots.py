"""Pictures of a run: the client tree with each layer's cut, K per layer, score per round, the allocation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from scipy.cluster.hierarchy import dendrogram

from .results import allocates, allocation_of, metric_of, round_score


def cut_height(z: np.ndarray, k: int) -> float:
    """A height between the merges that ``cut(k)`` keeps and the ones it undoes (for drawing)."""
    n = z.shape[0] + 1
    below = z[n - k - 1, 2] if k < n else 0.0  # last merge kept
    above = z[n - k, 2] if k > 1 else z[-1, 2] * 1.08  # first merge undone
    return float((below + above) / 2)


def spans(layers: list[int]) -> str:
    """Sorted layer indices as ranges: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (30 layers fit on a line)."""
    runs: list[list[int]] = []
    for i in layers:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def layer_ticks(ax: Any, n_layers: int) -> None:
    """A tick per layer up to 16 layers; beyond, every 2nd or 5th (30 labels would overlap)."""
    ax.set_xticks(range(0, n_layers, 1 if n_layers <= 16 else 2 if n_layers <= 32 else 5))


def plot_tree(topology: Mapping[str, Any], path: Path, labels: list[str] | None = None) -> None:
    """Dendrogram of the global client tree: one dashed line per distinct cut, naming the layers using it.

    Branches are coloured by the deepest layer's clusters.
    """
    z = np.asarray(topology["linkage"], dtype=float)
    ks = topology["k_per_layer"]
    n = z.shape[0] + 1
    widest = max((len(line) for label in labels or [] for line in label.splitlines()), default=3)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * n + 2, 0.085 * widest * n + 1.5), 4.8))  # labels fit
    deepest = cut_height(z, max(ks)) if max(ks) > 1 else 0.0
    dendrogram(
        z, ax=ax, labels=labels or [f"c{i}" for i in range(n)], color_threshold=deepest, leaf_font_size=8
    )
    colors = plt.get_cmap("plasma")
    distinct = sorted(set(ks))
    for j, k in enumerate(distinct):
        layers = spans([i for i, kk in enumerate(ks) if kk == k])
        y = cut_height(z, k)
        color = colors(0.8 * j / max(len(distinct) - 1, 1))
        ax.axhline(y, ls="--", lw=1.2, color=color)
        ax.annotate(f"K={k}: layers {layers}", (0.01, y), xycoords=("axes fraction", "data"),
                    va="bottom", fontsize=8, color=color)  # fmt: skip
    low = float(z[:, 2].min()) if n > 1 else 0.0
    ax.set_ylim(low * 0.9, cut_height(z, 1) * 1.04)
    ax.set_ylabel("merge distance (mean over layers)")
    ax.set_title("global client tree and each layer's cut")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_k_per_layer(topology: Mapping[str, Any], path: Path, n_clients: int, title: str = "") -> None:
    ks = topology["k_per_layer"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.step(range(len(ks)), ks, where="mid", marker="o")
    ax.set_xlabel("layer (0 = shallowest)")
    ax.set_ylabel("clusters K")
    ax.set_ylim(0.5, n_clients + 0.5)
    layer_ticks(ax, len(ks))
    ax.grid(alpha=0.3)
    ax.set_title(title or "clusters per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scores(
    results: Mapping[str, Any], path: Path, others: Mapping[str, Mapping[str, Any]] | None = None
) -> None:
    """Mean score per evaluated round, the end of the warmup, the majority-label level, other runs.

    ``others`` maps a label to another run's results (e.g. local training with the same seed and budget);
    a run evaluated once (zero-shot: no training) is drawn as a level across the plot.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    runs = [(results["method"], results, "o", 2.2)]
    runs += [(name, res, ".", 1.2) for name, res in (others or {}).items()]
    for label, res, marker, width in runs:
        scored = [(r["round"] + 1, round_score(r)) for r in res["rounds"]]
        rows = [(x, y) for x, y in scored if y is not None]
        if len(rows) == 1 and res is not results:
            ax.axhline(rows[0][1], linestyle="-.", linewidth=width, color="tab:green", label=label)
            continue
        ax.plot([x for x, _ in rows], [y for _, y in rows], label=label, marker=marker, linewidth=width)
    warmup = [r["round"] + 1 for r in results["rounds"] if r["phase"] == "warmup"]
    if warmup:
        ax.axvline(max(warmup), color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            "end of warmup", (max(warmup), 0.02), xycoords=("data", "axes fraction"), fontsize=8,
            color="grey", ha="right", rotation=90, va="bottom",
        )  # fmt: skip
    if results.get("majority_baseline") is not None:
        ax.axhline(
            results["majority_baseline"], color="black", linestyle="--", linewidth=1, label="majority label"
        )
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"mean personalised {metric_of(results)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def leaf_labels(clients: list[Mapping[str, Any]]) -> list[str]:
    """A tree leaf per client: its task (and group, where several) when clients hold different tasks, else
    its training label counts."""
    if len({c["task"] for c in clients}) > 1:
        groups = len({c.get("group") for c in clients}) > 1
        return [f"c{c['id']}\n{c['task']}" + (f"\n{c['group']}" if groups else "") for c in clients]
    return [f"c{c['id']}\n" + "/".join(map(str, c["label_counts"])) for c in clients]


def plot_silhouettes(topology: Mapping[str, Any], path: Path, tau: float | None) -> None:
    """Per layer, the silhouette of the tree's cut for every K, beside tau: the scale tau must live in.

    A layer splits only where some candidate beats tau (SPEC step 4); a tau above every point here turns
    FedTreeLoRA into FedAvg on that layer (paper, appendix C.1).
    """
    layers = topology["silhouettes"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ks = sorted({int(k) for layer in layers for k in layer})
    colors = plt.get_cmap("viridis")
    for j, k in enumerate(ks):
        xs = [li for li, layer in enumerate(layers) if str(k) in layer]
        ys = [layers[li][str(k)] for li in xs]
        ax.plot(xs, ys, marker=".", lw=1, color=colors(j / max(len(ks) - 1, 1)), label=f"K={k}")
    chosen = topology["k_per_layer"]
    # K = 1 has no silhouette: its score is tau, so a layer that stays unsplit is marked on the tau line.
    picked = [
        (li, tau if k == 1 else layers[li][str(k)])
        for li, k in enumerate(chosen)
        if (k == 1 and tau is not None) or str(k) in layers[li]
    ]
    if picked:
        px, py = zip(*picked, strict=True)
        ax.scatter(px, py, s=60, facecolors="none", edgecolors="red", label="chosen K")
    if tau is not None:
        ax.axhline(tau, color="black", ls="--", lw=1, label=f"tau = {tau:g} (score of K=1)")
    ax.set_xlabel("layer (0 = shallowest)")
    ax.set_ylabel("silhouette of cut(K)")
    layer_ticks(ax, len(layers))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(ks) > 6 else 1)
    ax.set_title("layer-wise silhouettes: the scale tau is compared with")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def allocation_counts(results: Mapping[str, Any]) -> tuple[int, dict[float, np.ndarray]]:
    """Per budget group, (L,): the group's client-rounds that trained each layer over the run."""
    budget = {str(c["id"]): float(c.get("budget", 1.0)) for c in results["clients"]}
    n_layers = int(results.get("params", {}).get("adapted_layers") or 0)
    rows = [r.get("trained_layers") or {} for r in results["rounds"]]
    n_layers = max([n_layers, *(max(v) + 1 for r in rows for v in r.values() if v)])
    counts = {b: np.zeros(n_layers) for b in sorted(set(budget.values()))}
    for row in rows:
        for cid, layers in row.items():
            counts[budget[cid]][layers] += 1.0
    return n_layers, counts


def allocation_geometry(results: Mapping[str, Any]) -> tuple[int, dict[float, np.ndarray]]:
    """Per budget group, (L,): clients of the group training each layer, averaged over the rounds."""
    n_layers, counts = allocation_counts(results)
    n_rounds = max(len(results["rounds"]), 1)
    return n_layers, {b: c / n_rounds for b, c in counts.items()}


def plot_allocation(results: Mapping[str, Any], path: Path) -> None:
    """The allocation's geometry: per layer, how many clients trained it per round, one line per budget."""
    n_layers, groups = allocation_geometry(results)
    settings = allocation_of(results)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = np.arange(n_layers)
    for budget, counts in groups.items():
        ax.plot(x, counts, marker="o", ms=3, label=f"budget {budget:g}")
    ax.plot(x, sum(groups.values()), color="black", ls="--", lw=1, label="all clients")
    ax.set_xlabel("layer (0 = shallowest)")
    ax.set_ylabel("clients training it, per round")
    ax.set_ylim(bottom=0)
    layer_ticks(ax, n_layers)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"allocation: {settings.get('strategy', 'none')}, {settings.get('pattern', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(
    results: Mapping[str, Any], out: Path, others: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Path]:
    """Every picture that fits these results (``others``: runs drawn beside it); returns the files written."""
    written = [out / f"{metric_of(results)}.png"]
    plot_scores(results, written[0], others)
    topology = results.get("topology")
    if topology is not None:
        n = len(results["clients"])
        plot_k_per_layer(topology, out / "k_per_layer.png", n)
        written.append(out / "k_per_layer.png")
        if topology.get("linkage") is not None and n > 1:
            plot_tree(topology, out / "tree.png", leaf_labels(results["clients"]))
            written.append(out / "tree.png")
        if any(topology.get("silhouettes") or []):
            tau = (results["config"].get(results["method"]) or {}).get("tau")
            plot_silhouettes(topology, out / "silhouettes.png", tau)
            written.append(out / "silhouettes.png")
    if allocates(results):
        plot_allocation(results, out / "allocation.png")
        written.append(out / "allocation.png")
    return written
