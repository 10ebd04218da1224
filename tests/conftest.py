"""Shared fixtures: a tiny randomly initialised BERT and tiny real-schema data sets."""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WORDS = ["good", "bad", "great", "awful", "fine", "poor", "film", "plot", "actor", "story"]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer, 32-wide random BERT with the packaged MiniLM tokenizer, saved as a local folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from fedtreelora.models import resolve

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve("minilm")).save_pretrained(folder)
    return folder


def write_task(folder: Path, n_train: int, n_test: int, pair: bool = False) -> Path:
    """A small two-label task in the glue schema; the label is whether the first word is 'positive'."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n):
                label = i % 2
                text = ("good " if label else "bad ") + " ".join(WORDS[(i * 7 + j) % 10] for j in range(4))
                row = {"text": text, "label": label, "label_name": ["negative", "positive"][label]}
                if pair:
                    row["text_pair"] = WORDS[i % 10]
                f.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_task(tmp_path_factory.mktemp("data") / "toy", 200, 100)
