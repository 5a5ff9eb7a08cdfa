"""The search-strategy contract and the strategy registry.

A strategy proposes architectures (``ask``) and learns from their results (``tell``);
the engine owns the loop, the budget, the evaluators and the run folder.
"""
from __future__ import annotations

import inspect
import random
from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping, Union

from search_spaces.architecture import Architecture
from search_spaces.base import SearchSpace
from search_spaces.errors import InputError, is_number
from search_spaces.plugins import load_plugins

from ..objectives import Failure, Metrics, Objective

Result = Union[Metrics, Failure]


class Strategy(ABC):
    """Base class of every search strategy.

    Construction: ``Strategy(space, objective, seed=0, *, option=..., ...)``. Options
    are explicit keyword arguments of the subclass with documented defaults. All
    randomness comes from generators created in ``__init__`` from ``seed``
    (``self.rng``, a :class:`random.Random`, and/or a numpy Generator), never from
    global state, so a run is reproducible from (space, objective, seed, options).

    Call order:
      * ``ask()`` any number of times; each returned architecture is answered by exactly
        one ``tell(arch, result)``, in any order. ``ask`` may be called several times
        before the first ``tell``, so a parallel runner can keep N trials in flight.
      * ``ask()`` returns a canonical architecture of ``space``, or None when the
        strategy has nothing more to propose (e.g. a small space is exhausted). The
        budget is the engine's business, not the strategy's.
      * ``tell(arch, result)``: ``result`` is the metrics mapping, or a
        :class:`~nas.objectives.Failure` for a trial that raised or produced non-finite
        metrics. A failure must never crash the strategy. ``tell`` must also accept
        architectures the strategy did not ask for (results replayed on resume, seeds
        from a user), learning from them as best it can.
      * ``state_dict()`` returns plain JSON-serialisable data (dicts, lists, str, int,
        float, bool, None; no pickles, no NaN). ``load_state_dict(state)`` on a fresh
        instance built with the same constructor arguments restores it so that the next
        ``ask``/``tell`` sequence is identical to that of an uninterrupted run. Take the
        state when no ask is pending: pending asks are not part of it (the engine
        re-asks after a crash).

    Thread safety: none. A strategy is used from one thread; a parallel runner calls it
    from its driver loop only.
    """

    name: str = ""
    #: False for black-box strategies, which work on any space and objective mode through
    #: ``decisions()``/``sample``/``mutate`` alone and must pass the conformance suite
    #: (:mod:`nas.testing`). True for a strategy that trains a supernet of the space inside
    #: ``ask`` (tied to spaces that build networks); the suite's test loop skips those.
    gradient_based: bool = False

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0) -> None:
        self.space = space
        self.objective = objective
        self.seed = int(seed)
        self.rng = random.Random(self.seed)

    @abstractmethod
    def ask(self) -> Architecture | None:
        """The next architecture to evaluate, or None when there is nothing left to propose."""

    @abstractmethod
    def tell(self, arch: Architecture, result: Result) -> None:
        """The result of evaluating ``arch`` (metrics, or a Failure)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically, as plain JSON-serialisable data."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, on a freshly constructed instance."""

    @classmethod
    def check_options(cls, space: SearchSpace, objective: Objective, options: Mapping[str, Any]) -> None:
        """InputError for an option value this strategy would refuse with this space and
        objective. Constructs nothing and writes nothing, so the engine calls it before the
        run folder is created; constructors call it too, so the rules live in one place."""

    @classmethod
    def proposals(cls, options: Mapping[str, Any]) -> int | None:
        """The most architectures a strategy built with ``options`` proposes in all, when
        that is fixed in advance (None: open-ended). The engine refuses a budget smaller
        than this, which would leave proposals unevaluated without a word."""
        return None

    # ----- helpers for subclasses -----------------------------------------------------
    def _key(self, arch: Architecture) -> str:
        """Identity of the network: the canonical form's id (equal networks, equal keys)."""
        return self.space.canonicalize(arch).id


def check_number(strategy: str, options: Mapping[str, Any], name: str, rule: str,
                 ok: Callable[[float], bool]) -> None:
    """InputError unless option ``name``, when given, is a number (not a bool) for which
    ``ok`` holds; ``rule`` says which numbers are allowed (e.g. "a whole number >= 1")."""
    if name not in options:
        return
    value = options[name]
    if not is_number(value) or not ok(value):
        raise InputError(f"{strategy} option {name!r}: {value!r} is not {rule}")


