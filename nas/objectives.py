"""How evaluation metrics become what a search strategy optimises.

An evaluation returns ``Metrics``: a flat mapping of metric name to float (``{"map50":
0.41, "latency_ms": 23.5, ...}``). An :class:`Objective` says which metric is the
accuracy (bigger is better) and which the latency (smaller is better), and how to trade
one for the other. Strategies never read metric names themselves: they call

* :meth:`Objective.score` -- one float to *maximise* (modes ``accuracy``,
  ``constrained``, ``soft``; in ``pareto`` mode only with a weight), or
* :meth:`Objective.values` -- ``(accuracy, -latency)``, both maximised, for
  multi-objective strategies, and :meth:`Objective.scalarize` to turn those into one
  float for a given preference weight.

Modes (looked up in :data:`MODES`, so a new one is one entry, not another ``elif``):

``accuracy``     score = accuracy; latency is ignored and need not be reported. For
                 benchmarks that only have an accuracy (NAS-Bench-201).
``constrained``  hard latency budget: score = accuracy when ``latency <= target_ms``,
                 otherwise ``-latency / target_ms`` (``= -1 - (latency/target - 1)``),
                 which is below -1 and so strictly below any feasible score (accuracies
                 are >= 0), and still rises as the latency falls, so a strategy that only
                 ever sees infeasible points learns which way to go.
``soft``         MnasNet's soft constraint: score = ``accuracy * (latency/target) ** w``
                 with ``w = soft_exponent`` (default -0.07: 2x slower costs ~5% accuracy).
``pareto``       no single score: strategies use :meth:`values` or :meth:`scalarize`.

:class:`Failure` is what a strategy's ``tell`` receives for a trial that raised or
returned a non-finite metric; it is never turned into a made-up score here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

Metrics = Mapping[str, float]

# Augmented Tchebycheff: the small linear term breaks ties between weakly-dominated points
# (Steuer & Choo 1983); 0.05 is the usual order of magnitude.
TCHEBYCHEFF_RHO = 0.05


@dataclass(frozen=True)
class Failure:
    """The result ``tell`` receives for a trial that raised or produced NaN/inf metrics."""

    error: str


def _accuracy_score(obj: "Objective", metrics: Metrics) -> float:
    return obj.accuracy_of(metrics)


def _constrained_score(obj: "Objective", metrics: Metrics) -> float:
    # Latency first: a candidate rejected on its table latency has no accuracy at all.
    lat = obj.latency_of(metrics)
    assert obj.target_ms is not None
    if lat <= obj.target_ms:
        return obj.accuracy_of(metrics)
    return -1.0 - (lat / obj.target_ms - 1.0)


def _soft_score(obj: "Objective", metrics: Metrics) -> float:
    acc, lat = obj.accuracy_of(metrics), obj.latency_of(metrics)
    assert obj.target_ms is not None
    if lat <= 0:
        raise ValueError(f"metric {obj.latency!r} must be > 0 for the soft objective, got {lat!r}")
    return acc * (lat / obj.target_ms) ** obj.soft_exponent


def _pareto_score(obj: "Objective", metrics: Metrics) -> float:
    raise ValueError(
        "objective mode 'pareto' has no single score: use values(metrics), or "
        "score(metrics, weight=..., bounds=...) / scalarize(...) with a preference weight")


@dataclass(frozen=True)
class _Mode:
    score: Callable[["Objective", Metrics], float]
    needs_target: bool
    needs_latency: bool


#: Registry of objective modes: name -> how it scores and what it requires.
MODES: dict[str, _Mode] = {
    "accuracy": _Mode(_accuracy_score, needs_target=False, needs_latency=False),
    "constrained": _Mode(_constrained_score, needs_target=True, needs_latency=True),
    "soft": _Mode(_soft_score, needs_target=True, needs_latency=True),
    "pareto": _Mode(_pareto_score, needs_target=False, needs_latency=True),
}

Bounds = Sequence[Sequence[float]]  # ((acc_lo, acc_hi), (neg_lat_lo, neg_lat_hi)) over values()


@dataclass(frozen=True)
class Objective:
    """What to maximise. Immutable; validated on construction.

    ``mode``           one of :data:`MODES` (see the module docstring).
    ``accuracy``       metric name of the accuracy, bigger is better (default ``map50``).
    ``latency``        metric name of the latency in ms, smaller is better.
    ``target_ms``      latency target; required by ``constrained`` and ``soft``.
    ``soft_exponent``  MnasNet's ``w`` for ``soft`` (default -0.07; must be <= 0).
    """

    mode: str = "constrained"
    accuracy: str = "map50"
    latency: str = "latency_ms"
    target_ms: float | None = None
    soft_exponent: float = -0.07

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown objective mode {self.mode!r}; known modes: {sorted(MODES)}")
        if not self.accuracy or not isinstance(self.accuracy, str):
            raise ValueError(f"field 'accuracy' must name a metric, got {self.accuracy!r}")
        if not self.latency or not isinstance(self.latency, str):
            raise ValueError(f"field 'latency' must name a metric, got {self.latency!r}")
        if MODES[self.mode].needs_target:
            if self.target_ms is None:
                raise ValueError(f"objective mode {self.mode!r} needs field 'target_ms' (the latency target in ms)")
        if self.target_ms is not None and not (math.isfinite(self.target_ms) and self.target_ms > 0):
            raise ValueError(f"field 'target_ms' must be a positive number, got {self.target_ms!r}")
        if not math.isfinite(self.soft_exponent) or self.soft_exponent > 0:
            raise ValueError(f"field 'soft_exponent' must be a finite number <= 0, got {self.soft_exponent!r}")

    # ----- reading metrics -----------------------------------------------------------
    def _metric(self, metrics: Metrics, name: str) -> float:
        if isinstance(metrics, Failure):
            raise TypeError(f"a Failure has no metrics ({metrics.error}); strategies must not score it")
        try:
            value = float(metrics[name])
        except KeyError:
            raise ValueError(f"metric {name!r} missing from the result; got {sorted(metrics)}") from None
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is {value!r}; a non-finite result must be told as a Failure")
        return value

    def accuracy_of(self, metrics: Metrics) -> float:
        return self._metric(metrics, self.accuracy)

    def latency_of(self, metrics: Metrics) -> float:
        return self._metric(metrics, self.latency)

    def is_multi_objective(self) -> bool:
        return self.mode == "pareto"

    # ----- single objective ----------------------------------------------------------
    def feasible(self, metrics: Metrics) -> bool:
        """True unless the mode is ``constrained`` and the latency exceeds the target."""
        if self.mode == "constrained":
            assert self.target_ms is not None
            return self.latency_of(metrics) <= self.target_ms
        return True

    def score(self, metrics: Metrics, weight: float | None = None, bounds: Bounds | None = None) -> float:
        """One float to maximise. In ``pareto`` mode, only with ``weight`` (and ``bounds``),
        where it is :meth:`scalarize`."""
        if self.mode == "pareto" and weight is not None:
            return self.scalarize(metrics, weight, bounds)
        return MODES[self.mode].score(self, metrics)

    # ----- multi objective -----------------------------------------------------------
    def values(self, metrics: Metrics) -> tuple[float, float]:
        """``(accuracy, -latency)``: both maximised."""
        return (self.accuracy_of(metrics), -self.latency_of(metrics))

    def scalarize(self, metrics: Metrics, weight: float, bounds: Bounds | None = None) -> float:
        """Augmented Tchebycheff scalarisation of :meth:`values`, to maximise.

        ``weight`` in [0, 1] is the preference for accuracy (1 - weight for latency).

        Normalisation: each of the two values ``v`` is mapped to ``(v - lo) / (hi - lo)``
        with ``bounds = ((acc_lo, acc_hi), (neg_lat_lo, neg_lat_hi))`` given over
        :meth:`values` (so the latency bounds are negated latencies). The *caller* owns
        the bounds: typically the running min/max of the values seen so far
        (:func:`value_bounds`), or fixed bounds known in advance. Without bounds, the raw
        values are used (only sensible when both are already on comparable scales). The
        ideal point is 1 on both normalised axes, and the score is

            -( max_i lambda_i (1 - n_i) + rho * sum_i lambda_i (1 - n_i) ),
            lambda = (weight, 1 - weight), rho = TCHEBYCHEFF_RHO,

        which is 0 at the ideal and more negative the further away. Unlike a weighted sum,
        maximising it over all weights reaches every Pareto-optimal point, also those on
        concave parts of the front.
        """
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight!r}")
        vals = self.values(metrics)
        if bounds is None:
            normalised = vals
        else:
            if len(bounds) != 2 or any(len(b) != 2 for b in bounds):
                raise ValueError(f"bounds must be ((acc_lo, acc_hi), (neg_lat_lo, neg_lat_hi)), got {bounds!r}")
            normalised = tuple(
                (v - lo) / (hi - lo) if hi > lo else 1.0  # one distinct value: it is the best seen
                for v, (lo, hi) in zip(vals, bounds))
        lambdas = (weight, 1.0 - weight)
        gaps = [lam * (1.0 - n) for lam, n in zip(lambdas, normalised)]
        return -(max(gaps) + TCHEBYCHEFF_RHO * sum(gaps))


def value_bounds(points: Sequence[Sequence[float]]) -> list[list[float]] | None:
    """Per-axis ``[min, max]`` of a set of value tuples (for :meth:`Objective.scalarize`);
    None for no points. Plain lists, so they are JSON-serialisable."""
    if not points:
        return None
    return [[min(p[i] for p in points), max(p[i] for p in points)] for i in range(len(points[0]))]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True if ``a`` is at least as good as ``b`` everywhere and better somewhere (maximisation)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices (ascending) of the non-dominated points, all objectives maximised.

    Equal points do not dominate each other, so duplicates of a front point are all kept.
    O(n^2), which is fine for the few thousand evaluations of a search.
    """
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]
