"""Batched greedy generation: prompts sorted by length, left-padded, decoded with a KV cache.

Why not one prompt at a time: on CPU a decoding step reads every weight once whatever the batch, so a
batch of 16 costs little more than one row (docs/PERFORMANCE.md has the ratio). Left padding keeps every
row's last prompt token in the last column, where the next token is read; the attention mask hides the
pads and transformers derives position ids from it, so a row's output does not depend on its batch
(tested against one-at-a-time generation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import GenerationConfig

from .tasks.base import pad_rows


@torch.inference_mode()
def greedy(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    stop: Sequence[int],
    pad: int,
    max_new_tokens: int,
    batch_size: int,
) -> list[list[int]]:
    """The greedy continuation of every prompt (token ids), cut before the first ``stop`` token."""
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=list(stop), pad_token_id=pad
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out: list[list[int]] = [[] for _ in prompts]
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_rows([prompts[i] for i in idx], pad, left=True)  # (b, t)
        generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)  # type: ignore[operator]
        for row, i in enumerate(idx):
            out[i] = cut_at_stop(generated[row, ids.shape[1] :].tolist(), stop)
    return out


def cut_at_stop(tokens: list[int], stop: Sequence[int]) -> list[int]:
    """``tokens`` up to (not including) the first stop token; finished rows are padded after it."""
    stops = set(stop)
    for j, t in enumerate(tokens):
        if t in stops:
            return tokens[:j]
    return tokens
