"""Load JSON Lines splits and partition them across federated clients.

numpy only: tokenisation lives elsewhere, so this module stays cheap to import and easy to test, and a
partition can be inspected (label histograms, sizes) without loading a model.

The row schema belongs to the task kind (``fedtreelora.tasks``): it hands ``load_task`` a parser that turns
one JSON object into a ``Row``. Partitioning only needs each row's class id (label skew) and never looks at
the example itself, so classification (GLUE) and generation (FLAN) rows are split by the same code.
"""

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

Partition = Literal["dirichlet", "iid", "task"]

_DIR_HINT = "point data.dir at a folder holding both (e.g. ../shared/data/glue/sst2)"


class DataError(ValueError):
    """Bad data files or data settings; the message names the file:line or the setting to change."""


@dataclass(frozen=True)
class Row:
    """What a task kind's parser makes of one JSON object."""

    example: Any  # the task kind's own example type
    label: int = 0  # class id, for label-skew partitions; 0 for rows without classes
    label_name: str | None = None
    group: str | None = None  # a task group (FLAN's "group"); None: the task folder's parent folder


RowParser = Callable[[dict[str, Any], str], Row]  # (JSON object, "file:line") -> Row; raises DataError


@dataclass(frozen=True)
class Split:
    """A labelled pool read from one file."""

    examples: list[Any]
    labels: IntArray  # (n,) int64, same order as examples; read-only
    label_names: list[str]  # index = label id


@dataclass(frozen=True)
class TaskData:
    name: str  # folder name, e.g. "sst2"
    train: Split
    test: Split
    group: str = ""  # e.g. "sentiment" for flan/sentiment/sst2; "glue" for glue/sst2


@dataclass(frozen=True)
class ClientData:
    client_id: int
    task: str
    train: list[Any]
    test: list[Any]
    label_counts: list[int]  # train label histogram over the client's task classes (for reports)
    group: str = ""


# --------------------------------------------------------------------------------------------- loading


def load_split(path: Path, parse: RowParser) -> Split:
    """Read one ``.jsonl`` file; blank lines are skipped, anything else malformed raises DataError."""
    path = Path(path)
    examples: list[Any] = []
    labels: list[int] = []
    names: dict[int, str] = {}
    for lineno, row in read_rows(path):
        parsed = parse(row, f"{path}:{lineno}")
        if parsed.label_name is not None:
            _record_name(names, parsed.label, parsed.label_name, f"{path}:{lineno}")
        examples.append(parsed.example)
        labels.append(parsed.label)
    if not examples:
        raise DataError(f"{path}: no rows; expected one JSON object per line")
    array = np.asarray(labels, dtype=np.int64)
    # Split is frozen; freezing the array too stops a caller's in-place edit from desynchronising it.
    array.flags.writeable = False
    label_names = [names.get(i, str(i)) for i in range(int(array.max()) + 1)]
    return Split(examples=examples, labels=array, label_names=label_names)


def load_task(directory: Path, parse: RowParser) -> TaskData:
    """Read ``<directory>/train.jsonl`` and ``<directory>/test.jsonl``; the task is named after the folder.

    Its group is the rows' own ``group`` where the parser reads one, else the parent folder's name.
    """
    directory = Path(directory)
    train_path, test_path = split_paths(directory)
    groups: set[str] = set()

    def parse_and_note(row: dict[str, Any], where: str) -> Row:
        parsed = parse(row, where)
        if parsed.group:
            groups.add(parsed.group)
        return parsed

    train, test = load_split(train_path, parse_and_note), load_split(test_path, parse_and_note)
    _check_same_names(train, test, directory)
    if len(groups) > 1:
        raise DataError(f"{directory}: rows name several groups ({', '.join(sorted(groups))}); one per task")
    folder = directory.resolve()
    # Path(".").name is empty, so fall back to the resolved folder name.
    name = directory.name or folder.name
    return TaskData(name=name, train=train, test=test, group=groups.pop() if groups else folder.parent.name)


def split_paths(directory: Path) -> tuple[Path, Path]:
    """``train.jsonl`` and ``test.jsonl`` of a task folder, or a DataError naming the setting."""
    train_path, test_path = Path(directory) / "train.jsonl", Path(directory) / "test.jsonl"
    if not (train_path.is_file() and test_path.is_file()):
        raise DataError(f"data.dir: no train.jsonl/test.jsonl in {directory}; {_DIR_HINT}")
    return train_path, test_path


def first_row(directory: Path) -> dict[str, Any]:
    """The first JSON object of a task folder's ``train.jsonl``: enough to tell its schema."""
    path = split_paths(directory)[0]
    for _, row in read_rows(path):
        return row
    raise DataError(f"{path}: no rows; expected one JSON object per line")


