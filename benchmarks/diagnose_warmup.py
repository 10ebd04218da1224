"""Why does FedTreeLoRA lose accuracy right after its warmup? Per-client measurements (issue 10).

For each seed the warmup runs exactly as in the runtime. From the same warmup LoRAs every client is then
scored, with no further training, on its own test split under several models:

  own         its own warmup LoRA (what local training reached)
  sent        what the server sends after the warmup: cluster average + alpha_init x external expert
  cluster     the cluster average alone (external expert dropped)
  own+ext     its own LoRA with the external expert added (as if its cluster were itself)
  global      FedAvg of every client on every layer (what K = 1 everywhere gives)

and after one federated round of local training, under several arms (same seeds, same batches):

  default     as the method does it (start from `sent`, alpha 0.5, alpha at the LoRA rate)
  alpha0.05   the external expert enters at alpha = 0.05 instead of 0.5
  mixer_lr    alpha trains at train.mixer_lr (Adam moves a parameter ~lr per step: at 3e-3 alpha is stuck)
  lr/3        a smaller step for the first federated round (a fresh AdamW restarts at full size)
  from_own    start from the client's own LoRA + external (no cluster averaging)
  local       keep training the own LoRA alone (what the client had without federating)

For each arm: accuracy after training (before the server re-averages) and after the round's aggregation
(what the runtime reports). Each client's share of test predictions equal to its majority training label
shows whether a model follows the client's prior. The label-distribution distance between a client and
its cluster (total variation, mean over layers) tests the "opposite priors in one cluster" explanation.

    python benchmarks/diagnose_warmup.py --config examples/default.toml --seeds 0 1 2 --out FILE.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedtreelora.adapters import State
from fedtreelora.client import client_round
from fedtreelora.config import RunConfig, TrainConfig, load_config
from fedtreelora.federation import Federation, prepare
from fedtreelora.methods import Method, options_for
from fedtreelora.runtime.embedded import client_seed

Arm = tuple[str, Callable[[Method, TrainConfig], tuple[Method, TrainConfig]], str]


def predict(fed: Federation, method: Method, kept: Mapping[str, torch.Tensor], payload: State, cid: int):
    """(accuracy, share of predictions equal to the client's majority training label)."""
    fed.host.load(method.client_state(kept, payload), lambda name: False, method.mixer)
    data = fed.test[cid]
    preds, labels = [], []
    with torch.inference_mode():
        for batch in fed.task.batches(data, fed.cfg.train.eval_batch_size, group_by_length=True):
            labels.append(batch.pop("labels"))
            preds.append(fed.host.model(**batch).logits.argmax(-1))
    p, y = torch.cat(preds), torch.cat(labels)
    counts = fed.clients[cid].label_counts
    majority = max(range(len(counts)), key=counts.__getitem__)
    return float((p == y).float().mean()), float((p == majority).float().mean())


def label_dist(counts: list[int], k: int) -> np.ndarray:
    c = np.zeros(k)
    c[: len(counts)] = counts
    return c / c.sum()


def prior_mismatch(fed: Federation, partitions: list[list[int]]) -> dict[int, float]:
    """Per client: total-variation distance between its label distribution and its cluster's pooled one."""
    k = max(len(c.label_counts) for c in fed.clients)
    counts = {c.client_id: np.asarray(label_dist(c.label_counts, k)) * len(c.train) for c in fed.clients}
    ids = [c.client_id for c in fed.clients]
    out = {}
    for pos, cid in enumerate(ids):
        dists = []
        for part in partitions:
            pooled = sum(counts[ids[j]] for j in range(len(ids)) if part[j] == part[pos])
            dists.append(0.5 * np.abs(counts[cid] / counts[cid].sum() - pooled / pooled.sum()).sum())
        out[cid] = float(np.mean(dists))
    return out


def without(state: State, word: str) -> State:
    return {k: v for k, v in state.items() if word not in k}


ARMS: list[Arm] = [
    ("default", lambda m, t: (m, t), "sent"),
    ("alpha0.05", lambda m, t: (with_options(m, alpha_init=0.05), t), "sent"),
    ("mixer_lr=0.1", lambda m, t: (m, dataclasses.replace(t, mixer_lr=0.1)), "sent"),
    ("lr/3", lambda m, t: (m, dataclasses.replace(t, lr=t.lr / 3)), "sent"),
    ("from_own", lambda m, t: (m, t), "own+ext"),
    ("local", lambda m, t: (m, t), "own"),
]


def with_options(method: Method, **changes: Any) -> Method:
    clone = copy.copy(method)
    clone.opt = dataclasses.replace(method.opt, **changes)  # type: ignore[attr-defined]
    return clone


def diagnose(cfg: RunConfig) -> dict[str, Any]:
    fed = prepare(cfg)
    method, ids = fed.method, [c.client_id for c in fed.clients]
    warmup = method.opt.warmup_rounds  # type: ignore[attr-defined]
    uploads: dict[int, State] = {}
    for rnd in range(warmup):
        plan = method.plan(rnd)
        for cid in ids:
            res = client_round(
                fed.host, fed.task, fed.train[cid], method, plan, fed.kept[cid], method.payload(cid),
                cfg.train, client_seed(cfg.seed, rnd, cid),
            )  # fmt: skip
            fed.kept[cid], uploads[cid] = res.keep, res.upload
    own = {cid: uploads[cid] for cid in ids}
    method.aggregate(warmup - 1, uploads)
    topology = method.topology()
    assert topology is not None
    sent = {cid: method.payload(cid) for cid in ids}
    everyone = method.fedavg(own)
    starts = {
        "own": {cid: own[cid] for cid in ids},
        "sent": sent,
        "cluster": {cid: without(sent[cid], "external") for cid in ids},
        "own+ext": {cid: {**sent[cid], **own[cid]} for cid in ids},
        "global": {cid: everyone for cid in ids},
    }
    scores: dict[str, dict[int, tuple[float, float]]] = {
        name: {cid: predict(fed, method, fed.kept[cid], payloads[cid], cid) for cid in ids}
        for name, payloads in starts.items()
    }
    rnd, alpha_range = warmup, {}
    for arm, change, start in ARMS:
        m, tcfg = change(copy.deepcopy(method), cfg.train)
        plan = m.plan(rnd)
        arm_uploads, kept = {}, {}
        for cid in ids:
            res = client_round(
                fed.host, fed.task, fed.train[cid], m, plan, fed.kept[cid], starts[start][cid], tcfg,
                client_seed(cfg.seed, rnd, cid),
            )  # fmt: skip
            arm_uploads[cid], kept[cid] = res.upload, res.keep
        trained = {cid: {**starts[start][cid], **arm_uploads[cid]} for cid in ids}
        scores[f"{arm}: trained"] = {cid: predict(fed, m, kept[cid], trained[cid], cid) for cid in ids}
        if start == "sent":
            m.aggregate(rnd, arm_uploads)
            scores[f"{arm}: round"] = {cid: predict(fed, m, kept[cid], m.payload(cid), cid) for cid in ids}
        alphas = [torch.sigmoid(v).item() for k in ids for n, v in kept[k].items() if ".mix.alpha" in n]
        if alphas:
            alpha_range[arm] = [min(alphas), max(alphas)]
    return {
        "seed": cfg.seed,
        "k_per_layer": topology.k_per_layer,
        "partitions": topology.partitions,
        "silhouettes": topology.to_json()["silhouettes"],
        "weights": [method.weights[c] for c in ids],
        "label_counts": {c.client_id: c.label_counts for c in fed.clients},
        "majority": {str(c.client_id): fed.task.baseline(c) for c in fed.clients},
        "mismatch": {str(c): v for c, v in prior_mismatch(fed, topology.partitions).items()},
        "alpha_after_one_round": alpha_range,
        "scores": {k: {str(c): v for c, v in d.items()} for k, d in scores.items()},
    }


def summary(runs: list[dict[str, Any]]) -> str:
    """One table: per model/arm, mean accuracy and majority-share over clients, per seed and averaged."""
    names = [k for k in runs[0]["scores"]]
    lines = ["| model | " + " | ".join(f"seed {r['seed']}" for r in runs) + " | mean | follows prior |"]
    lines.append("|---" * (len(runs) + 3) + "|")
    for name in names:
        accs, shares = [], []
        for r in runs:
            vals = list(r["scores"][name].values())
            accs.append(statistics.fmean(v[0] for v in vals))
            shares.append(statistics.fmean(v[1] for v in vals))
        cells = " | ".join(f"{100 * a:.1f}" for a in accs)
        mean, share = 100 * statistics.fmean(accs), 100 * statistics.fmean(shares)
        lines.append(f"| {name} | {cells} | {mean:.1f} | {share:.0f} % |")
    maj = [statistics.fmean(r["majority"].values()) for r in runs]
    cells = " | ".join(f"{100 * a:.1f}" for a in maj)
    lines.append(f"| *majority label* | {cells} | {100 * statistics.fmean(maj):.1f} | 100 % |")
    return "\n".join(lines)


def correlation(runs: list[dict[str, Any]]) -> str:
    """Across all clients and seeds: does the loss own -> sent follow the client's prior mismatch?"""
    loss, mismatch = [], []
    for r in runs:
        for c, (acc, _) in r["scores"]["own"].items():
            loss.append(acc - r["scores"]["sent"][c][0])
            mismatch.append(r["mismatch"][c])
    rho = float(np.corrcoef(mismatch, loss)[0, 1])
    return f"Pearson r(prior mismatch, accuracy lost own -> sent) = {rho:.2f} over {len(loss)} clients"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = []
    if args.out.exists():
        runs = json.loads(args.out.read_text())["runs"]  # resumable, seed by seed
    for seed in args.seeds:
        if any(r["seed"] == seed for r in runs):
            continue
        start = time.perf_counter()
        cfg = load_config(
            args.config, [*args.overrides, f"seed={seed}", "federation.workers=0"], options_for()
        )
        runs.append(diagnose(cfg))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"config": str(args.config), "overrides": args.overrides, "runs": runs})
        )
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    print(summary(runs))
    print(correlation(runs))
    for r in runs:
        alpha = r["alpha_after_one_round"]
        print(f"seed {r['seed']}: K per layer {r['k_per_layer']}, alpha after one round {alpha}")


if __name__ == "__main__":
    main()
