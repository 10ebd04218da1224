"""Evaluation speed: our batched greedy generation against ``model.generate`` one prompt at a time.

    python benchmarks/bench_generation.py [--prompts 32] [--max-new-tokens 48] [--batch-size 16]

SmolLM2-135M-Instruct (packaged), real FLAN test prompts through its chat template (8 per task from four
tasks, one per group). The reference is what a user writes first: for each prompt, ``generate`` with
greedy decoding and the same token cap, no padding. Both must give identical tokens; prints
{"ratio": ours / theirs in generated tokens per second, ...}; goal >= 4.
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
    parser.add_argument("--prompts", type=int, default=32)
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
    prompts = [p for c in clients for p in task.encode(c.test).prompts]  # type: ignore[attr-defined]
    stop, pad = task.stop_tokens(model), task.pad  # type: ignore[attr-defined]

    def ours() -> list[list[int]]:
        return greedy(
            model, prompts, stop=stop, pad=pad, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
        )

    @torch.inference_mode()
    def one_at_a_time() -> list[list[int]]:
        out = []
        for p in prompts:
            ids = torch.tensor([p])
            generated = model.generate(
                input_ids=ids, max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=stop,
                pad_token_id=pad,
            )  # fmt: skip
            out.append(cut_at_stop(generated[0, len(p) :].tolist(), stop))
        return out

    def timed(fn):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - start

    ours_s, theirs_s, same = [], [], True
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
        a, ta = timed(ours)
        b, tb = timed(one_at_a_time)
        ours_s.append(ta)
        theirs_s.append(tb)
        same = same and a == b
    tokens = sum(len(t) for t in a)
    emit(
        ratio=round(statistics.median(theirs_s) / statistics.median(ours_s), 2),
        identical_outputs=same,
        batched_tokens_per_second=round(tokens / statistics.median(ours_s), 1),
        one_at_a_time_tokens_per_second=round(tokens / statistics.median(theirs_s), 1),
        prompts=len(prompts),
        generated_tokens=tokens,
        mean_prompt_tokens=round(sum(map(len, prompts)) / len(prompts), 1),
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        repeats=args.repeats,
        threads=torch.get_num_threads(),
    )


if __name__ == "__main__":
    main()
