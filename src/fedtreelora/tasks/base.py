"""What a task kind is, and the registry runs look task kinds up in.

A task kind (classification, generation) owns everything that differs between them: the row schema of its
data files, which model class to load, how examples become batches, and how a model is scored. The runtimes
and the one training loop call these methods and never branch on which kind runs. A kind file registers
itself with ``@register``; ``fedtreelora.tasks`` imports every module in its folder, so a new kind touches
no other file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import torch
from torch import Tensor, nn

from ..data import ClientData, Row, TaskData

if TYPE_CHECKING:
    from ..config import RunConfig

Batch = dict[str, Tensor]


class Encoded(Protocol):
    """A client's pre-tokenised split; ``input_ids[i]`` is row i's unpadded token ids."""

    input_ids: list[list[int]]

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Score:
    """A client's score under its kind's metric, and a few rows a reader can look at."""

    value: float
    samples: tuple[dict[str, str], ...] = field(default=())


@dataclass(frozen=True)
class Loaded:
    """What ``Task.load`` builds: the task bound to its tokenizer, the model, the model's head."""

    task: Task
    model: nn.Module
    head: dict[str, nn.Parameter]  # parameters outside the backbone (a classifier head); may be empty


class Task(ABC):
    """One task kind: schema, model class, batches and metric."""

    kind: ClassVar[str]  # registry name, the value of ``data.kind``
    peft_task_type: ClassVar[str]  # PEFT's TaskType for an exported adapter (SEQ_CLS, CAUSAL_LM)
    metric: ClassVar[str]  # the name results.json records, e.g. "accuracy", "rouge1"
    labelled: ClassVar[bool]  # rows carry class ids, so label-skew (Dirichlet) partitions apply
    schema: ClassVar[str]  # the row keys, for error messages

    @staticmethod
    @abstractmethod
    def claims(row: Mapping[str, Any]) -> bool:
        """Whether a data row has this kind's schema (the first row of train.jsonl decides)."""

    @staticmethod
    @abstractmethod
    def parse_row(row: dict[str, Any], where: str) -> Row:
        """One JSON object as a ``Row``; a malformed row raises DataError naming ``where`` (file:line)."""

    @classmethod
    @abstractmethod
    def load(cls, cfg: RunConfig, tasks: Sequence[TaskData]) -> Loaded:
        """The model and tokenizer for ``cfg.model`` fitted to this kind (e.g. a head of the right size)."""

    @abstractmethod
    def encode(self, examples: Sequence[Any]) -> Encoded:
        """Tokenise once per run; batches are padded per batch, to their own longest row."""

    @abstractmethod
    def collate(self, data: Any, idx: list[int]) -> Batch:
        """Rows ``idx`` of ``data`` as one training batch: the model's forward returns ``.loss`` on it."""

    @abstractmethod
    def score(self, model: nn.Module, data: Any, batch_size: int) -> Score:
        """The metric of ``model`` on ``data`` (rows grouped by length: only speed changes)."""

    def baseline(self, client: ClientData) -> float | None:
        """A trivial predictor's score on the client's test rows, if the kind has one (majority label)."""
        return None

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
        for idx in length_batches(data, batch_size, generator, group_by_length):
            yield self.collate(data, idx)


def length_batches(
    data: Encoded, batch_size: int, generator: torch.Generator | None = None, group_by_length: bool = False
) -> list[list[int]]:
    """Row indices of every batch (see ``Task.batches``)."""
    n = len(data)
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    if group_by_length:
        order.sort(key=lambda i: len(data.input_ids[i]))  # stable: equal lengths keep the random order
    chunks = [order[start : start + batch_size] for start in range(0, n, batch_size)]
    if group_by_length and generator is not None:
        chunks = [chunks[j] for j in torch.randperm(len(chunks), generator=generator).tolist()]
    return chunks


def pad_rows(rows: Sequence[Sequence[int]], pad: int, left: bool = False) -> tuple[Tensor, Tensor]:
    """(ids, mask), both (b, longest): rows padded with ``pad`` on the right (or the left, to generate)."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(longest - len(r), longest) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


REGISTRY: dict[str, type[Task]] = {}
T = TypeVar("T", bound=type[Task])


def register(cls: T) -> T:
    """Class decorator: make a task kind available as ``data.kind = cls.kind``."""
    if cls.kind in REGISTRY:
        raise ValueError(f"task kind {cls.kind!r} registered twice")
    REGISTRY[cls.kind] = cls
    return cls
