"""Tests for fedtreelora.data: JSON Lines loading and federated partitioning."""

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fedtreelora.data import (
    ClientData,
    DataError,
    Split,
    TaskData,
    label_count,
    largest_remainder,
    load_split,
    load_task,
    partition,
)
from fedtreelora.tasks.classification import ClassificationTask, Example

parse = ClassificationTask.parse_row

REAL_SST2 = Path(__file__).parents[1].parent / "shared/data/glue/sst2"


# ----------------------------------------------------------------------------------------------- helpers


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_split(per_label: list[int], names: list[str] | None = None, tag: str = "") -> Split:
    """A split with per_label[c] examples of label c; texts are unique so examples can be tracked."""
    examples = [Example(text=f"{tag}c{c}-{i}", label=c) for c, n in enumerate(per_label) for i in range(n)]
    labels = np.array([e.label for e in examples], dtype=np.int64)
    return Split(examples, labels, names or [str(c) for c in range(len(per_label))])


def make_task(name: str, train: list[int], test: list[int]) -> TaskData:
    return TaskData(name, make_split(train, tag=f"{name}-train-"), make_split(test, tag=f"{name}-test-"))


def hist(examples: list[Example], n_classes: int) -> np.ndarray:
    return np.bincount([e.label for e in examples], minlength=n_classes)


def texts(clients: list[ClientData]) -> list[tuple[list[str], list[str]]]:
    return [([e.text for e in c.train], [e.text for e in c.test]) for c in clients]


# ----------------------------------------------------------------------------------------------- loading


def test_load_split_parses_schema_with_and_without_text_pair(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "q1", "text_pair": "a1", "label": 1, "label_name": "not_entailment"},
            {"text": "q2", "label": 0, "label_name": "entailment"},
        ],
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n")  # trailing blank line is tolerated
    split = load_split(path, parse)
    assert split.examples == [Example("q1", 1, "a1"), Example("q2", 0, None)]
    assert split.labels.dtype == np.int64
    assert split.labels.tolist() == [1, 0]
    assert split.label_names == ["entailment", "not_entailment"]


def test_missing_label_name_falls_back_to_id(tmp_path: Path) -> None:
    split = load_split(
        write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "label": 2}, {"text": "b", "label": 0}]), parse
    )
    assert split.label_names == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"label": 0}', "missing key 'text'"),
        ('{"text": "x"}', "missing key 'label'"),
        ('{"text": "x", "label": "pos"}', "'label' must be a non-negative integer"),
        ('{"text": "x", "label": true}', "'label' must be a non-negative integer"),
        ('{"text": "x", "label": 0, "text_pair": 3}', "'text_pair' must be a string"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_row_error_names_file_and_line(tmp_path: Path, bad_line: str, fragment: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok", "label": 0}\n\n' + bad_line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=fragment) as info:
        load_split(path, parse)
    assert f"{path}:3" in str(info.value)  # line numbers count blank lines too
    assert isinstance(info.value, ValueError)


def test_conflicting_label_names_are_rejected(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 0, "label_name": "neg"}, {"text": "b", "label": 0, "label_name": "pos"}]
    with pytest.raises(DataError, match=r"x\.jsonl:2: label 0"):
        load_split(write_jsonl(tmp_path / "x.jsonl", rows), parse)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_split(tmp_path / "x.jsonl", parse)


def test_load_task_reads_both_splits_and_names_task_after_folder(tmp_path: Path) -> None:
    folder = tmp_path / "sst2"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": "a", "label": 1, "label_name": "positive"}])
    write_jsonl(folder / "test.jsonl", [{"text": "b", "label": 0, "label_name": "negative"}])
    task = load_task(folder, parse)
    assert task.name == "sst2"
    assert [e.text for e in task.train.examples] == ["a"]
    assert [e.text for e in task.test.examples] == ["b"]
    assert label_count([task]) == 2


def test_load_task_without_files_points_at_the_setting(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}])
    with pytest.raises(DataError) as info:
        load_task(tmp_path, parse)
    assert str(info.value) == (
        f"data.dir: no train.jsonl/test.jsonl in {tmp_path}; point data.dir at a folder holding both "
        "(e.g. ../shared/data/glue/sst2)"
    )


def test_label_count_is_max_over_tasks() -> None:
    assert label_count([make_task("a", [5, 5], [2, 2]), make_task("b", [5, 5, 5], [2, 2, 2])]) == 3


