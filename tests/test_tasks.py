"""Batching: every row exactly once; grouping by length only changes which rows share a batch."""

from types import SimpleNamespace

import torch

from fedtreelora.tasks.classification import ClassificationTask, Encoded


def encoded(lengths: list[int]) -> Encoded:
    ids = [[100 + i] * n for i, n in enumerate(lengths)]
    return Encoded(input_ids=ids, token_type_ids=None, labels=torch.arange(len(lengths)))


def test_group_by_length_batches_similar_lengths_and_keeps_every_row_once() -> None:
    task = ClassificationTask(SimpleNamespace(pad_token_id=0), max_length=64)  # type: ignore[arg-type]
    lengths = [9, 2, 7, 4, 1, 8, 3, 6, 5, 10]
    data = encoded(lengths)
    batches = list(task.batches(data, 3, torch.Generator().manual_seed(0), group_by_length=True))
    rows = sorted(int(i) for b in batches for i in b["labels"])
    assert rows == list(range(10))
    # Sorted by length then cut: the batches are {1,2,3}, {4,5,6}, {7,8,9}, {10}, in a shuffled order.
    groups = sorted(sorted(lengths[int(i)] for i in b["labels"]) for b in batches)
    assert groups == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    for b in batches:  # (b, t): each batch pads only to its own longest row
        assert b["input_ids"].shape[1] == max(lengths[int(i)] for i in b["labels"])
    assert int(sum(b["attention_mask"].sum() for b in batches)) == sum(lengths)


def test_plain_batches_follow_the_seeded_order() -> None:
    task = ClassificationTask(SimpleNamespace(pad_token_id=0), max_length=64)  # type: ignore[arg-type]
    data = encoded([3, 1, 2, 5])
    order = torch.randperm(4, generator=torch.Generator().manual_seed(1)).tolist()
    batches = list(task.batches(data, 2, torch.Generator().manual_seed(1)))
    assert [int(i) for b in batches for i in b["labels"]] == order
    assert [int(i) for b in task.batches(data, 2) for i in b["labels"]] == [0, 1, 2, 3]
