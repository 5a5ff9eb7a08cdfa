"""The Ray Tune runner: the engine's strategy as a Tune ``Searcher``, candidates as Tune
trials with per-trial resources and a concurrency limit.

As Ray's own ``OptunaSearch`` wraps Optuna, :class:`StrategySearcher` wraps any
registered strategy: ``suggest`` is ``ask`` (plus the engine's deduplication),
``on_trial_complete`` is ``tell`` (plus the append to ``trials.jsonl`` and the strategy
checkpoint). All bookkeeping stays in the driver; workers only evaluate.

``runner.address`` joins an existing cluster (``ray start --head`` elsewhere); without
it a local one is started. A trial whose worker dies is retried ``runner.max_failures``
times by Tune, then recorded as failed with Tune's error: never lost. Resume goes
through the run folder (``nas search --resume``): finished trials come from the log,
the strategy from its checkpoint, and only the remaining budget is sent to Tune. Tune's
own experiment state is written under ``<run>/ray`` as well.
"""
from __future__ import annotations

import contextlib
import importlib
import time

from ..engine import MAX_DUPLICATE_STREAK, Engine, TrialRecord, evaluate_candidate

_WORKER_CACHE: dict[str, tuple] = {}


def _evaluate_in_worker(config: dict) -> dict:
    """Tune function trainable: evaluate one architecture; return its record fields."""
    import json

    import ray

    from evaluators.base import get_evaluator
    from search_spaces import Architecture, get_space

    from ..config import config_from_dict

    cfg_json = config["engine_config"]
    if cfg_json not in _WORKER_CACHE:  # one space and one set of evaluators per worker process
        cfg = config_from_dict(json.loads(cfg_json))
        for module in cfg.imports:
            importlib.import_module(module)
        space = get_space(cfg.space.name, **cfg.space.settings)
        evaluators = [get_evaluator(e.name, **e.options) for e in cfg.evaluators]
        _WORKER_CACHE[cfg_json] = (space, evaluators, cfg.make_objective())
    space, evaluators, objective = _WORKER_CACHE[cfg_json]
    arch = Architecture.from_dict(config["arch"])
    t0 = time.monotonic()
    status, metrics, error = evaluate_candidate(arch, space, evaluators, objective, config.get("weights_dir"))
    ctx = ray.get_runtime_context()
    return {"record": json.dumps({"status": status, "metrics": metrics, "error": error,
                                  "seconds": time.monotonic() - t0,
                                  "worker": f"node:{ctx.get_node_id()[:12]}/pid:{__import__('os').getpid()}"})}


def _make_searcher_class():
    from ray.tune.search import Searcher

    class StrategySearcher(Searcher):
        """A Tune searcher that asks and tells the engine's strategy."""

        def __init__(self, engine: Engine, n_trials: int):
            super().__init__()
            self.engine = engine
            self.remaining = n_trials
            self.pending: dict[str, tuple] = {}
            import json

            self.cfg_json = json.dumps(engine.cfg.to_dict(), sort_keys=True, default=list)

        def suggest(self, trial_id: str):
            if self.remaining <= 0 or self.engine.out_of_time():
                return Searcher.FINISHED
            streak = 0
            while True:
                arch = self.engine.strategy.ask()
                if arch is None:
                    return Searcher.FINISHED
                known = self.engine.duplicate_of(arch)
                pending_ids = {a.id for a, _ in self.pending.values()}
                if known is None and self.engine.space.canonicalize(arch).id not in pending_ids:
                    break
                if known is None:  # proposed again while still running: nothing to tell yet
                    continue
                record = TrialRecord(self._next_index(), arch.to_dict(), arch.id, "duplicate", dict(known.metrics),
                                     known.error, 0.0, "driver")
                self.engine.record(record)
                self.engine.tell(arch, record)
                streak += 1
                if streak >= MAX_DUPLICATE_STREAK:
                    return Searcher.FINISHED
            self.remaining -= 1
            index = self._next_index()
            self.pending[trial_id] = (arch, index)
            return {"arch": arch.to_dict(), "engine_config": self.cfg_json,
                    "weights_dir": str(self.engine.folder.candidates.resolve())}

        def _next_index(self) -> int:
            done = sum(1 for r in self.engine.records if r.reference is None)
            return done + len(self.pending)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            import json

            arch, index = self.pending.pop(trial_id)
            if error or not result or "record" not in result:
                fields = {"status": "failed", "metrics": {}, "seconds": 0.0, "worker": "unknown",
                          "error": f"Ray trial {trial_id} errored (worker died or raised) after "
                                   f"{self.engine.cfg.runner.max_failures} retries"}
            else:
                fields = json.loads(result["record"])
            record = TrialRecord(index, arch.to_dict(), arch.id, **fields)
            self.engine.record(record)
            self.engine.tell(arch, record)
            if self.engine.progress:
                from ..engine import trial_summary

                print(f"trial {index}: {arch.id} {trial_summary(record, self.engine.objective)} ({record.worker})", flush=True)

        def save(self, checkpoint_path: str):
            # The engine checkpoints after every tell (strategy.json + trials.jsonl); Tune's
            # periodic searcher snapshot only needs to say where that state lives.
            with open(checkpoint_path, "w", encoding="utf-8") as f:
                f.write(str(self.engine.folder.path.resolve()))

        def restore(self, checkpoint_path: str):
            pass  # state comes from the run folder (see the module docstring)

    return StrategySearcher


@contextlib.contextmanager
def ray_session(address: str | None):
    """Connect to the cluster at ``address`` (or start a local one) unless Ray is already
    initialised; shut down on exit only what was started here."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": None}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def run_ray(engine: Engine) -> None:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    for module in engine.cfg.imports:
        importlib.import_module(module)
    rc = engine.cfg.runner
    engine.evaluate_references()
    remaining = engine.cfg.budget - engine.n_evaluated
    if remaining <= 0:
        return
    with ray_session(rc.address):
        searcher = ConcurrencyLimiter(_make_searcher_class()(engine, remaining), max_concurrent=rc.max_concurrent)
        trainable = tune.with_resources(_evaluate_in_worker, {"cpu": rc.cpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining),
            run_config=tune.RunConfig(name=f"tune-{int(time.time())}", storage_path=str((engine.folder.path / "ray").resolve()),
                                      failure_config=tune.FailureConfig(max_failures=rc.max_failures), verbose=0),
        )
        tuner.fit()
