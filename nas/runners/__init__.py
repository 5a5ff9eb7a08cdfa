"""Runners decide where evaluations happen: ``local`` (this process) or ``ray`` (Ray
Tune, on a local or remote cluster). A runner is a function ``run(engine)`` that drives
the engine to its budget through ``engine.strategy``, ``engine.record`` and
``engine.tell``; registered by name, so a new backend is one entry."""
from __future__ import annotations

import importlib
from typing import Callable

from search_spaces.errors import InputError

RUNNERS: dict[str, str] = {"local": "nas.runners.local:run_local", "ray": "nas.runners.ray_runner:run_ray"}


def get_runner(name: str) -> Callable:
    if name not in RUNNERS:
        raise InputError(f"unknown runner {name!r}; known: {sorted(RUNNERS)}")
    module, func = RUNNERS[name].split(":")
    return getattr(importlib.import_module(module), func)
