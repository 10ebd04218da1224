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


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer, 32-wide random Llama with SmolLM2's tokenizer (and chat template), saved as a folder.

    The tokenizer comes from the packaged smollm2 default, so this also de-quantises (and caches) it once.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from fedtreelora.models import resolve

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(resolve("smollm2"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True, max_position_embeddings=512,
        initializer_range=0.3,  # transformers' 0.02 makes a tiny random model say "\n" to every prompt
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_flan(folder: Path, task: str, group: str, n_train: int, n_test: int) -> Path:
    """A small task in the FLAN schema: copy a word list, with two references per test row."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n):
                words = " ".join(WORDS[(i * 3 + j) % 10] for j in range(3 + i % 3))
                row = {"instruction": f"Repeat: {words}", "output": words, "task": task, "group": group}
                row["references"] = [words, words.upper()]
                f.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_flan(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four FLAN-schema task folders in two groups, laid out as ../shared/data/flan/<group>/<task>."""
    root = tmp_path_factory.mktemp("flan")
    specs = [("copy_a", "editing"), ("copy_b", "editing"), ("copy_c", "sentiment"), ("copy_d", "sentiment")]
    return [write_flan(root / group / task, task, group, 12, 6) for task, group in specs]
