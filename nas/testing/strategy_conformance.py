"""Conformance checks every search strategy must pass (for plugin authors too).

A *factory* builds the strategy under test: ``factory(space, objective, seed) ->
Strategy`` (for a registered one: ``lambda sp, obj, seed: get_strategy("mine", sp, obj,
seed)``). Run everything with::

    from nas.testing import run_strategy_conformance
    run_strategy_conformance(my_factory)

or one pytest test per check::

    import pytest
    from nas.testing import CHECKS

    @pytest.mark.parametrize("check", sorted(CHECKS))
    def test_my_strategy(check):
        CHECKS[check](my_factory)

The checks run on :class:`~nas.testing.toy_space.ToySpace` (540 networks, known optima)
with :func:`~nas.testing.toy_space.toy_metrics`, in every objective mode; each raises
AssertionError with what went wrong. They take a few seconds per strategy.
"""
from __future__ import annotations

import json
import statistics
from typing import Callable, Iterable

from search_spaces.architecture import Architecture
from search_spaces.base import SearchSpace

from ..objectives import Failure, Objective, pareto_front
from ..strategies.base import Strategy
from .toy_space import ToySpace, toy_metrics

StrategyFactory = Callable[[SearchSpace, Objective, int], Strategy]

#: One objective per mode; the 8 ms target cuts the toy space roughly in half.
OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective(mode="accuracy"),
    "constrained": Objective(mode="constrained", target_ms=8.0),
    "soft": Objective(mode="soft", target_ms=8.0),
    "pareto": Objective(mode="pareto"),
}
#: Reference point (accuracy, -latency) for toy hypervolumes: worse than every toy network.
TOY_REFERENCE_POINT = (0.0, -60.0)


# ----- helpers -----------------------------------------------------------------------------
def _json_state(strategy: Strategy) -> dict:
    state = strategy.state_dict()
    try:
        text = json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{type(strategy).__name__}.state_dict() is not plain JSON: {exc}") from None
    return json.loads(text)


def _ask_valid(strategy: Strategy, space: SearchSpace) -> Architecture | None:
    arch = strategy.ask()
    if arch is None:
        return None
    assert isinstance(arch, Architecture), f"ask() returned {type(arch).__name__}, not an Architecture"
    space.validate(arch)
    assert arch == space.canonicalize(arch), f"ask() returned a non-canonical architecture {arch.sample}"
    return arch


def _run(strategy: Strategy, space: SearchSpace, steps: int) -> list[tuple[Architecture, dict]]:
    """``steps`` sequential ask/tell rounds with toy metrics; stops early on None."""
    history = []
    for _ in range(steps):
        arch = _ask_valid(strategy, space)
        if arch is None:
            break
        metrics = toy_metrics(arch)
        strategy.tell(arch, metrics)
        history.append((arch, metrics))
    return history


