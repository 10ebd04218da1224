"""Task = how examples become batches and how a model is scored; the training loop knows neither.

Only sequence classification exists so far; a generation task (causal LM, ROUGE) plugs in with the same
two methods, so the runtimes and the training loop stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from .data import Example

Batch = dict[str, Tensor]


@dataclass
class Encoded:
    """A client's pre-tokenised split: token ids per example (unpadded) and labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: Tensor  # (n,)

    def __len__(self) -> int:
        return len(self.input_ids)


class ClassificationTask:
    """Sentence (pair) classification scored by accuracy."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def encode(self, examples: Sequence[Example]) -> Encoded:
        """Tokenise once per run; batches are padded per batch, to their own longest row."""
        texts = [e.text for e in examples]
        pairs = [e.text_pair for e in examples]
        kwargs = {"truncation": True, "max_length": self.max_length}
        if any(p is not None for p in pairs):
            enc = self.tokenizer(texts, [p or "" for p in pairs], **kwargs)
        else:
            enc = self.tokenizer(texts, **kwargs)
        return Encoded(
            input_ids=enc["input_ids"],
            token_type_ids=enc.get("token_type_ids"),
            labels=torch.tensor([e.label for e in examples], dtype=torch.long),
        )

    def batches(
        self,
        data: Encoded,
        batch_size: int,
        generator: torch.Generator | None = None,
        group_by_length: bool = False,
    ) -> Iterator[Batch]:
        """Mini-batches in a seeded random order (``generator``) or in order (``None``).

        ``group_by_length`` batches rows of similar length together (then shuffles the batches): every
        batch pads to its longest row, and on GLUE padding otherwise doubles the tokens computed.
        """
        n = len(data)
        order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
        if group_by_length:
            order.sort(key=lambda i: len(data.input_ids[i]))  # stable: equal lengths keep the random order
        chunks = [order[start : start + batch_size] for start in range(0, n, batch_size)]
        if group_by_length and generator is not None:
            chunks = [chunks[j] for j in torch.randperm(len(chunks), generator=generator).tolist()]
        for idx in chunks:
            yield self.collate(data, idx)

    def collate(self, data: Encoded, idx: list[int]) -> Batch:
        """Rows ``idx`` padded to the longest of them."""
        pad = self.tokenizer.pad_token_id or 0
        longest = max(len(data.input_ids[i]) for i in idx)
        ids = torch.full((len(idx), longest), pad, dtype=torch.long)  # (b, t)
        mask = torch.zeros((len(idx), longest), dtype=torch.long)
        types = torch.zeros((len(idx), longest), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = data.input_ids[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            if data.token_type_ids is not None:
                types[row, : len(seq)] = torch.tensor(data.token_type_ids[i])
        batch = {"input_ids": ids, "attention_mask": mask, "labels": data.labels[idx]}
        if data.token_type_ids is not None:
            batch["token_type_ids"] = types
        return batch

    @torch.inference_mode()
    def score(self, model: nn.Module, data: Encoded, batch_size: int) -> float:
        """Accuracy of ``model`` on ``data``; rows are grouped by length, which changes nothing but speed."""
        model.eval()
        correct = 0
        for batch in self.batches(data, batch_size, group_by_length=True):
            labels = batch.pop("labels")
            logits = model(**batch).logits  # (b, num_labels)
            correct += int((logits.argmax(-1) == labels).sum())
        return correct / max(len(data), 1)