def check_count(strategy: str, options: Mapping[str, Any], name: str, minimum: int) -> None:
    """:func:`check_number` for a count: an int (not 10.0) of at least ``minimum``."""
    check_number(strategy, options, name, f"a whole number >= {minimum}", lambda v: isinstance(v, int) and v >= minimum)


def check_flags(strategy: str, options: Mapping[str, Any], *names: str) -> None:
    """InputError unless each option in ``names``, when given, is true or false: YAML's
    ``"no"`` in quotes, or 0, would otherwise switch a flag by truthiness, silently."""
    for name in names:
        if name in options and not isinstance(options[name], bool):
            raise InputError(f"{strategy} option {name!r}: {options[name]!r} is not true or false")


def option_default(cls: type, name: str) -> Any:
    """The default of keyword ``name`` in ``cls.__init__``: checks that need an option the
    user did not give read it here rather than restating it."""
    return inspect.signature(cls.__init__).parameters[name].default


def is_failure(result: Result) -> bool:
    return isinstance(result, Failure)


def random_state_to_json(rng: random.Random) -> list:
    """``random.Random`` state as JSON-able lists (``getstate`` is a nested tuple)."""
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def random_state_from_json(rng: random.Random, state: list) -> None:
    version, internal, gauss_next = state
    rng.setstate((version, tuple(internal), gauss_next))


def result_to_json(result: Result) -> dict[str, Any]:
    """A told result as plain data: the metrics dict, or ``{"__failure__": error}``."""
    if isinstance(result, Failure):
        return {"__failure__": result.error}
    return {str(k): float(v) for k, v in result.items()}


def result_from_json(data: Mapping[str, Any]) -> Result:
    if "__failure__" in data:
        return Failure(str(data["__failure__"]))
    return {str(k): float(v) for k, v in data.items()}


# ----- registry ---------------------------------------------------------------------------
ENTRY_POINT_GROUP = "nas.strategies"
_STRATEGIES: dict[str, type[Strategy]] = {}
_loaded = False
# In-tree strategies, imported on first look-up so `import nas.strategies` stays light
# (tpe imports optuna; rl imports numpy).
_BUILTIN_MODULES = (
    "nas.strategies.random_search",
    "nas.strategies.evolution",
    "nas.strategies.rl",
    "nas.strategies.tpe",
    "nas.strategies.darts",
)


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: ``@register_strategy("my_strategy")``; sets ``cls.name``.

    A third-party package registers without editing this repository by declaring::

        [project.entry-points."nas.strategies"]
        my_strategy = "my_pkg.strategies:MyStrategy"
    """

    def decorate(cls: type[Strategy]) -> type[Strategy]:
        existing = _STRATEGIES.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"strategy {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"strategy {name!r} must be a subclass of nas.strategies.Strategy, got {cls!r}")
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return decorate


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    load_plugins(_BUILTIN_MODULES, ENTRY_POINT_GROUP, _STRATEGIES, register_strategy)


def list_strategies() -> list[str]:
    _load()
    return sorted(_STRATEGIES)


def get_strategy_class(name: str) -> type[Strategy]:
    _load()
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise InputError(
            f"unknown strategy {name!r}; registered: {sorted(_STRATEGIES)} "
            f"(plugins register through the entry-point group {ENTRY_POINT_GROUP!r})") from None


def checked_strategy_class(name: str, options: Mapping[str, Any]) -> type[Strategy]:
    """The registered class, after checking that it takes every option named (an
    InputError listing the options it does take otherwise). Constructs nothing, so a
    config can be checked before its run folder is created."""
    cls = get_strategy_class(name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = [n for n in params if n not in ("self", "space", "objective", "seed")]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise InputError(f"strategy {name!r}: unknown option(s) {unknown} in config field 'strategy.options'; "
                             f"its options are {allowed}")
    return cls


def get_strategy(name: str, space: SearchSpace, objective: Objective, seed: int = 0, **options: Any) -> Strategy:
    """Construct a registered strategy; ``options`` are its keyword arguments."""
    cls = checked_strategy_class(name, options)
    try:
        return cls(space, objective, seed=seed, **options)
    except TypeError as exc:  # a strategy taking **kwargs passes them on: name it in the message
        raise TypeError(f"strategy {name!r}: {exc}") from None
