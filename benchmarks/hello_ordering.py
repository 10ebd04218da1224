"""Does the Fed-HeLLo abstract's ordering hold? Paired comparisons of allocation strategies from a sweep.

    .venv/bin/python benchmarks/hello_ordering.py benchmarks/results/hello/cells.csv [--seed 1] [--task sst2]

The abstract claims that randomising the geometric allocation (RGD) improves on the deterministic one (GD),
and that co-designing it with Fisher scores improves again. A grid's variants are named
``<method>-<strategy>-<pattern>`` (``fedit-rgd-tri``) and ``<method>-fim``, so each claim can be tested on
pairs that differ only in the strategy: same method, pattern, task and seed. FIM has no pattern; it is paired
with the mean of a strategy's four patterns. Per comparison and task the table gives the mean difference in
accuracy points and how many pairs the first strategy wins (and how many tie); the last column adds the
two-sided sign-test p over all tasks (ties dropped). Pairs sharing a seed and task are not independent (one
data draw), so p is a guide, not a test to quote alone. ``--seed`` and ``--task`` (a prefix) restrict the
reading to some cells.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path

PATTERNS = ("uni", "tri", "inv", "bot")
# (first, second): "first minus second", on the same pattern; "mean-X" is strategy X averaged over patterns.
COMPARISONS = (
    ("rgd", "gd"),
    ("codesign", "rgd"),
    ("codesign", "gd"),
    ("fim", "mean-gd"),
    ("fim", "mean-rgd"),
)

Cell = tuple[str, str, int]  # (variant, task, seed)


def read_cells(path: Path, seed: int | None = None, task: str = "") -> dict[Cell, float]:
    """Accuracy in points per finished cell of a cells.csv, optionally of one seed and a task prefix."""
    with path.open() as f:
        acc = {
            (r["variant"], r["task"], int(r["seed"])): 100 * float(r["mean_score"]) for r in csv.DictReader(f)
        }
    return {c: x for c, x in acc.items() if c[1].startswith(task) and seed in (None, c[2])}


def score(
    acc: dict[Cell, float], method: str, strategy: str, pattern: str, task: str, seed: int
) -> float | None:
    if strategy == "fim":
        return acc.get((f"{method}-fim", task, seed))
    if strategy.startswith("mean-"):
        scores = [score(acc, method, strategy[5:], p, task, seed) for p in PATTERNS]
        return None if None in scores else statistics.mean(s for s in scores if s is not None)
    return acc.get((f"{method}-{strategy}-{pattern}", task, seed))


def pairs(acc: dict[Cell, float], method: str, first: str, second: str, task: str) -> list[float]:
    """first minus second on every (pattern, seed) where both cells finished; FIM pairs once per seed."""
    seeds = sorted({s for (_, t, s) in acc if t == task})
    patterns = ("",) if first == "fim" else PATTERNS
    diffs = []
    for seed in seeds:
        for pattern in patterns:
            a, b = (score(acc, method, x, pattern, task, seed) for x in (first, second))
            if a is not None and b is not None:
                diffs.append(a - b)
    return diffs


def sign_test(diffs: list[float]) -> float:
    """Two-sided exact binomial p of the wins among non-tied pairs under 'no difference'."""
    n, wins = sum(d != 0 for d in diffs), sum(d > 0 for d in diffs)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, n - wins) + 1)) / 2**n
    return min(1.0, 2 * tail)


def summary(diffs: list[float]) -> str:
    """Mean difference, then wins of pairs; ties are named, since the sign test drops them."""
    wins, ties = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs)
    tied = f", {ties} tie{'s' if ties > 1 else ''}" if ties else ""
    return f"{statistics.mean(diffs):+.2f} ({wins}/{len(diffs)}{tied})"


def table(acc: dict[Cell, float], method: str) -> str:
    tasks = sorted({t for (v, t, _) in acc if v.startswith(f"{method}-")})
    head = f"| {method}: first minus second | " + " | ".join(tasks) + " | all tasks | sign-test p |"
    lines = [head, "|" + "---|" * (len(tasks) + 3)]
    for first, second in COMPARISONS:
        per_task = [pairs(acc, method, first, second, t) for t in tasks]
        every = [d for ds in per_task for d in ds]
        if not every:
            continue
        cells = [summary(ds) if ds else "–" for ds in per_task]
        total = summary(every)
        lines.append(
            f"| {first} − {second} | " + " | ".join(cells) + f" | {total} | {sign_test(every):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", type=Path, help="a bench folder's cells.csv")
    parser.add_argument("--seed", type=int, help="only cells of this seed (default: every seed)")
    parser.add_argument("--task", default="", help="only tasks starting with this, e.g. qnli-dir0.5")
    args = parser.parse_args()
    if not args.cells.is_file():
        parser.error(f"{args.cells} is not a file; pass a bench folder's cells.csv")
    acc = read_cells(args.cells, args.seed, args.task)
    if not acc:
        parser.error(f"no finished cells in {args.cells} match --seed {args.seed} --task {args.task!r}")
    methods = sorted({v.split("-")[0] for (v, _, _) in acc})
    print("\n\n".join(table(acc, m) for m in methods))


if __name__ == "__main__":
    main()