def label_count(tasks: Sequence[TaskData]) -> int:
    """Number of classes a shared classifier head needs: the maximum over tasks."""
    if not tasks:
        raise DataError("data.tasks: no task given; need at least one task to count labels")
    return max(_n_classes(task) for task in tasks)


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) for every non-blank line; anything but an object raises DataError."""
    for lineno, line in _read_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            where = f"{path}:{lineno}"
            raise DataError(f"{where}: not valid JSON ({exc.msg}); expected one object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    lineno = 0
    with handle:
        try:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    yield lineno, line
        except UnicodeDecodeError as exc:
            # Decoding happens in chunks, so the line is only approximate.
            raise DataError(f"{path}: not valid UTF-8 (near line {lineno + 1})") from exc


def _record_name(names: dict[int, str], label: int, name: str, where: str) -> None:
    known = names.setdefault(label, name)
    if known != name:
        raise DataError(f"{where}: label {label} is named {name!r} here but {known!r} on an earlier line")


def _check_same_names(train: Split, test: Split, directory: Path) -> None:
    # Ids present in both splits must mean the same class, or test accuracy would silently compare
    # different classes. A default name (str(id), label_name absent) is compatible with anything.
    for label, (a, b) in enumerate(zip(train.label_names, test.label_names, strict=False)):
        if a != b and str(label) not in (a, b):
            raise DataError(f"{directory}: label {label} is {a!r} in train.jsonl but {b!r} in test.jsonl")


def _n_classes(task: TaskData) -> int:
    return max(len(task.train.label_names), len(task.test.label_names))


def _class_names(task: TaskData) -> list[str]:
    """Names for every class id of the task, preferring an explicit label_name from either split."""
    names = []
    for label in range(_n_classes(task)):
        found = [s.label_names[label] for s in (task.train, task.test) if label < len(s.label_names)]
        explicit = [name for name in found if name != str(label)]
        names.append(explicit[0] if explicit else str(label))
    return names


# ------------------------------------------------------------------------------------------ partition


@dataclass(frozen=True)
class _Plan:
    """How many examples of each label one client gets, decided before any example is handed out."""

    client_id: int
    task_index: int
    train_counts: IntArray  # (C,)
    test_counts: IntArray  # (C,)


def partition(
    tasks: Sequence[TaskData],
    *,
    n_clients: int,
    n_train: int,
    n_test: int,
    scheme: Partition,
    alpha: float = 0.5,
    seed: int = 0,
) -> list[ClientData]:
    """Split ``tasks`` into ``n_clients`` disjoint client datasets.

    dirichlet: one task, client label proportions ~ Dirichlet(alpha); iid: one task, the pool's own train
    label frequencies; task: clients split into contiguous per-task groups, IID within each group. Each
    client's train and test sets share the same label proportions (largest-remainder rounding).
    """
    _validate(tasks, n_clients=n_clients, n_train=n_train, n_test=n_test, scheme=scheme, alpha=alpha)
    # Independent streams, so e.g. the pool shuffle does not shift when the number of clients changes.
    props_rng, pool_rng, mix_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    plans = _plan(tasks, n_clients, n_train, n_test, scheme, alpha, props_rng)
    _check_pools(tasks, plans, scheme)
    return _hand_out(tasks, plans, pool_rng, mix_rng)


def largest_remainder(proportions: FloatArray, total: int) -> IntArray:
    """Integer counts summing exactly to ``total`` with each count within 1 of ``proportions * total``.

    Floors first, then the leftover units go to the largest fractional parts (ties: lowest label first).
    """
    q = np.asarray(proportions, dtype=np.float64)
    q = q / q.sum()
    exact = q * total
    counts = np.floor(exact).astype(np.int64)
    leftover = max(total - int(counts.sum()), 0)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:leftover]] += 1
    return counts


def _validate(
    tasks: Sequence[TaskData], *, n_clients: int, n_train: int, n_test: int, scheme: str, alpha: float
) -> None:
    allowed = get_args(Partition)
    if scheme not in allowed:
        raise DataError(f"data.partition={scheme!r}: expected one of {', '.join(map(repr, allowed))}")
    for setting, value in (("data.n_clients", n_clients), ("data.n_train", n_train), ("data.n_test", n_test)):
        if value < 1:
            raise DataError(f"{setting}={value}: must be an integer >= 1")
    if not (np.isfinite(alpha) and alpha > 0):
        raise DataError(
            f"data.alpha={alpha}: must be a finite number > 0 (0.1 = strong label skew, 100 ~ IID)"
        )
    if not tasks:
        raise DataError(f"data.partition={scheme}: no task given; pass at least one task folder")
    if scheme in ("dirichlet", "iid") and len(tasks) != 1:
        names = ", ".join(task.name for task in tasks)
        raise DataError(
            f"data.partition={scheme}: needs exactly one task, got {len(tasks)} ({names}); "
            "use data.partition=task to give each task its own group of clients"
        )
    if scheme == "task" and n_clients < len(tasks):
        raise DataError(
            f"data.n_clients={n_clients}: data.partition=task needs at least one client per task "
            f"({len(tasks)} tasks); raise data.n_clients or drop tasks"
        )


def _plan(
    tasks: Sequence[TaskData],
    n_clients: int,
    n_train: int,
    n_test: int,
    scheme: Partition,
    alpha: float,
    rng: np.random.Generator,
) -> list[_Plan]:
    task_of_client = _task_groups(n_clients, len(tasks)) if scheme == "task" else [0] * n_clients
    plans = []
    for client_id, t in enumerate(task_of_client):
        q = _dirichlet(rng, _n_classes(tasks[t]), alpha) if scheme == "dirichlet" else _frequencies(tasks[t])
        # Same q for both splits, so a client's test set measures the distribution it trained on.
        plans.append(_Plan(client_id, t, largest_remainder(q, n_train), largest_remainder(q, n_test)))
    return plans


def _task_groups(n_clients: int, n_tasks: int) -> list[int]:
    """Task index of each client: contiguous groups as even as possible, the first groups one larger."""
    base, extra = divmod(n_clients, n_tasks)
    sizes = [base + (1 if t < extra else 0) for t in range(n_tasks)]
    return [t for t, size in enumerate(sizes) for _ in range(size)]


def _dirichlet(rng: np.random.Generator, n_classes: int, alpha: float) -> FloatArray:
    q = rng.dirichlet(np.full(n_classes, alpha))
    # Extremely small alpha can underflow every component to 0; better a clear error than NaN counts.
    if not (np.all(np.isfinite(q)) and q.sum() > 0):
        raise DataError(
            f"data.alpha={alpha}: too small, Dirichlet sampling underflowed; use e.g. alpha >= 0.01"
        )
    return np.asarray(q, dtype=np.float64)


def _frequencies(task: TaskData) -> FloatArray:
    # Train frequencies for both splits keep a client's train/test label mix identical.
    counts = np.bincount(task.train.labels, minlength=_n_classes(task))
    return np.asarray(counts / counts.sum(), dtype=np.float64)


def _check_pools(tasks: Sequence[TaskData], plans: list[_Plan], scheme: Partition) -> None:
    """Raise if any label pool is too small for the total request, before anything is handed out."""
    problems = []
    for t, task in enumerate(tasks):
        mine = [plan for plan in plans if plan.task_index == t]
        problems += _shortages(task, "train", [plan.train_counts for plan in mine])
        problems += _shortages(task, "test", [plan.test_counts for plan in mine])
    if problems:
        hint = (
            " (or raise data.alpha: strong skew piles requests onto few labels)"
            if scheme == "dirichlet"
            else ""
        )
        raise DataError(f"data.partition={scheme}: not enough examples{hint}: " + "; ".join(problems))


def _shortages(task: TaskData, split_name: Literal["train", "test"], counts: list[IntArray]) -> list[str]:
    split = task.train if split_name == "train" else task.test
    n_classes = _n_classes(task)
    requested = np.sum(counts, axis=0) if counts else np.zeros(n_classes, dtype=np.int64)
    available = np.bincount(split.labels, minlength=n_classes)
    names = _class_names(task)
    return [
        f"task {task.name!r} {split_name}: label {label} ({names[label]!r}) requested {requested[label]} "
        f"examples over {len(counts)} clients but only {available[label]} exist; "
        f"lower data.n_{split_name} or data.n_clients"
        for label in np.flatnonzero(requested > available)
    ]


class _LabelPools:
    """Per-label index pools of one split, shuffled once and handed out as consecutive disjoint slices."""

    def __init__(self, labels: IntArray, n_classes: int, rng: np.random.Generator) -> None:
        self._pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]
        self._cursor = np.zeros(n_classes, dtype=np.int64)

    def take(self, counts: IntArray) -> IntArray:
        slices = zip(self._pools, self._cursor, counts, strict=True)
        parts = [pool[start : start + k] for pool, start, k in slices]
        self._cursor += counts
        return np.concatenate(parts)


def _hand_out(
    tasks: Sequence[TaskData],
    plans: list[_Plan],
    pool_rng: np.random.Generator,
    mix_rng: np.random.Generator,
) -> list[ClientData]:
    pools = [
        tuple(_LabelPools(split.labels, _n_classes(task), pool_rng) for split in (task.train, task.test))
        for task in tasks
    ]
    clients = []
    for plan in plans:
        task = tasks[plan.task_index]
        train_pool, test_pool = pools[plan.task_index]
        # Per-label slices come out grouped by label; shuffle so batches see mixed labels.
        train_idx = mix_rng.permutation(train_pool.take(plan.train_counts))
        test_idx = mix_rng.permutation(test_pool.take(plan.test_counts))
        clients.append(
            ClientData(
                client_id=plan.client_id,
                task=task.name,
                train=[task.train.examples[i] for i in train_idx],
                test=[task.test.examples[i] for i in test_idx],
                label_counts=[int(k) for k in plan.train_counts],
                group=task.group,
            )
        )
    return clients
