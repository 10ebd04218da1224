"""Config: defaults, overrides, and one-line errors that name the key."""

from pathlib import Path

import pytest

from fedtreelora.config import ConfigError, load_config
from fedtreelora.methods import options_for

EXAMPLES = Path(__file__).parents[1] / "examples"


def load(*sets: str, path: Path | None = None):  # type: ignore[no-untyped-def]
    return load_config(path, list(sets), options_for())


def test_examples_load() -> None:
    for toml in EXAMPLES.glob("*.toml"):
        cfg = load(path=toml)
        assert cfg.method in options_for()


def test_overrides_are_typed() -> None:
    cfg = load("train.lr=5e-4", "model.targets=['query']", "fedtreelora.tau=0", "data.n_clients=3")
    assert cfg.train.lr == 5e-4 and cfg.model.targets == ["query"]
    assert cfg.options.tau == 0.0 and isinstance(cfg.options.tau, float)
    assert cfg.to_dict()["fedtreelora"]["tau"] == 0.0


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.lrr=1", "train.lrr: unknown setting"),
        ("train.lr=-1", "train.lr: must be > 0"),
        ("train.lr=fast", "train.lr: must be a number"),
        ("data.partition=zipf", "data.partition: must be one of 'dirichlet', 'iid', 'task'"),
        ("method=fedfoo", "method: must be one of"),
        ("fedtreelora.distance=l1", "fedtreelora.distance: must be one of"),
        ("fedtreelora.warmup_rounds=99", "fedtreelora.warmup_rounds: must be < federation.rounds"),
        ("nonsense.x=1", "nonsense: unknown setting"),
        ("seed=-3", "seed: must be an integer"),
    ],
)
def test_bad_settings_name_the_key(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        load(assignment)
    assert "\n" not in str(info.value)
