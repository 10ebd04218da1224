"""Batched greedy generation: prompts sorted by length, left-padded, decoded with a KV cache.

Why not one prompt at a time: on CPU a decoding step of 16 rows costs about twice a step of one, so
batching pays per generated token (docs/PERFORMANCE.md §8). Left padding keeps every row's last prompt
token in the last column, where the next token is read; the attention mask hides the pads and the position
ids count only real tokens, so a row's answer does not depend on its batch (tested against one-at-a-time
``generate``). Rows that have answered leave the batch and the cache at once: answers of one client's task
vary in length, and ``generate`` would keep computing the finished rows until the longest ends. The
tokens every prompt starts with (the chat template's system turn: 24-33 tokens of 50-90 on FLAN) are read
once, and their KV cache is copied into every batch: a batch's rows then read [shared prefix][pads][own
tokens], which the mask and position ids handle as they handle left padding.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
from torch import nn
from transformers import DynamicCache

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
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out: list[list[int]] = [[] for _ in prompts]
    stops = torch.tensor(sorted(set(stop)))
    accepts = inspect.signature(model.forward).parameters
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}
    # transformers 5.24 renamed the KV-cache argument to `cache` (5.23 silently ignores `cache`, 5.24 warns
    # on `past_key_values`): pass the one this model's forward names.
    cache_arg = "cache" if "cache" in accepts else "past_key_values"
    model.eval()
    config = getattr(model, "config", None)
    prefix = shared_prefix(prompts)
    shared = None  # the KV cache of the prefix every prompt starts with (chat template, system turn)
    if len(prefix) >= MIN_SHARED:
        shared = DynamicCache(config=config)
        ones, where = torch.ones(1, len(prefix), dtype=torch.long), torch.arange(len(prefix))[None]
        model(
            input_ids=torch.tensor([prefix]), attention_mask=ones, position_ids=where, use_cache=True,
            **{cache_arg: shared}, **last_only,
        )  # fmt: skip
    skip = len(prefix) if shared is not None else 0
    for start in range(0, len(order), batch_size):
        rows = torch.tensor(order[start : start + batch_size])  # the prompt each batch row answers
        ids, mask = pad_rows([prompts[i][skip:] for i in rows.tolist()], pad, left=True)  # (b, t)
        position = skip + (mask.cumsum(-1) - 1).clamp(min=0)  # pads count nothing; they are masked anyway
        if shared is not None:  # rows read [prefix][pads][own tokens]: the pads sit after the shared part
            cache = copy.deepcopy(shared)
            cache.batch_repeat_interleave(len(rows))
            mask = torch.cat([torch.ones(len(rows), skip, dtype=mask.dtype), mask], dim=1)
        else:
            cache = DynamicCache(config=config)
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, **{cache_arg: cache},
            **last_only,
        ).logits[:, -1]  # fmt: skip  # (b, vocab)
        position = position[:, -1:]
        for step in range(max_new_tokens):
            token = logits.argmax(-1)  # (b,)
            done = torch.isin(token, stops)
            for row, t, d in zip(rows.tolist(), token.tolist(), done.tolist(), strict=True):
                if not d:
                    out[row].append(t)
            if step == max_new_tokens - 1 or bool(done.all()):
                break
            if bool(done.any()):  # finished rows leave the batch and the cache
                keep = (~done).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                rows, token, mask, position = rows[keep], token[keep], mask[keep], position[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (b, t + step + 1)
            position = position + 1
            logits = model(
                input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                **{cache_arg: cache},
            ).logits[:, -1]  # fmt: skip  # (b, vocab)
    return out


MIN_SHARED = 8  # tokens: below this, a separate forward for the shared prefix costs more than it saves


def shared_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The tokens every prompt starts with, leaving each prompt at least one token of its own (the last
    prompt token's logits give the first answer token)."""
    if len(prompts) < 2:
        return []
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return list(first[:n])


def cut_at_stop(tokens: list[int], stop: Sequence[int]) -> list[int]:
    """``tokens`` up to (not including) the first stop token (e.g. ``generate``'s padded rows)."""
    stops = set(stop)
    for j, t in enumerate(tokens):
        if t in stops:
            return tokens[:j]
    return tokens
