"""Sentence (pair) classification on GLUE-schema rows, scored by accuracy.

Row schema (one JSON object per line)::

    {"text": str, "text_pair": str (pair tasks only), "label": int, "label_name": str}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from ..data import ClientData, DataError, Row, TaskData, label_count
from ..models import load_classifier
from .base import Batch, Loaded, Score, Task, pad_rows, register

if TYPE_CHECKING:
    from ..config import RunConfig

_REQUIRED_KEYS = "'text' and 'label' are required; 'text_pair' and 'label_name' are optional"


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    text_pair: str | None = None


@dataclass
class Encoded:
    """A client's pre-tokenised split: token ids per example (unpadded) and labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: Tensor  # (n,)

    def __len__(self) -> int:
        return len(self.input_ids)


@register
class ClassificationTask(Task):
    """A sequence classifier whose head has as many outputs as the largest task has classes."""

    kind = "classification"
    peft_task_type = "SEQ_CLS"  # what an exported adapter declares (PEFT's TaskType)
    metric = "accuracy"
    labelled = True
    schema = "{text, text_pair?, label, label_name?} (GLUE)"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    @staticmethod
    def claims(row: Mapping[str, Any]) -> bool:
        return "text" in row and "label" in row

    @staticmethod
    def parse_row(row: dict[str, Any], where: str) -> Row:
        for key in ("text", "label"):
            if key not in row:
                raise DataError(f"{where}: missing key {key!r} ({_REQUIRED_KEYS})")
        text, label = row["text"], row["label"]
        text_pair, name = row.get("text_pair"), row.get("label_name")
        if not isinstance(text, str):
            raise DataError(f"{where}: 'text' must be a string, got {type(text).__name__}")
        # bool is an int subclass in Python; a true/false label is a schema mistake, not class 0/1.
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise DataError(f"{where}: 'label' must be a non-negative integer, got {label!r}")
        if text_pair is not None and not isinstance(text_pair, str):
            raise DataError(f"{where}: 'text_pair' must be a string, got {type(text_pair).__name__}")
        if name is not None and not isinstance(name, str):
            raise DataError(f"{where}: 'label_name' must be a string, got {type(name).__name__}")
        return Row(Example(text=text, label=label, text_pair=text_pair), label=label, label_name=name)

    @classmethod
    def load(cls, cfg: RunConfig, tasks: Sequence[TaskData]) -> Loaded:
        m = cfg.model
        model, tokenizer, head = load_classifier(
            m.name, label_count(tasks), cfg.seed, m.head_init_std or None, m.backbone_dropout
        )
        return Loaded(cls(tokenizer, m.max_length or 64), model, head)

    def encode(self, examples: Sequence[Example]) -> Encoded:
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

    def collate(self, data: Encoded, idx: list[int]) -> Batch:
        """Rows ``idx`` padded to the longest of them."""
        pad = self.tokenizer.pad_token_id or 0
        ids, mask = pad_rows([data.input_ids[i] for i in idx], pad)  # (b, t)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": data.labels[idx]}
        if data.token_type_ids is not None:
            batch["token_type_ids"], _ = pad_rows([data.token_type_ids[i] for i in idx], 0)
        return batch

    @torch.inference_mode()
    def score(self, model: nn.Module, data: Encoded, batch_size: int) -> Score:
        """Accuracy of ``model`` on ``data``; rows are grouped by length, which changes nothing but speed."""
        model.eval()
        correct = 0
        for batch in self.batches(data, batch_size, group_by_length=True):
            labels = batch.pop("labels")
            logits = model(**batch).logits  # (b, num_labels)
            correct += int((logits.argmax(-1) == labels).sum())
        return Score(correct / max(len(data), 1))

    def baseline(self, client: ClientData) -> float:
        """Test accuracy of always answering the client's most frequent training label."""
        majority = max(range(len(client.label_counts)), key=client.label_counts.__getitem__)
        return sum(e.label == majority for e in client.test) / max(len(client.test), 1)
