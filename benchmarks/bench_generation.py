"""Evaluation speed: our batched greedy generation against ``model.generate`` one prompt at a time.

    python benchmarks/bench_generation.py [--prompts 32] [--max-new-tokens 48] [--batch-size 16]

SmolLM2-135M-Instruct (packaged), real FLAN test prompts through its chat template (16 per task from four
tasks, one per group), scored client by client as the runtime does (a client holds one task). The
reference is what a user writes first: for each prompt, ``generate`` with greedy decoding and the same
token cap, no padding. Both must give identical tokens; prints {"ratio": ours / theirs in generated tokens
per second, ...}; goal >= 4.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import emit

from fedtreelora.config import load_config
from fedtreelora.federation import load_clients
from fedtreelora.generate import cut_at_stop, greedy
from fedtreelora.methods import options_for

FLAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "flan"
TASKS = ["text_editing/jfleg", "struct_to_text/e2e", "sentiment/sst2", "commonsense/siqa"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    per_task = args.prompts // len(TASKS)
    sets = ["model.name='smollm2'", "data.partition='task'", f"data.n_clients={len(TASKS)}"]
    sets += [f"data.tasks={[str(FLAN / t) for t in TASKS]!r}", "data.n_train=1", f"data.n_test={per_task}"]
    sets += [f"generation.max_new_tokens={args.max_new_tokens}"]
    cfg = load_config(None, sets, options_for())
    kind, tasks, clients = load_clients(cfg)
    loaded = kind.load(cfg, tasks)
    task, model = loaded.task, loaded.model
    per_client = [task.encode(c.test).prompts for c in clients]  # type: ignore[attr-defined]
    stop, pad = task.stop_tokens(model), task.pad  # type: ignore[attr-defined]
    n, size = args.max_new_tokens, args.batch_size

    def ours(prompts: list[list[int]]) -> list[list[int]]:
        return greedy(model, prompts, stop=stop, pad=pad, max_new_tokens=n, batch_size=size)

    @torch.inference_mode()
    def one_at_a_time(prompts: list[list[int]]) -> list[list[int]]:
        out = []
        for p in prompts:
            generated = model.generate(
                input_ids=torch.tensor([p]),
                max_new_tokens=n,
                do_sample=False,
                eos_token_id=stop,
                pad_token_id=pad,
            )
            out.append(cut_at_stop(generated[0, len(p) :].tolist(), stop))
        return out

    # per client (one task each): seconds of each repeat, ours and theirs, alternating who goes first
    ours_s: dict[str, list[float]] = {c.task: [] for c in clients}
    theirs_s: dict[str, list[float]] = {c.task: [] for c in clients}
    tokens: dict[str, int] = {}
    same = True
    for rep in range(args.repeats):
        for client, prompts in zip(clients, per_client, strict=True):
            arms = [(ours, ours_s), (one_at_a_time, theirs_s)]
            results = []
            for fn, store in arms if rep % 2 == 0 else arms[::-1]:
                start = time.perf_counter()
                results.append(fn(prompts))
                store[client.task].append(time.perf_counter() - start)
            same = same and results[0] == results[1]
            tokens[client.task] = sum(map(len, results[0]))
    med_ours = {t: statistics.median(v) for t, v in ours_s.items()}
    med_theirs = {t: statistics.median(v) for t, v in theirs_s.items()}
    total = sum(tokens.values())
    emit(
        ratio=round(sum(med_theirs.values()) / sum(med_ours.values()), 2),
        identical_outputs=same,
        batched_tokens_per_second=round(total / sum(med_ours.values()), 1),
        one_at_a_time_tokens_per_second=round(total / sum(med_theirs.values()), 1),
        ratio_per_task={t: round(med_theirs[t] / med_ours[t], 2) for t in tokens},
        tokens_per_answer={t: round(tokens[t] / len(p), 1) for t, p in zip(tokens, per_client, strict=True)},
        prompts=sum(map(len, per_client)),
        generated_tokens=total,
        max_new_tokens=n,
        batch_size=size,
        repeats=args.repeats,
        threads=torch.get_num_threads(),
    )


if __name__ == "__main__":
    main()
