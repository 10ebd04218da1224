"""Fed-HeLLo's heterogeneous LoRA allocation (SPEC "Fed-HeLLo"): which layers each client trains per round.

Every module in this folder except the helpers registers one strategy when imported, so a new strategy is
one file. The runtime asks the run's allocator for each client's ``Assignment`` every round and restricts
the method's plan to it; methods never learn that budgets exist.
"""

import importlib
import pkgutil

from .base import STRATEGIES, Allocator, Assignment, create_allocator, register

_HELPERS = {"base", "patterns", "fisher"}
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["STRATEGIES", "Allocator", "Assignment", "create_allocator", "register"]
