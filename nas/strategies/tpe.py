"""TPE (Bergstra et al. 2011) through Optuna's ask/tell interface.

A thin adapter: each decision of the space is a categorical parameter
(``trial.suggest_categorical``), ``ask`` is ``study.ask()`` plus one suggestion per
decision, ``tell`` is ``study.tell``. Optuna is imported only here.

* Objective: single-objective modes maximise ``objective.score``; ``pareto`` mode is a
  two-direction study (maximise, maximise) on ``objective.values`` = (accuracy,
  -latency), which Optuna's TPE handles natively (Ozaki et al. 2020).
* Parallel asks: ``constant_liar=True`` (default) makes TPE treat trials still running
  as bad, so N asks in flight are not N copies of the same guess.
* Determinism and resume: Optuna's sampler keeps a private random state we cannot save
  as plain data, so the sampler is rebuilt before every ask with a seed derived from
  (seed, number of asks so far). The strategy's state is then just the list of told
  results; ``load_state_dict`` replays it into a fresh study with ``study.add_trial``,
  and the next asks are those of an uninterrupted run.
* Storage: ``storage_path`` keeps the study in ``sqlite:///PATH``, which
  ``optuna-dashboard sqlite:///PATH`` can open; default in memory. If the file already
  holds the study (same ``study_name``), it is reused (``load_if_exists``): every told
  trial carries a ``nas_tell_index`` user attribute, so ``load_state_dict`` adds only the
  told results the file does not have yet, never twice. Trials left RUNNING in the file
  by a process that died are marked FAIL, so the constant liar does not count them forever.

* Duplicates (``reuse_results``): when TPE proposes a network already evaluated, the
  trial is told its known result at once and TPE is asked again (up to ``max_redraws``
  times), so a concentrated TPE does not spend evaluations on its favourites.

Why these defaults (NAS-Bench-201, ``bench/strategies_nb201.py``; tuned on seeds
2000-2099, 3000-3199 and 4000-4399, not the reported 0-99 / 1000-1099):
``multivariate=True`` models the decisions jointly (the cell's edges interact) and
needed about half the evaluations of independent TPE; ``n_startup_trials=5`` (3..20
tried; 5 and 7 were best on two ranges, but on 400 fresh seeds 5 and Optuna's 10 were
within noise of each other, 33 vs 35 evaluations); ``n_ei_candidates`` stays 24 (64 was
no better); reusing known results gained a few percent. Optuna 5 deprecates
``consider_endpoints`` and ``gamma``, so they are left alone.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Mapping

import numpy as np

from search_spaces.architecture import Architecture
from search_spaces.base import SearchSpace
from search_spaces.errors import InputError

from ..objectives import Objective
from .base import Result, Strategy, check_count, check_flags, is_failure, register_strategy, result_from_json, result_to_json

_TELL_INDEX = "nas_tell_index"
_RESULT = "nas_result"
_ARCH_ID = "nas_arch_id"


@register_strategy("tpe")
class TPEStrategy(Strategy):
    """Optuna's TPESampler over ``space.decisions()``.

    Options:
      ``n_startup_trials`` (5): random trials before TPE starts modelling.
      ``n_ei_candidates`` (24): candidates scored by l(x)/g(x) per ask.
      ``multivariate`` (True): joint (multivariate) TPE instead of one model per decision.
      ``constant_liar`` (True): pending trials count as bad while running.
      ``reuse_results`` (True) / ``max_redraws`` (20): see the module docstring.
      ``storage_path`` (None): SQLite file for the study (in memory when None).
      ``study_name`` ("nas"): the study's name in the storage.
    """

    @classmethod
    def check_options(cls, space: SearchSpace, objective: Objective, options: Mapping[str, Any]) -> None:
        check_count("tpe", options, "n_startup_trials", 0)
        check_count("tpe", options, "n_ei_candidates", 1)
        check_count("tpe", options, "max_redraws", 0)
        check_flags("tpe", options, "multivariate", "constant_liar", "reuse_results")

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0, *,
                 n_startup_trials: int = 5, n_ei_candidates: int = 24, multivariate: bool = True,
                 constant_liar: bool = True, reuse_results: bool = True, max_redraws: int = 20,
                 storage_path: str | None = None, study_name: str = "nas") -> None:
        super().__init__(space, objective, seed)
        self.check_options(space, objective, dict(n_startup_trials=n_startup_trials, n_ei_candidates=n_ei_candidates,
                                                  max_redraws=max_redraws, multivariate=multivariate,
                                                  constant_liar=constant_liar, reuse_results=reuse_results))
        import optuna
        from optuna.distributions import CategoricalDistribution

        self._optuna = optuna
        optuna.logging.set_verbosity(logging.WARNING)  # no INFO line per trial
        self.n_startup_trials = n_startup_trials
        self.n_ei_candidates = n_ei_candidates
        self.multivariate = multivariate
        self.constant_liar = constant_liar
        self.reuse_results = reuse_results
        self.max_redraws = max_redraws
        self.storage_path = storage_path
        self.study_name = study_name
        self._distributions = {name: CategoricalDistribution(list(choices))
                               for name, choices in space.decisions().items()}
        directions = ["maximize", "maximize"] if objective.is_multi_objective() else ["maximize"]
        self._study = optuna.create_study(
            storage=f"sqlite:///{storage_path}" if storage_path else None,
            sampler=self._sampler(0), study_name=study_name, directions=directions, load_if_exists=True)
        if [d.name.lower() for d in self._study.directions] != directions:
            raise InputError(f"study {study_name!r} in {storage_path} has directions "
                             f"{[d.name for d in self._study.directions]}, this objective needs {directions}; "
                             "use another tpe option 'study_name' or 'storage_path'")
        self._pending: dict[str, deque[Any]] = {}  # arch id -> optuna Trials asked, not told
        # Told results in tell order: {"number", "params", "result"} (plain data).
        self._told: list[dict[str, Any]] = []
        self._n_asked = 0
        self._known: dict[str, Result] = {}  # canonical id -> result of every success told
        self._adopt_existing_trials()

    # ----- optuna plumbing -----------------------------------------------------------------
    def _sampler(self, n_asked: int):
        seed = int(np.random.SeedSequence([self.seed, n_asked]).generate_state(1)[0])
        return self._optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=self.n_startup_trials, n_ei_candidates=self.n_ei_candidates,
            multivariate=self.multivariate, constant_liar=self.constant_liar)

    def _adopt_existing_trials(self) -> None:
        """Reuse a study already in the storage: its told trials become our history."""
        TrialState = self._optuna.trial.TrialState
        told = []
        self._orphans = 0
        for t in self._study.get_trials(deepcopy=False):
            if t.state == TrialState.RUNNING:  # left by a process that died: never coming back
                self._study.tell(t.number, state=TrialState.FAIL)
                self._orphans += 1
            elif _TELL_INDEX in t.user_attrs:
                told.append((t.user_attrs[_TELL_INDEX],
                             {"number": t.number, "params": dict(t.params), "result": t.user_attrs[_RESULT]}))
        self._told = [entry for _, entry in sorted(told, key=lambda x: x[0])]
        self._n_asked = len(self._study.get_trials(deepcopy=False))
        self._rebuild_known()

    def _rebuild_known(self) -> None:
        self._known = {}
        for entry in self._told:
            result = result_from_json(entry["result"])
            if not is_failure(result):
                self._known[self.space.from_sample(entry["params"]).id] = result

    def _values(self, result: Result) -> list[float] | None:
        if is_failure(result):
            return None
        if self.objective.is_multi_objective():
            return list(self.objective.values(result))
        return [self.objective.score(result)]

    def _user_attrs(self, index: int, arch_id: str, result: Result) -> dict[str, Any]:
        return {_TELL_INDEX: index, _ARCH_ID: arch_id, _RESULT: result_to_json(result)}

    def _add_finished(self, params: Mapping[str, Any], result: Result, attrs: dict[str, Any]) -> None:
        TrialState = self._optuna.trial.TrialState
        values = self._values(result)
        self._study.add_trial(self._optuna.trial.create_trial(
            state=TrialState.FAIL if values is None else TrialState.COMPLETE, values=values,
            params=dict(params), distributions=self._distributions, user_attrs=attrs))

    # ----- ask / tell ----------------------------------------------------------------------
    def ask(self) -> Architecture | None:
        redraws = self.max_redraws if self.reuse_results else 0
        for attempt in range(redraws + 1):
            self._study.sampler = self._sampler(self._n_asked)
            self._n_asked += 1
            trial = self._study.ask()
            sample = {name: trial.suggest_categorical(name, d.choices) for name, d in self._distributions.items()}
            arch = self.space.from_sample(sample)
            known = self._known.get(arch.id)
            if known is None or attempt == redraws:  # out of redraws: evaluate the duplicate
                break
            # Already evaluated: TPE gets the known result at once (no evaluation spent;
            # otherwise a concentrated TPE keeps re-proposing its favourites) and we ask again.
            self._finish(trial, arch, known)
        self._pending.setdefault(arch.id, deque()).append(trial)
        return arch

    def _finish(self, trial: Any, arch: Architecture, result: Result) -> None:
        """Tell an asked optuna trial and record it in the told history."""
        values = self._values(result)
        for key, value in self._user_attrs(len(self._told), arch.id, result).items():
            trial.set_user_attr(key, value)
        state = self._optuna.trial.TrialState.FAIL if values is None else None
        frozen = self._study.tell(trial, values, state=state)
        self._told.append({"number": frozen.number, "params": dict(frozen.params), "result": result_to_json(result)})
        if values is not None:
            self._known[arch.id] = result

    def tell(self, arch: Architecture, result: Result) -> None:
        arch = self.space.canonicalize(arch)
        self._values(result)  # validates the metrics before anything is recorded
        queue = self._pending.get(arch.id)
        if queue:
            trial = queue.popleft()
            if not queue:
                del self._pending[arch.id]
            self._finish(trial, arch, result)
            return
        # Not asked by us (resume, user seed): record it as a finished trial.
        params = dict(arch.sample)
        self._add_finished(params, result, self._user_attrs(len(self._told), arch.id, result))
        number = self._study.get_trials(deepcopy=False)[-1].number
        self._n_asked += 1  # it took a trial number, as an ask would have
        self._told.append({"number": number, "params": params, "result": result_to_json(result)})
        if not is_failure(result):
            self._known[arch.id] = result

    # ----- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Asks still pending are not part of the state (the engine re-asks them after a
        # crash): count them out, so the resumed run draws them again with the same seeds.
        pending = sum(len(q) for q in self._pending.values())
        return {"n_asked": self._n_asked - pending, "told": [dict(e, params=dict(e["params"])) for e in self._told]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self._orphans and self.storage_path:
            # The stored study has trials the state does not know (asked by a process
            # that died before telling). Their numbers and FAIL states would change every
            # later suggestion, so rebuild the study from the state: the resumed search
            # then continues exactly like an uninterrupted one.
            self._optuna.delete_study(study_name=self.study_name, storage=f"sqlite:///{self.storage_path}")
            self._study = self._optuna.create_study(
                storage=f"sqlite:///{self.storage_path}", sampler=self._sampler(0), study_name=self.study_name,
                directions=[d.name.lower() for d in self._study.directions])
            self._told, self._orphans = [], 0
        present = {e["number"] for e in self._told}  # already in a reused storage
        have = len(self._told)
        told = list(state["told"])
        # Replay in trial-number order: TPE weighs trials by age, so the fresh study must
        # see them in the order the original one did.
        for index, entry in sorted(enumerate(told), key=lambda x: x[1]["number"]):
            if index < have and entry["number"] in present:
                continue
            result = result_from_json(entry["result"])
            arch = self.space.from_sample(entry["params"])
            self._add_finished(entry["params"], result, self._user_attrs(index, arch.id, result))
        self._told = told
        self._rebuild_known()
        self._n_asked = max(int(state["n_asked"]), len(self._study.get_trials(deepcopy=False)))
