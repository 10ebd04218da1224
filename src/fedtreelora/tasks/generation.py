"""Instruction following on a causal LM (FLAN-schema rows), scored by ROUGE-1 against the references.

Row schema (one JSON object per line)::

    {"instruction": str, "output": str, "references": [str, ...], "task": str, "group": str}

``output`` is the training target; a generation is scored against every string of ``references`` and keeps
the best ROUGE-1 F1 (stemmed). Missing or empty ``references`` fall back to ``[output]``.

Prompts go through the tokenizer's chat template (a user turn, then the assistant's opening); a model
without one gets a plain ``### Instruction / ### Response`` prompt. The loss covers the response tokens
and the end-of-turn token only: prompt and padding are labelled -100.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..config import ConfigError
from ..data import DataError, Row, TaskData
from ..generate import greedy
from ..models import load_causal_lm
from .base import Batch, Loaded, Score, Task, pad_rows, register

if TYPE_CHECKING:
    from ..config import RunConfig

IGNORE = -100  # the label transformers' causal-LM loss skips
PLAIN_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"  # for models without a chat template
KEEP_TAIL = 32  # tokens kept at a truncated prompt's end: the template's assistant opening and the question


@dataclass(frozen=True)
class Instruction:
    instruction: str
    output: str
    references: tuple[str, ...]


@dataclass
class EncodedText:
    """A client's pre-tokenised split: prompt + response per row (training) and the prompts alone."""

    input_ids: list[list[int]]  # prompt + response + end of turn
    labels: list[list[int]]  # IGNORE over the prompt, the token ids over the response
    prompts: list[list[int]]  # what generation starts from
    examples: list[Instruction]

    def __len__(self) -> int:
        return len(self.input_ids)


def truncate_middle(ids: list[int], limit: int) -> list[int]:
    """``ids`` cut to ``limit`` tokens by dropping the middle: the start (system turn, task statement) and
    the end (the question, the assistant's opening) are what a prompt needs most."""
    if len(ids) <= limit:
        return ids
    tail = min(KEEP_TAIL, limit // 2)
    return ids[: limit - tail] + ids[len(ids) - tail :]


def fit(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Prompt and response within ``max_length`` tokens: the response keeps at least a quarter of them
    (cut at its end), the prompt gets the rest (cut in the middle)."""
    if len(prompt) + len(response) <= max_length:
        return prompt, response
    response = response[: max(max_length - len(prompt), max_length // 4)]
    return truncate_middle(prompt, max_length - len(response)), response


def rouge1(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-1 F1 with Porter stemming (rouge-score, as the paper), the best over ``references``."""
    return max(_scorer().score(ref, prediction)["rouge1"].fmeasure for ref in references)


@functools.cache
def _scorer() -> Any:
    from rouge_score.rouge_scorer import RougeScorer  # imports nltk: only generation runs pay for it

    return RougeScorer(["rouge1"], use_stemmer=True)


@register
class GenerationTask(Task):
    """A causal LM fine-tuned on instructions; greedy generations scored by ROUGE-1."""

    kind = "generation"
    peft_task_type = "CAUSAL_LM"  # what an exported adapter declares (PEFT's TaskType)
    metric = "rouge1"
    labelled = False
    schema = "{instruction, output, references?, task?, group?} (FLAN)"

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, max_length: int, max_new_tokens: int, samples: int
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.samples = samples
        if tokenizer.eos_token_id is None:
            raise ConfigError("model.name: its tokenizer has no end-of-sequence token, so answers never end")
        self.end_of_turn: int = tokenizer.eos_token_id  # chat models' eos is their end-of-turn token
        self.pad: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_of_turn

    @staticmethod
    def claims(row: Mapping[str, Any]) -> bool:
        return "instruction" in row

    @staticmethod
    def parse_row(row: dict[str, Any], where: str) -> Row:
        for key in ("instruction", "output"):
            if not isinstance(row.get(key), str):
                got = "missing" if key not in row else f"a {type(row[key]).__name__}"
                need = "FLAN rows need instruction and output"
                raise DataError(f"{where}: {key!r} must be a string, got {got} ({need})")
        refs = row.get("references") or [row["output"]]  # documented fallback: score against the target
        if not (isinstance(refs, list) and all(isinstance(r, str) for r in refs)):
            raise DataError(f"{where}: 'references' must be a list of strings, got {refs!r}")
        group = row.get("group")
        example = Instruction(row["instruction"], row["output"], tuple(refs))
        return Row(example, group=group if isinstance(group, str) else None)

    @classmethod
    def load(cls, cfg: RunConfig, tasks: Sequence[TaskData]) -> Loaded:
        m, g = cfg.model, cfg.generation
        model, tokenizer = load_causal_lm(m.name, cfg.seed, m.backbone_dropout)
        return Loaded(cls(tokenizer, m.max_length or 256, g.max_new_tokens, g.samples), model, {})

    def prompt(self, instruction: str) -> list[int]:
        """Token ids of the prompt: the chat template's user turn and assistant opening, or the plain one."""
        if self.tokenizer.chat_template:
            messages = [{"role": "user", "content": instruction}]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = PLAIN_PROMPT.format(instruction=instruction)
        # The template already holds any special tokens the model wants (e.g. Llama-3's begin-of-text).
        special = not self.tokenizer.chat_template
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def encode(self, examples: Sequence[Instruction]) -> EncodedText:
        input_ids, labels, prompts = [], [], []
        for e in examples:
            response = [*self.tokenizer(e.output, add_special_tokens=False)["input_ids"], self.end_of_turn]
            full = self.prompt(e.instruction)  # tokenised once: the training row and the eval prompt share it
            prompt, response = fit(full, response, self.max_length)
            input_ids.append(prompt + response)
            labels.append([IGNORE] * len(prompt) + response)
            # Cut on its own, not as fitted beside the answer: the answer's length must not leak into it.
            prompts.append(truncate_middle(full, self.max_length))
        return EncodedText(input_ids, labels, prompts, list(examples))

    def collate(self, data: EncodedText, idx: list[int]) -> Batch:
        ids, mask = pad_rows([data.input_ids[i] for i in idx], self.pad)  # (b, t), right-padded
        labels, _ = pad_rows([data.labels[i] for i in idx], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def generate(self, model: nn.Module, prompts: Sequence[Sequence[int]], batch_size: int) -> list[str]:
        """Greedy answers to tokenised prompts, decoded without special tokens."""
        tokens = greedy(
            model, prompts, stop=self.stop_tokens(model), pad=self.pad, max_new_tokens=self.max_new_tokens,
            batch_size=batch_size,
        )  # fmt: skip
        return [t.strip() for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]

    def stop_tokens(self, model: nn.Module) -> list[int]:
        """End of turn, plus whatever the model's generation config ends on (e.g. Llama-3's two ids)."""
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        extra = configured if isinstance(configured, list) else [configured] if configured is not None else []
        return sorted({self.end_of_turn, *extra})

    @torch.inference_mode()
    def score(self, model: nn.Module, data: EncodedText, batch_size: int) -> Score:
        answers = self.generate(model, data.prompts, batch_size)
        scores = [rouge1(a, e.references) for a, e in zip(answers, data.examples, strict=True)]
        samples = tuple(
            {"prompt": e.instruction, "output": a, "reference": e.references[0]}
            for a, e in list(zip(answers, data.examples, strict=True))[: self.samples]
        )
        return Score(sum(scores) / max(len(scores), 1), samples)
