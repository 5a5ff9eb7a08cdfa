"""One loader for the three plugin registries (spaces, strategies, evaluators).

Each registry imports its in-tree modules (their decorators register them), then the
entry points of its group; an entry point whose name is not registered yet is
registered under that name.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Callable, Iterable


def load_plugins(builtin_modules: Iterable[str], group: str, registry: dict, register: Callable[[str], Callable]) -> None:
    for module in builtin_modules:
        importlib.import_module(module)
    for ep in entry_points(group=group):
        cls = ep.load()  # importing its module runs its register decorator, if it has one
        if ep.name not in registry:
            register(ep.name)(cls)
