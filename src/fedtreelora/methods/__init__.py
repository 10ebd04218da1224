"""Federated methods. Every module in this folder registers one method when imported."""

import importlib
import pkgutil

from .base import REGISTRY, ClientInfo, ClientPlan, Layout, Method, create, options_for, register

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["REGISTRY", "ClientInfo", "ClientPlan", "Layout", "Method", "create", "options_for", "register"]