def hypervolume_2d(points: Iterable[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both objectives maximised) above ``reference``."""
    pts = [p for p in points if p[0] > reference[0] and p[1] > reference[1]]
    front = sorted((pts[i] for i in pareto_front(pts)), key=lambda p: -p[0])
    area, last_y = 0.0, reference[1]
    for x, y in front:  # x descending, so y ascending along the front
        if y > last_y:
            area += (x - reference[0]) * (y - last_y)
            last_y = y
    return area


# ----- checks ------------------------------------------------------------------------------
def check_asks_are_valid(factory: StrategyFactory) -> None:
    """Every ask is a valid, canonical architecture of the space, in every mode."""
    space = ToySpace()
    for mode, objective in OBJECTIVES.items():
        history = _run(factory(space, objective, 0), space, 30)
        assert history, f"mode {mode!r}: the first ask() returned None on a 540-network space"


def check_determinism(factory: StrategyFactory) -> None:
    """Same seed and same tells give the same first 20 asks."""
    space = ToySpace()
    for mode in ("constrained", "pareto"):
        runs = [[a.id for a, _ in _run(factory(space, OBJECTIVES[mode], 7), space, 20)] for _ in range(2)]
        assert runs[0] == runs[1], f"mode {mode!r}: two runs with seed 7 differ at ask " \
            f"{next(i for i, (x, y) in enumerate(zip(*runs)) if x != y)}"


def check_state_round_trip(factory: StrategyFactory) -> None:
    """15 steps, state_dict -> JSON -> load_state_dict on a fresh instance: the next 10
    asks equal those of the uninterrupted run."""
    space = ToySpace()
    for mode in ("accuracy", "constrained", "soft", "pareto"):
        objective = OBJECTIVES[mode]
        original = factory(space, objective, 3)
        _run(original, space, 15)
        state = _json_state(original)
        resumed = factory(space, objective, 3)
        resumed.load_state_dict(state)
        for step in range(10):
            a, b = original.ask(), resumed.ask()
            assert a == b, f"mode {mode!r}: ask {15 + step} after resume is {b and b.sample}, " \
                f"uninterrupted run asked {a and a.sample}"
            if a is None:
                break
            metrics = toy_metrics(a)
            original.tell(a, metrics)
            resumed.tell(b, metrics)


def check_modes_improve(factory: StrategyFactory) -> None:
    """In each mode, 30 evaluations find a good network (known by enumerating the toy
    space) and beat the first evaluations, for at least 2 of 3 seeds."""
    space = ToySpace()
    everything = [toy_metrics(a) for a in space.all_architectures()]
    for mode, objective in OBJECTIVES.items():
        passed = []
        for seed in (0, 1, 2):
            history = _run(factory(space, objective, seed), space, 30)
            assert len(history) == 30, f"mode {mode!r}, seed {seed}: ask() returned None after {len(history)} steps"
            metrics = [m for _, m in history]
            if objective.is_multi_objective():
                hv = [hypervolume_2d([objective.values(m) for m in ms], TOY_REFERENCE_POINT)
                      for ms in (metrics[:5], metrics, everything)]
                # Random search reaches ~90% of the true front's hypervolume in 30 steps.
                passed.append(hv[1] > hv[0] and hv[1] >= 0.75 * hv[2])
            else:
                scores = sorted((objective.score(m) for m in everything), reverse=True)
                top20 = scores[len(scores) // 5]
                best = max(objective.score(m) for m in metrics)
                first = statistics.median(objective.score(m) for m in metrics[:5])
                passed.append(best >= top20 and best > first)
        assert sum(passed) >= 2, f"mode {mode!r}: no improvement over the first evaluations " \
            f"for seeds {[s for s, ok in zip((0, 1, 2), passed) if not ok]}"


def check_parallel_asks(factory: StrategyFactory) -> None:
    """Several asks before any tell, answered in another order, in every mode."""
    space = ToySpace()
    for mode, objective in OBJECTIVES.items():
        strategy = factory(space, objective, 0)
        for _ in range(6):
            batch = [a for a in (_ask_valid(strategy, space) for _ in range(4)) if a is not None]
            for arch in reversed(batch):
                strategy.tell(arch, toy_metrics(arch))
        assert _ask_valid(strategy, space) is not None, f"mode {mode!r}: nothing to ask after 24 parallel trials"
        _json_state(strategy)


def check_failures_survived(factory: StrategyFactory) -> None:
    """A Failure told (first trial, and later ones, also with asks pending) is survived."""
    space = ToySpace()
    for mode, objective in OBJECTIVES.items():
        strategy = factory(space, objective, 0)
        first = _ask_valid(strategy, space)
        assert first is not None
        strategy.tell(first, Failure("RuntimeError: out of memory"))
        pending = [_ask_valid(strategy, space) for _ in range(3)]
        strategy.tell(pending[1], Failure("nan loss"))
        for arch in (pending[0], pending[2]):
            strategy.tell(arch, toy_metrics(arch))
        for i in range(12):
            arch = _ask_valid(strategy, space)
            assert arch is not None
            strategy.tell(arch, Failure("timeout") if i % 4 == 0 else toy_metrics(arch))
        _json_state(strategy)


def check_unasked_tells(factory: StrategyFactory) -> None:
    """Results for architectures the strategy never asked (resume, user seeds) are
    accepted, also in non-canonical form, and the search goes on."""
    import random

    space = ToySpace()
    rng = random.Random(99)
    for mode, objective in OBJECTIVES.items():
        strategy = factory(space, objective, 0)
        for i in range(6):
            arch = space.sample(rng)
            if arch.sample["se"] is False:  # an inactive decision off its default: not canonical
                arch = arch.replace(se_ratio=0.5)
            strategy.tell(arch, toy_metrics(arch) if i != 2 else Failure("crashed before resume"))
        history = _run(strategy, space, 15)
        assert len(history) == 15, f"mode {mode!r}: ask() returned None after unasked tells"
        _json_state(strategy)


#: name -> check; each takes a StrategyFactory and raises AssertionError on failure.
CHECKS: dict[str, Callable[[StrategyFactory], None]] = {
    "asks_are_valid": check_asks_are_valid,
    "determinism": check_determinism,
    "state_round_trip": check_state_round_trip,
    "modes_improve": check_modes_improve,
    "parallel_asks": check_parallel_asks,
    "failures_survived": check_failures_survived,
    "unasked_tells": check_unasked_tells,
}


def run_strategy_conformance(factory: StrategyFactory, checks: Iterable[str] | None = None) -> list[str]:
    """Run the named checks (default: all); returns their names. Raises AssertionError
    naming the first check that failed."""
    names = list(checks) if checks is not None else list(CHECKS)
    for name in names:
        try:
            CHECKS[name](factory)
        except AssertionError as exc:
            raise AssertionError(f"strategy conformance check {name!r} failed: {exc}") from exc
    return names
