"""Typed run configuration, validated once.

A run is described by a TOML file plus ``--set key=value`` overrides. Every section is a dataclass; the
method's own options live in a table named after the method (``[fedtreelora]``) and are validated by the
dataclass that method registered. Every error names the key and what is allowed, so the CLI can print
one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A bad setting: the message starts with the dotted key and says what is allowed."""


def check(ok: bool, key: str, message: str) -> None:
    """Raise ``ConfigError('key: message')`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


@dataclass
class ModelConfig:
    # Packaged offline: "minilm" (all-MiniLM-L6-v2, encoder) and "smollm2" (SmolLM2-135M-Instruct, decoder);
    # else a Hugging Face model id or a local folder.
    name: str = "minilm"
    # Modules that get LoRA; unset = the model's query/value projections (BERT: query, value; Llama: q_proj,
    # v_proj; T5: q, v; DistilBERT: q_lin, v_lin).
    targets: list[str] | None = None
    rank: int = 8
    lora_alpha: float = 16.0
    dropout: float = 0.05
    train_head: bool = False  # the paper keeps the classification head frozen
    head_init_std: float = 0.5  # std of a newly created head's weights; 0 keeps the model's own init
    max_length: int | None = (
        None  # tokens per row; unset = the task kind's default (64 classify, 256 generate)
    )
    # Unset keeps the checkpoint's dropout. 0 switches the frozen backbone's dropout off (LoRA keeps its own):
    # on CPU, sampling the attention-dropout masks costs 25-40% of a training step.
    backbone_dropout: float | None = None

    def validate(self) -> None:
        check(
            self.targets is None or bool(self.targets),
            "model.targets",
            "list at least one module name, e.g. ['q_proj', 'v_proj'], or leave it unset",
        )
        check(self.rank >= 1, "model.rank", f"must be >= 1 (got {self.rank})")
        check(self.lora_alpha > 0, "model.lora_alpha", f"must be > 0 (got {self.lora_alpha})")
        check(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1) (got {self.dropout})")
        check(self.head_init_std >= 0, "model.head_init_std", "must be >= 0 (0 = the model's own init)")
        ml = self.max_length
        check(ml is None or ml >= 8, "model.max_length", f"must be >= 8 (got {ml})")
        bd = self.backbone_dropout
        check(bd is None or 0.0 <= bd < 1.0, "model.backbone_dropout", f"must be in [0, 1) (got {bd})")


@dataclass
class DataConfig:
    dir: str = "../shared/data/glue/sst2"  # a folder holding train.jsonl and test.jsonl
    # "classification" (GLUE rows), "generation" (FLAN rows), or "auto": told from the rows' keys.
    kind: str = "auto"
    tasks: list[str] = field(default_factory=list)  # partition = "task": one folder per client group
    partition: Literal["dirichlet", "iid", "task"] = "dirichlet"
    alpha: float = 0.5  # Dirichlet concentration; smaller = more label skew
    n_clients: int = 10
    n_train: int = 200
    n_test: int = 100

    def validate(self) -> None:
        check(self.n_clients >= 1, "data.n_clients", f"must be >= 1 (got {self.n_clients})")
        check(self.n_train >= 1, "data.n_train", f"must be >= 1 (got {self.n_train})")
        check(self.n_test >= 1, "data.n_test", f"must be >= 1 (got {self.n_test})")
        check(self.alpha > 0, "data.alpha", f"must be > 0 (got {self.alpha})")
        check(
            self.partition == "task" or not self.tasks,
            "data.tasks",
            "only used with data.partition = 'task'; remove it or set the partition",
        )
        check(
            self.partition != "task" or len(self.tasks) >= 1,
            "data.tasks",
            "partition 'task' needs a list of task folders, e.g. ['../shared/data/glue/sst2', ...]",
        )

    def task_dirs(self) -> list[Path]:
        return [Path(t) for t in self.tasks] if self.partition == "task" else [Path(self.dir)]


@dataclass
class TrainConfig:
    lr: float = 3e-3
    # Learning rate of the mixing parameters (FedTreeLoRA's alpha, routers); unset = ``lr``. Adam moves a
    # parameter by about lr per step, so at a LoRA rate a mixing scalar stays where it started.
    mixer_lr: float | None = None
    batch_size: int = 16
    local_epochs: int = 1
    weight_decay: float = 0.0
    eval_batch_size: int = 16  # test rows are sorted by length first, so small batches pad little
    threads: int = 0  # torch threads; 0 = all cores
    # Batch rows of similar length together (as transformers' Trainer group_by_length): on GLUE, padding
    # to the longest row otherwise doubles the tokens computed. Batch composition then varies less.
    group_by_length: bool = False

    def validate(self) -> None:
        check(self.lr > 0, "train.lr", f"must be > 0 (got {self.lr})")
        mlr = self.mixer_lr
        check(mlr is None or mlr > 0, "train.mixer_lr", f"must be > 0, or unset to use train.lr (got {mlr})")
        check(self.batch_size >= 1, "train.batch_size", f"must be >= 1 (got {self.batch_size})")
        check(self.local_epochs >= 1, "train.local_epochs", f"must be >= 1 (got {self.local_epochs})")
        check(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0 (got {self.weight_decay})")
        check(self.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1")
        check(self.threads >= 0, "train.threads", "must be >= 0 (0 = all cores)")


@dataclass
class GenerationConfig:
    """How a generation task scores: greedy decoding up to ``max_new_tokens``, then ROUGE-1."""

    max_new_tokens: int = 64
    samples: int = 3  # generations per client kept in results.json (prompt, output, reference)

    def validate(self) -> None:
        check(self.max_new_tokens >= 1, "generation.max_new_tokens", "must be >= 1")
        check(self.samples >= 0, "generation.samples", "must be >= 0")


@dataclass
class FederationConfig:
    rounds: int = 10  # the total budget T; warmups count inside it
    eval_every: int = 2  # evaluate every k rounds (the last round is always evaluated)
    workers: int = 0  # 0: clients run one after another here; k: a pool of k processes, one thread each
    client_failure: float = 0.0  # probability that a client drops out of a round (seeded per round, client)
    min_clients: int = 1  # fewest valid replies a round needs; with fewer it is skipped (nothing changes)
    # An upload tensor whose norm exceeds this many times the median norm of that tensor over the round's
    # uploads (3 or more) is rejected: a scaled or exploded update, not a different client.
    max_norm_ratio: float = 10.0

    def validate(self) -> None:
        check(self.workers >= 0, "federation.workers", f"must be >= 0 (got {self.workers})")
        check(self.rounds >= 1, "federation.rounds", f"must be >= 1 (got {self.rounds})")
        check(self.eval_every >= 1, "federation.eval_every", f"must be >= 1 (got {self.eval_every})")
        p = self.client_failure
        check(0.0 <= p < 1.0, "federation.client_failure", f"must be a probability in [0, 1) (got {p})")
        check(self.min_clients >= 1, "federation.min_clients", f"must be >= 1 (got {self.min_clients})")
        r = self.max_norm_ratio
        check(r > 1.0, "federation.max_norm_ratio", f"must be > 1 (got {r})")


Pattern = Literal["uniform", "triangle", "inverted_triangle", "bottleneck"]


@dataclass
class AllocationConfig:
    """Fed-HeLLo: which layers' LoRA each resource-limited client trains, round by round.

    Strategies are registered in ``fedtreelora.allocation`` (one file each); ``none`` trains every layer.
    """

    strategy: str = "none"  # none | gd | rgd | fim | codesign (``fedtreelora allocations`` lists them)
    pattern: Pattern = "uniform"  # depth profile of GD/RGD (and of co-design's first rounds)
    # Fraction of the layers each client may train, one per client; empty = three equal groups of clients
    # (by id) at 0.5, 0.75 and 1.0. A fraction f gives round(f * L) layers (halves round up), at least one.
    budgets: list[float] = field(default_factory=list)
    fisher_every: int = 2  # co-design: GD/RGD for rounds < F, then Fisher scores refreshed every F rounds
    fisher_batches: int = 2  # batches of the client's training data its Fisher scores are measured on
    codesign_start: Literal["gd", "rgd"] = "rgd"  # co-design's strategy before its first Fisher round

    def validate(self) -> None:
        from .allocation import STRATEGIES  # the registry imports this module

        known = ", ".join(sorted(STRATEGIES))
        check(
            self.strategy in STRATEGIES,
            "allocation.strategy",
            f"must be one of {known} (got {self.strategy!r})",
        )
        for i, b in enumerate(self.budgets):
            check(0.0 < b <= 1.0, f"allocation.budgets[{i}]", f"must be a fraction in (0, 1] (got {b})")
        check(self.fisher_every >= 1, "allocation.fisher_every", f"must be >= 1 (got {self.fisher_every})")
        fb = self.fisher_batches
        check(fb >= 1, "allocation.fisher_batches", f"must be >= 1 (got {fb})")

    def check_run(self, cfg: RunConfig) -> None:
        n = cfg.data.n_clients
        check(
            not self.budgets or len(self.budgets) == n,
            "allocation.budgets",
            f"give one fraction per client ({n}, data.n_clients), or leave it empty for the default groups",
        )


@dataclass
class RunConfig:
    method: str = "fedtreelora"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    allocation: AllocationConfig = field(default_factory=AllocationConfig)
    options: Any = None  # the selected method's options dataclass, stored under [<method>]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "seed": self.seed}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        if self.options is not None:
            out[self.method] = dataclasses.asdict(self.options)
        return out


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "federation": FederationConfig,
    "generation": GenerationConfig,
    "allocation": AllocationConfig,
}


def parse_value(text: str) -> Any:
    """A ``--set`` value is a TOML literal (``3``, ``1e-3``, ``true``, ``['a']``); anything else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b=value`` to the nested dict ``raw`` in place."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    check(bool(sep) and bool(key), assignment, "--set takes key=value, e.g. --set train.lr=5e-4")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        check(isinstance(child, dict), key, f"'{part}' is a value, not a section")
        node = child
    node[leaf] = parse_value(value.strip())


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint (the few kinds our configs use), converting int -> float."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        check(value in allowed, key, f"must be one of {', '.join(map(repr, allowed))} (got {value!r})")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        check(isinstance(value, list), key, f"must be a list (got {value!r})")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        check(ok, key, f"must be a number (got {value!r})")
        return float(value)
    if hint is int:
        check(
            isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer (got {value!r})"
        )
        return value
    if hint is bool:
        check(isinstance(value, bool), key, f"must be true or false (got {value!r})")
        return value
    if hint is str:
        check(isinstance(value, str), key, f"must be a string (got {value!r})")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {key}")


