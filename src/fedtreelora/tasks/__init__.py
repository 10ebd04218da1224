"""Task kinds. Every module in this folder registers one kind when imported."""

import importlib
import pkgutil
from pathlib import Path

from ..config import ConfigError
from ..data import first_row
from .base import REGISTRY, Batch, Encoded, Loaded, Score, Task, register

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")


def kind_for(folders: list[Path], setting: str) -> type[Task]:
    """The task kind named by ``data.kind``, or (``"auto"``) the one whose schema the data's rows have."""
    if setting != "auto":
        if setting not in REGISTRY:
            known = ", ".join(["auto", *sorted(REGISTRY)])
            raise ConfigError(f"data.kind: must be one of {known} (got {setting!r})")
        return REGISTRY[setting]
    found: dict[str, Path] = {}
    for folder in folders:
        row = first_row(folder)
        kinds = [name for name, cls in REGISTRY.items() if cls.claims(row)]
        if len(kinds) != 1:
            schemas = "; ".join(f"{name}: {cls.schema}" for name, cls in REGISTRY.items())
            raise ConfigError(
                f"data: {folder}/train.jsonl rows have keys {sorted(row)}, which match "
                f"{'no' if not kinds else 'more than one'} task kind ({schemas}); fix them or set data.kind"
            )
        found.setdefault(kinds[0], folder)
    if len(found) > 1:
        mixed = ", ".join(f"{kind} ({folder})" for kind, folder in found.items())
        raise ConfigError(f"data.tasks: one run holds one task kind, got {mixed}")
    return REGISTRY[next(iter(found))]


__all__ = ["REGISTRY", "Batch", "Encoded", "Loaded", "Score", "Task", "kind_for", "register"]
