"""Regularized (aging) evolution, Real et al. 2019, "Regularized Evolution for Image
Classifier Architecture Search" (AmoebaNet).

The population is a queue of the last ``population_size`` evaluated architectures. Until
it is full, asks are uniform random samples. Then each ask is a tournament: draw
``sample_size`` members at random, mutate the best one (``space.mutate``: one decision
changed), and the evaluated child joins the queue while the *oldest* member, not the
worst, leaves. Aging keeps lucky-but-mediocre individuals from ruling forever, which is
the regularisation of the title.

Changes from the textbook algorithm, all general-purpose:
  * no wasted evaluations on duplicates (``avoid_duplicates``): a child whose network is
    pending or failed is re-drawn (other neighbours of the parent first, then a longer
    random walk);
  * known results are reused (``reuse_results``): a child that was already evaluated
    joins the population with its known result at once, as re-evaluating it would in the
    textbook version (which keeps good networks alive), but without spending an
    evaluation, and the tournament runs again;
  * defaults tuned on NAS-Bench-201 (``bench/strategies_nb201.py``; P in 4..40, S in
    2..20, 100-400 seeds): P=10, S=10. The paper's P=100/S=25 is meant for ~20k
    evaluations; with a few hundred, a small population and a greedy tournament (S = P:
    always mutate the best of the last P evaluations; aging alone regularises) needed
    the fewest evaluations (S=P/2 was ~15% slower, the textbook P=20/S=5 ~40% slower).

Objective modes: in ``accuracy``/``constrained``/``soft`` the tournament winner has the
highest ``objective.score``. In ``pareto`` mode each ask draws a preference weight
uniformly in [0, 1] and the winner maximises ``objective.scalarize`` with that weight,
normalised by the population's current min/max; over many asks the population spreads
along the front instead of collapsing on one trade-off. (Chosen over Pareto rank +
crowding because the same rule works for the one-at-a-time asks of aging evolution,
where rank and crowding within a small sample carry little information.)
"""
from __future__ import annotations

from collections import deque
from typing import Any, Mapping

from search_spaces.architecture import Architecture
from search_spaces.base import SearchSpace
from search_spaces.errors import InputError

from ..objectives import Metrics, Objective, value_bounds
from .base import (
    Result, Strategy, check_count, check_flags, check_number, option_default, is_failure, random_state_from_json, random_state_to_json, register_strategy, result_from_json,
    result_to_json,
)


@register_strategy("evolution")
class RegularizedEvolution(Strategy):
    """Aging evolution.

    Options:
      ``population_size`` (P, default 10): members kept; also the number of random
          initial samples.
      ``sample_size`` (S, default 10): tournament size, drawn without replacement;
          larger is greedier, S = P always picks the population's best.
      ``max_tries`` (20): attempts to find a child (or initial sample) not proposed before.
      ``avoid_duplicates`` (True), ``reuse_results`` (True): see the module docstring.
    Failed trials are not added to the population (they are remembered as seen).
    """

    @classmethod
    def check_options(cls, space: SearchSpace, objective: Objective, options: Mapping[str, Any]) -> None:
        for name in ("population_size", "sample_size", "max_tries"):
            check_count("evolution", options, name, 1)
        check_flags("evolution", options, "avoid_duplicates", "reuse_results")
        population, sample = (options.get(n, option_default(cls, n)) for n in ("population_size", "sample_size"))
        if sample > population:
            raise InputError(f"evolution option 'sample_size' ({sample}) is larger than 'population_size' "
                             f"({population}); a tournament draws from the population, so set it at most {population}")

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0, *,
                 population_size: int = 10, sample_size: int = 10, max_tries: int = 20,
                 avoid_duplicates: bool = True, reuse_results: bool = True) -> None:
        super().__init__(space, objective, seed)
        self.check_options(space, objective, dict(population_size=population_size, sample_size=sample_size,
                                                  max_tries=max_tries, avoid_duplicates=avoid_duplicates,
                                                  reuse_results=reuse_results))
        self.population_size = population_size
        self.sample_size = sample_size
        self.max_tries = max_tries
        self.avoid_duplicates = avoid_duplicates
        self.reuse_results = reuse_results
        self._results: dict[str, Metrics] = {}  # canonical id -> metrics of every success
        # Oldest first; each member is (architecture, metrics).
        self._population: deque[tuple[Architecture, Metrics]] = deque()
        self._seen: dict[str, None] = {}

    # ----- ask ---------------------------------------------------------------------------
    def ask(self) -> Architecture | None:
        arch = None
        for _ in range(self.max_tries * 10):  # cheap: no evaluation happens in here
            if len(self._population) < self.population_size:
                arch = self._random_unseen()
            else:
                arch = self._child_of(self._tournament())
            known = self._results.get(arch.id) if self.reuse_results else None
            if known is None:
                break
            # A child we already evaluated: it joins the population with its known result
            # (as re-evaluating it would, without spending an evaluation) and we go again.
            self._add(arch, known)
        assert arch is not None
        self._seen[arch.id] = None
        return arch

    def _random_unseen(self) -> Architecture:
        arch = self.space.sample(self.rng)
        for _ in range(self.max_tries - 1):
            if arch.id not in self._seen:
                break
            arch = self.space.sample(self.rng)
        return arch

    def _tournament(self) -> Architecture:
        contestants = self.rng.sample(list(self._population), self.sample_size)
        if self.objective.is_multi_objective():
            weight = self.rng.random()
            bounds = value_bounds([self.objective.values(m) for _, m in self._population])
            scores = [self.objective.scalarize(m, weight, bounds) for _, m in contestants]
        else:
            scores = [self.objective.score(m) for _, m in contestants]
        best = max(range(len(contestants)), key=scores.__getitem__)  # first of equals: stable
        return contestants[best][0]

    def _child_of(self, parent: Architecture) -> Architecture:
        child = self.space.mutate(parent, self.rng)
        for attempt in range(self.max_tries - 1 if self.avoid_duplicates else 0):
            if child.id not in self._seen or (self.reuse_results and child.id in self._results):
                break
            # First try the parent's other neighbours, then walk further away: a parent
            # whose whole neighbourhood was evaluated still gets a new child.
            child = self.space.mutate(parent if attempt < self.max_tries // 2 else child, self.rng)
        return child

    # ----- tell --------------------------------------------------------------------------
    def tell(self, arch: Architecture, result: Result) -> None:
        arch = self.space.canonicalize(arch)
        self._seen[arch.id] = None
        if is_failure(result):
            return
        metrics = {str(k): float(v) for k, v in result.items()}
        # Validate now, so a bad result fails at its own tell, not at a later ask.
        if self.objective.is_multi_objective():
            self.objective.values(metrics)
        else:
            self.objective.score(metrics)
        self._results[arch.id] = metrics
        self._add(arch, metrics)

    def _add(self, arch: Architecture, metrics: Metrics) -> None:
        self._population.append((arch, metrics))
        if len(self._population) > self.population_size:
            self._population.popleft()  # the oldest dies, not the worst

    # ----- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": random_state_to_json(self.rng),
            "seen": list(self._seen),
            "results": {k: result_to_json(m) for k, m in self._results.items()},
            "population": [{"sample": dict(a.sample), "result": result_to_json(m)} for a, m in self._population],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        random_state_from_json(self.rng, state["rng"])
        self._seen = dict.fromkeys(state["seen"])
        self._results = {k: result_from_json(m) for k, m in state["results"].items()}
        self._population = deque(
            (self.space.from_sample(m["sample"]), result_from_json(m["result"])) for m in state["population"])