def build_section(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``raw``: reject unknown keys and wrong types, then validate."""
    check(isinstance(raw, Mapping), prefix, "must be a table of settings")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        check(key in names, f"{prefix}.{key}", f"unknown setting; known: {', '.join(names)}")
    obj = cls(**{k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in raw.items()})
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def load_config(path: Path | None, overrides: list[str], options_for: Mapping[str, type]) -> RunConfig:
    """Read ``path`` (TOML, optional), apply ``overrides``, and validate everything once.

    ``options_for`` maps every registered method name to its options dataclass.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        check(path.is_file(), "--config", f"no such file: {path}")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"--config: {path} is not valid TOML: {err}") from err
    for assignment in overrides:
        apply_override(raw, assignment)
    return from_raw(raw, options_for)


def copy_sections(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of nested settings that popping keys or applying overrides will not reach back through."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}


def from_raw(raw: dict[str, Any], options_for: Mapping[str, type]) -> RunConfig:
    """A validated config from nested settings (a parsed TOML file, or a stored ``RunConfig.to_dict()``)."""
    raw = copy_sections(raw)  # popped below
    cfg = RunConfig()
    method = raw.pop("method", cfg.method)
    check(
        method in options_for, "method", f"must be one of {', '.join(sorted(options_for))} (got {method!r})"
    )
    cfg.method = method
    seed = raw.pop("seed", cfg.seed)
    check(
        isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "seed", "must be an integer >= 0"
    )
    cfg.seed = seed
    for key, value in raw.items():
        if key in SECTIONS:
            setattr(cfg, key, build_section(SECTIONS[key], value, key))
        elif key in options_for:
            # Validate every method's table so a typo in an unused one is still caught.
            options = build_section(options_for[key], value, key)
            if key == method:
                cfg.options = options
        else:
            known = [*SECTIONS, *sorted(options_for), "method", "seed"]
            raise ConfigError(f"{key}: unknown setting; known: {', '.join(known)}")
    if cfg.options is None:
        cfg.options = build_section(options_for[method], {}, method)
    cfg.allocation.check_run(cfg)
    n = cfg.data.n_clients
    check(cfg.federation.min_clients <= n, "federation.min_clients", f"must be <= data.n_clients ({n})")
    check_against_run = getattr(cfg.options, "check_run", None)
    if check_against_run is not None:
        check_against_run(cfg)
    return cfg


# Settings a resumed run may change: they decide how fast it runs, not what it computes.
RUNTIME_ONLY = ("federation.workers", "train.threads")


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its data folders (and a model given as a folder) made absolute: for processes that start
    elsewhere than the current directory (a Flower ServerApp and its nodes)."""

    def absolute(p: str) -> str:
        return str(Path(p).resolve())

    data = dataclasses.replace(
        cfg.data, dir=absolute(cfg.data.dir), tasks=[absolute(t) for t in cfg.data.tasks]
    )
    name = cfg.model.name
    model = dataclasses.replace(cfg.model, name=absolute(name)) if Path(name).exists() else cfg.model
    return dataclasses.replace(cfg, data=data, model=model)


def rerooted(cfg: RunConfig, root: Path) -> RunConfig:
    """``cfg`` reading its data under ``root``: the data folders' deepest common folder becomes ``root``
    (a single ``data.dir`` becomes ``root`` itself). For a node whose copy of the data lies elsewhere."""
    folders = [Path(t) for t in cfg.data.tasks] if cfg.data.tasks else [Path(cfg.data.dir)]
    common = Path(os.path.commonpath([str(f) for f in folders]))
    data = dataclasses.replace(
        cfg.data,
        dir=str(root / Path(cfg.data.dir).relative_to(common)) if not cfg.data.tasks else cfg.data.dir,
        tasks=[str(root / Path(t).relative_to(common)) for t in cfg.data.tasks],
    )
    return dataclasses.replace(cfg, data=data)


def experiment_changes(before: RunConfig, after: RunConfig) -> list[str]:
    """Settings that differ between two configs of one run, beyond what a resumed run may change: raise
    ``federation.rounds`` (extend it) and ``RUNTIME_ONLY``."""
    old, new = _flat(before.to_dict()), _flat(after.to_dict())
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key) or key in RUNTIME_ONLY:
            continue
        if key == "federation.rounds" and new[key] >= old[key]:
            continue
        changed.append(key)
    return changed


def resume_config(stored: dict[str, Any], overrides: list[str], options_for: Mapping[str, type]) -> RunConfig:
    """A stored run's config with ``overrides`` that may only extend it (raise ``federation.rounds``) or
    change how it runs (``RUNTIME_ONLY``); anything that would change the experiment is refused."""
    before = from_raw(stored, options_for)
    raw = copy_sections(stored)
    for assignment in overrides:
        apply_override(raw, assignment)
    after = from_raw(raw, options_for)
    for key in experiment_changes(before, after):
        raise ConfigError(
            f"--set {key}: a resumed run keeps its experiment; only federation.rounds may be raised "
            f"(and {', '.join(RUNTIME_ONLY)} changed). Start a new run for other settings"
        )
    return after