@pytest.mark.skipif(not REAL_SST2.is_dir(), reason="shared GLUE data not available")
def test_real_sst2_loads_fast_and_partitions() -> None:
    start = time.perf_counter()
    task = load_task(REAL_SST2, parse)
    elapsed = time.perf_counter() - start
    assert task.name == "sst2"
    assert len(task.train.examples) == 67_349
    assert len(task.test.examples) == 2_693
    assert task.train.label_names == ["negative", "positive"]
    assert elapsed < 3.0  # typically ~0.4 s for both files; generous bound against slow CI machines
    clients = partition([task], n_clients=10, n_train=200, n_test=50, scheme="dirichlet", alpha=0.5, seed=0)
    assert [len(c.train) for c in clients] == [200] * 10
    assert [len(c.test) for c in clients] == [50] * 10
    all_train = [id(e) for c in clients for e in c.train]
    assert len(set(all_train)) == len(all_train)


# ------------------------------------------------------------------------------------------- partition


@pytest.mark.parametrize("total", [1, 7, 10, 99, 1000])
def test_largest_remainder_sums_exactly_and_stays_within_one(total: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.dirichlet(np.full(5, 0.3))
        counts = largest_remainder(q, total)
        assert counts.sum() == total
        assert np.all(counts >= 0)
        assert np.all(np.abs(counts - q * total) < 1)


def test_largest_remainder_known_case() -> None:
    # exact 3.5/2.5/1.0 -> floors 3/2/1, one leftover unit goes to the first tie (label 0)
    assert largest_remainder(np.array([0.5, 5 / 14, 1 / 7]), 7).tolist() == [4, 2, 1]
    assert largest_remainder(np.array([0.2, 0.3, 0.5]), 10).tolist() == [2, 3, 5]


def test_dirichlet_train_and_test_share_proportions() -> None:
    task = make_task("t", [400, 400, 400], [100, 100, 100])
    n_train, n_test = 60, 20
    clients = partition([task], n_clients=8, n_train=n_train, n_test=n_test, scheme="dirichlet", alpha=0.5)
    for client in clients:
        train_h, test_h = hist(client.train, 3), hist(client.test, 3)
        assert train_h.sum() == n_train and test_h.sum() == n_test
        assert client.label_counts == train_h.tolist()
        # both are within one unit of q * n, so their shares differ by < 1/n_train + 1/n_test
        assert np.all(np.abs(train_h / n_train - test_h / n_test) < 1 / n_train + 1 / n_test)


def test_clients_are_disjoint_and_labels_mixed() -> None:
    task = make_task("t", [300, 300], [100, 100])
    clients = partition([task], n_clients=5, n_train=50, n_test=20, scheme="dirichlet", alpha=5.0, seed=3)
    train_texts = [t for c in clients for t in (e.text for e in c.train)]
    test_texts = [t for c in clients for t in (e.text for e in c.test)]
    assert len(set(train_texts)) == len(train_texts) == 250
    assert len(set(test_texts)) == len(test_texts) == 100
    assert all(t.startswith("t-train-") for t in train_texts)
    assert all(t.startswith("t-test-") for t in test_texts)
    # shuffled within the client: not all of label 0 first
    labels = [e.label for e in clients[0].train]
    assert labels != sorted(labels)


def test_deterministic_by_seed_and_seeds_differ() -> None:
    task = make_task("t", [200, 200, 200], [50, 50, 50])
    kwargs = {"n_clients": 4, "n_train": 30, "n_test": 10, "scheme": "dirichlet", "alpha": 0.5}
    a = partition([task], seed=7, **kwargs)  # type: ignore[arg-type]
    b = partition([task], seed=7, **kwargs)  # type: ignore[arg-type]
    c = partition([task], seed=8, **kwargs)  # type: ignore[arg-type]
    assert texts(a) == texts(b)
    assert [x.label_counts for x in a] == [x.label_counts for x in b]
    assert texts(a) != texts(c)


def test_insufficient_pool_raises_before_taking_anything() -> None:
    task = make_task("tiny", [100, 10], [30, 30])
    before = [e.text for e in task.train.examples]
    with pytest.raises(DataError) as info:
        # IID counts per client are [5, 1]: no single client is short, only the total over 12 clients is
        # (12 > 10), so the check must look at the whole request before handing anything out.
        partition([task], n_clients=12, n_train=6, n_test=2, scheme="iid")
    message = str(info.value)
    assert "label 1" in message and "requested 12" in message and "only 10 exist" in message
    assert "lower data.n_train or data.n_clients" in message
    assert "label 0" not in message and "'tiny' test" not in message
    assert [e.text for e in task.train.examples] == before
    assert task.train.labels.tolist() == [0] * 100 + [1] * 10


def test_insufficient_test_pool_names_n_test() -> None:
    task = make_task("tiny", [100, 100], [3, 3])
    with pytest.raises(DataError, match=r"'tiny' test: label \d .*data\.n_test or data\.n_clients"):
        partition([task], n_clients=2, n_train=10, n_test=10, scheme="iid")


def test_iid_uses_train_frequencies_for_both_splits() -> None:
    task = make_task("t", [300, 100], [50, 50])  # train 75/25; test pool is balanced but must not matter
    clients = partition([task], n_clients=3, n_train=40, n_test=8, scheme="iid", seed=1)
    for client in clients:
        assert hist(client.train, 2).tolist() == [30, 10]
        assert hist(client.test, 2).tolist() == [6, 2]
        assert client.task == "t"


def test_task_partition_groups_clients_contiguously() -> None:
    tasks = [
        make_task("a", [50, 50], [20, 20]),
        make_task("b", [50, 50, 50], [20, 20, 20]),
        make_task("c", [50, 50], [20, 20]),
    ]
    clients = partition(tasks, n_clients=8, n_train=10, n_test=4, scheme="task", seed=0)
    assert [c.task for c in clients] == ["a", "a", "a", "b", "b", "b", "c", "c"]
    assert [c.client_id for c in clients] == list(range(8))
    for client in clients:
        assert all(e.text.startswith(f"{client.task}-train-") for e in client.train)
        assert all(e.text.startswith(f"{client.task}-test-") for e in client.test)
    assert [c.label_counts for c in clients if c.task == "b"] == [[4, 3, 3]] * 3


def test_small_alpha_gives_skewed_clients() -> None:
    task = make_task("t", [2000, 2000, 2000, 2000], [500, 500, 500, 500])
    kwargs = {"n_clients": 20, "n_train": 50, "n_test": 10, "scheme": "dirichlet", "seed": 0}
    skewed = partition([task], alpha=0.1, **kwargs)  # type: ignore[arg-type]
    flat = partition([task], alpha=100.0, **kwargs)  # type: ignore[arg-type]
    top_share = [max(c.label_counts) / 50 for c in skewed]
    assert sum(share >= 0.8 for share in top_share) >= 12
    assert all(max(c.label_counts) / 50 < 0.5 for c in flat)


@pytest.mark.parametrize(
    ("tasks_n", "kwargs", "setting"),
    [
        (1, {"n_clients": 0}, "data.n_clients"),
        (1, {"n_train": 0}, "data.n_train"),
        (1, {"n_test": 0}, "data.n_test"),
        (1, {"alpha": 0.0}, "data.alpha"),
        (1, {"alpha": float("nan")}, "data.alpha"),
        (2, {"scheme": "dirichlet"}, "data.partition=dirichlet: needs exactly one task"),
        (2, {"scheme": "iid"}, "data.partition=iid: needs exactly one task"),
        (3, {"scheme": "task", "n_clients": 2}, "data.n_clients=2: data.partition=task"),
        (1, {"scheme": "label"}, "data.partition='label'"),
        (0, {}, "no task given"),
    ],
)
def test_settings_are_validated(tasks_n: int, kwargs: dict[str, object], setting: str) -> None:
    tasks = [make_task(f"t{i}", [20, 20], [10, 10]) for i in range(tasks_n)]
    args: dict[str, object] = {"n_clients": 2, "n_train": 4, "n_test": 2, "scheme": "dirichlet", **kwargs}
    with pytest.raises(DataError, match=setting.replace("(", r"\(")):
        partition(tasks, **args)  # type: ignore[arg-type]


def test_label_counts_match_histogram_and_counter() -> None:
    task = make_task("t", [100, 100], [40, 40])
    for client in partition([task], n_clients=3, n_train=25, n_test=5, scheme="dirichlet", seed=11):
        counter = Counter(e.label for e in client.train)
        assert client.label_counts == [counter.get(0, 0), counter.get(1, 0)]
