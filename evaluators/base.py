"""The evaluator interface and registry.

An evaluator turns an architecture into named metrics. Each has a cost tier; the engine
runs the cheap tiers first, so a candidate over a hard latency limit is rejected on the
table alone, before anything is trained::

    table    < 10 ms   lookup-table latency, params/FLOPs
    measure  < 10 s    onnxruntime measurement, zero-cost proxies
    train    minutes   short training, supernet scoring

Contract: ``evaluator(arch, space) -> {metric: float}``; it may raise (the engine records
the trial as failed with the error and goes on); it must not return made-up values. An
evaluator is constructed once per worker from its config options (explicit keyword
arguments) and may keep caches (datasets, tables) between calls; it is not shared
between threads.

Third-party evaluators register with ``@register_evaluator("name")`` or the entry-point
group ``nas.evaluators``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Mapping

from search_spaces import Architecture, SearchSpace
from search_spaces.errors import InputError
from search_spaces.plugins import load_plugins

COST_TIERS = ("table", "measure", "train")
ENTRY_POINT_GROUP = "nas.evaluators"
_EVALUATORS: dict[str, type["Evaluator"]] = {}
_BUILTIN_MODULES = ("evaluators.builtin", "evaluators.zero_cost", "evaluators.supernet")
_loaded = False


class Evaluator(ABC):
    name: str = ""
    cost: str = "train"

    @abstractmethod
    def __call__(self, arch: Architecture, space: SearchSpace) -> Mapping[str, float]:
        """Metrics for one architecture."""

    def check(self, space: SearchSpace) -> None:
        """InputError for options that cannot work with ``space`` (e.g. a checkpoint of
        another space, a decision it lacks). The engine calls it before it writes a run
        folder, so a bad config fails before anything is written. Default: nothing."""


def register_evaluator(name: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
    def decorate(cls):
        if cls.cost not in COST_TIERS:
            raise ValueError(f"evaluator {name!r}: cost must be one of {COST_TIERS}, got {cls.cost!r}")
        cls.name = name
        _EVALUATORS[name] = cls
        return cls

    return decorate


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    load_plugins(_BUILTIN_MODULES, ENTRY_POINT_GROUP, _EVALUATORS, register_evaluator)


def list_evaluators() -> list[str]:
    _load()
    return sorted(_EVALUATORS)


def get_evaluator(name: str, **options) -> Evaluator:
    """Construct a registered evaluator; unknown names and options are input errors."""
    _load()
    if name not in _EVALUATORS:
        raise InputError(f"unknown evaluator {name!r}; registered: {sorted(_EVALUATORS)}")
    try:
        return _EVALUATORS[name](**options)
    except TypeError as exc:
        raise InputError(f"evaluator {name!r}: bad options {sorted(options)}: {exc}") from None


def by_cost(evaluators: list[Evaluator]) -> list[Evaluator]:
    """Cheapest tier first, stable within a tier."""
    return sorted(evaluators, key=lambda e: COST_TIERS.index(e.cost))
