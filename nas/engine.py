"""The search loop: ask, deduplicate, evaluate cheapest first, tell, checkpoint.

The engine owns the loop and the run folder; strategies only propose and learn, and
runners only decide where an evaluation happens (in this process, or on Ray).

Run folder::

    config.yaml        the resolved config (resume reads it back)
    trials.jsonl       one JSON line per finished trial, flushed and fsynced per trial
    strategy.json      the strategy's state_dict after the last tell
    candidates/        trained weights per evaluated architecture (when an evaluator trains)
    pareto.json, report.md, pareto.png, best/   written at the end (and by ``nas report``)

Resume: finished trials are never re-run. The strategy is restored from
``strategy.json`` when it matches the log; otherwise a fresh strategy is replayed
through the logged trials (strategies are deterministic given their seed and tells),
so an interrupted and resumed search ends with the same trials as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evaluators.base import Evaluator, by_cost, get_evaluator
from search_spaces import Architecture, SearchSpace, get_space
from search_spaces.errors import InputError
from search_spaces.files import write_text_atomic

from .config import SearchConfig, load_config, save_config
from .objectives import Failure, Objective
from .strategies import checked_strategy_class, get_strategy

MAX_DUPLICATE_STREAK = 200  # a strategy proposing only known architectures has converged


@dataclass
class TrialRecord:
    trial: int                       # 0-based index among search trials; -1 for references
    arch: dict
    arch_id: str
    status: str                      # ok | failed | rejected | duplicate
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    reference: str | None = None
    elapsed: float = 0.0             # search wall-clock (summed over resumes) when it was recorded

    @property
    def result(self):
        """What the strategy is told."""
        return Failure(self.error) if self.error else self.metrics


class RunFolder:
    """Append-only trial log plus checkpoints; every write is atomic or append+fsync."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.trials_path = self.path / "trials.jsonl"
        self.strategy_path = self.path / "strategy.json"
        self.candidates = self.path / "candidates"

    def create(self, cfg: SearchConfig) -> None:
        if self.trials_path.exists():
            raise InputError(f"{self.path} already holds a search; resume it with 'nas search --resume {self.path}' "
                             "or choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.path / "config.yaml")
        self.trials_path.touch()

    def config(self) -> SearchConfig:
        if not (self.path / "config.yaml").is_file():
            raise InputError(f"{self.path} is not a run folder (no config.yaml); give the --out folder of a search")
        return load_config(self.path / "config.yaml")

    def append(self, record: TrialRecord) -> None:
        with open(self.trials_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(record), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[TrialRecord]:
        """Finished trials; a torn last line (killed mid-write) is dropped from the file."""
        if not self.trials_path.exists():
            return []
        lines = self.trials_path.read_text(encoding="utf-8").splitlines(keepends=True)
        records, good = [], 0
        for i, line in enumerate(lines):
            try:
                records.append(TrialRecord(**json.loads(line)))
                good += len(line.encode("utf-8"))
            except (json.JSONDecodeError, TypeError):
                if i != len(lines) - 1:
                    raise InputError(f"{self.trials_path} line {i + 1} is corrupt; fix or remove that line") from None
                with open(self.trials_path, "r+b") as f:
                    f.truncate(good)
        return records

    def save_strategy(self, state: dict, n_told: int) -> None:
        write_text_atomic(self.strategy_path, json.dumps({"n_told": n_told, "state": state}))

    def load_strategy(self) -> dict | None:
        if not self.strategy_path.exists():
            return None
        try:
            return json.loads(self.strategy_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # replay from the log instead


def finite_metrics(metrics: dict) -> dict:
    bad = {k: v for k, v in metrics.items() if not (isinstance(v, (int, float)) and math.isfinite(float(v)))}
    if bad:
        raise ValueError(f"evaluator returned non-finite metrics {bad}")
    return {k: float(v) for k, v in metrics.items()}


def evaluate_candidate(arch: Architecture, space: SearchSpace, evaluators: list[Evaluator], objective: Objective,
                       weights_dir: Path | None = None) -> tuple[str, dict, str | None]:
    """Run the evaluators cheapest first; (status, metrics, error).

    With a hard latency constraint, a candidate whose latency (from the cheap tier) is
    over the target is ``rejected`` before anything expensive runs.
    """
    metrics: dict[str, float] = {}
    try:
        for ev in by_cost(evaluators):
            if ev.cost != "table" and objective.mode == "constrained" and objective.latency in metrics \
                    and metrics[objective.latency] > objective.target_ms:
                return "rejected", metrics, None
            metrics.update(finite_metrics(dict(ev(arch, space))))
            model = getattr(ev, "last_model", None)
            if model is not None and weights_dir is not None:
                from .export import save_checkpoint

                save_checkpoint(weights_dir / f"{arch.id}.pt", model, arch, space)
                ev.last_model = None
        if objective.mode == "constrained" and metrics.get(objective.latency, 0.0) > objective.target_ms:
            return "rejected", metrics, None
        return "ok", metrics, None
    except InputError:
        raise  # bad config or files: stop the search, the user must fix it
    except Exception as exc:  # noqa: BLE001 - any other failure is the candidate's, recorded and survived
        return "failed", metrics, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"


def check_strategy(cfg: SearchConfig, space: SearchSpace, objective: Objective,
                   budget_from: str = "config field 'budget'") -> None:
    """InputError for an unknown strategy, an unknown or bad option (the strategy's own
    ``check_options``), or a budget that cannot evaluate every architecture the strategy
    may propose (e.g. darts ``candidates`` above ``budget``). Run before anything is
    written, after the config's plugins are imported."""
    cls = checked_strategy_class(cfg.strategy.name, cfg.strategy.options)
    cls.check_options(space, objective, cfg.strategy.options)
    wanted = cls.proposals(cfg.strategy.options)
    if wanted is not None and cfg.budget < wanted:
        raise InputError(f"{budget_from} is {cfg.budget}, but strategy {cfg.strategy.name!r} may propose up to "
                         f"{wanted} architectures with its options; set it to at least {wanted}")


def import_plugins(cfg: SearchConfig) -> None:
    """Import the config's ``imports:`` (plugins that register spaces, strategies or evaluators)."""
    import importlib

    for module in cfg.imports:
        importlib.import_module(module)


def check_search_config(cfg: SearchConfig) -> None:
    """:func:`check_strategy` and every evaluator's ``check`` from the config alone (its
    plugins imported, its space, objective and evaluators built); for callers that hold
    no engine yet, e.g. a sweep's variants, so that a bad strategy option, evaluator
    option or evaluator file fails before anything is written."""
    import_plugins(cfg)
    space = get_space(cfg.space.name, **cfg.space.settings)
    check_strategy(cfg, space, cfg.make_objective())
    for spec in cfg.evaluators:
        get_evaluator(spec.name, **spec.options).check(space)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Engine:
    """Runs one search in a run folder. Not thread-safe; one engine per folder."""

    def __init__(self, cfg: SearchConfig, run_dir: str | Path, progress: bool = True):
        import_plugins(cfg)
        self.cfg = cfg
        self.folder = RunFolder(run_dir)
        self.progress = progress
        self.space = get_space(cfg.space.name, **cfg.space.settings)
        self.objective = cfg.make_objective()
        self.records: list[TrialRecord] = []
        self.by_id: dict[str, TrialRecord] = {}
        self.strategy = None
        self._evaluators: list[Evaluator] | None = None
        self._session_start, self._elapsed_before = time.monotonic(), 0.0

    # ----- construction -----------------------------------------------------------------
    @classmethod
    def new(cls, cfg: SearchConfig, run_dir, progress: bool = True) -> "Engine":
        engine = cls(cfg, run_dir, progress)  # imports the config's plugins; writes nothing
        check_strategy(cfg, engine.space, engine.objective)
        for evaluator in engine.evaluators():  # bad options and files fail before the folder exists
            evaluator.check(engine.space)
        engine.folder.create(cfg)
        engine._restore_strategy()
        return engine

    @classmethod
    def resume(cls, run_dir, progress: bool = True, budget: int | None = None) -> "Engine":
        from dataclasses import replace

        folder = RunFolder(run_dir)
        saved = folder.config()
        new_budget = budget is not None and budget != saved.budget
        cfg = replace(saved, budget=budget) if new_budget else saved
        engine = cls(cfg, run_dir, progress)  # imports the config's plugins; writes nothing
        if new_budget:
            check_strategy(cfg, engine.space, engine.objective, "--budget")
            save_config(cfg, folder.path / "config.yaml")
        engine._restore_strategy()
        return engine

    def evaluators(self) -> list[Evaluator]:
        if self._evaluators is None:
            self._evaluators = [get_evaluator(e.name, **e.options) for e in self.cfg.evaluators]
        return self._evaluators

    def new_strategy(self):
        return get_strategy(self.cfg.strategy.name, self.space, self.objective, seed=self.cfg.seed,
                            **self._strategy_options())

    def _strategy_options(self) -> dict:
        options = dict(self.cfg.strategy.options)
        # Strategies that keep files get them inside the run folder (resume finds them there).
        if self.cfg.strategy.name == "tpe":
            options.setdefault("storage_path", str(self.folder.path / "optuna.db"))
        if self.cfg.strategy.name == "darts":
            options.setdefault("checkpoint_path", str(self.folder.path / "darts.pt"))
            options.setdefault("progress", self.progress)
        return options

    def _restore_strategy(self) -> None:
        """Strategy state from the checkpoint if it matches the log, else by replay."""
        self.records = self.folder.read()
        self._session_start = time.monotonic()
        self._elapsed_before = max((r.elapsed for r in self.records), default=0.0)
        search = [r for r in self.records if r.reference is None]
        for r in self.records:
            if r.status != "duplicate":
                self.by_id.setdefault(self._canonical_id(r.arch), r)
        self.strategy = self.new_strategy()
        saved = self.folder.load_strategy()
        if saved is not None and saved.get("n_told") == len(search):
            self.strategy.load_state_dict(saved["state"])
            return
        for r in search:  # replay: the same asks come back, in the same order
            arch = self.strategy.ask()
            if arch is None or self._canonical_id(arch.to_dict()) != self._canonical_id(r.arch):
                raise InputError(f"{self.folder.trials_path}: trial {r.trial} cannot be replayed (the strategy now "
                                 "proposes another architecture; was the code or config changed?)")
            self.strategy.tell(arch, r.result)
        if search:
            self.folder.save_strategy(self.strategy.state_dict(), len(search))

    def _canonical_id(self, arch_dict: dict) -> str:
        return self.space.canonicalize(Architecture.from_dict(arch_dict)).id

    # ----- the loop ----------------------------------------------------------------------
    @property
    def n_evaluated(self) -> int:
        return sum(1 for r in self.records if r.reference is None and r.status != "duplicate")

    def elapsed(self) -> float:
        """Search wall-clock so far: this session's plus what the log says earlier ones took."""
        return self._elapsed_before + time.monotonic() - self._session_start

    def out_of_time(self) -> bool:
        """True once ``time_budget_s`` is set and spent: runners stop asking for more."""
        return self.cfg.time_budget_s is not None and self.elapsed() >= self.cfg.time_budget_s

    def record(self, record: TrialRecord) -> None:
        record.elapsed = round(self.elapsed(), 3)
        self.folder.append(record)
        self.records.append(record)
        if record.status != "duplicate":
            self.by_id.setdefault(self._canonical_id(record.arch), record)

    def tell(self, arch: Architecture, record: TrialRecord) -> None:
        self.strategy.tell(arch, record.result)
        self.folder.save_strategy(self.strategy.state_dict(), sum(1 for r in self.records if r.reference is None))

    def duplicate_of(self, arch: Architecture) -> TrialRecord | None:
        return self.by_id.get(self.space.canonicalize(arch).id)

    def evaluate_references(self) -> None:
        done = {r.reference for r in self.records if r.reference}
        refs = self.space.reference_architectures()
        for name in self.cfg.references:
            if name not in refs:
                raise InputError(f"config field 'references': unknown reference {name!r}; known: {sorted(refs)}")
            if name in done:
                continue
            arch = refs[name]
            t0 = time.monotonic()
            status, metrics, error = evaluate_candidate(arch, self.space, self.evaluators(),
                                                        _no_rejection(self.objective), self.folder.candidates)
            self.record(TrialRecord(-1, arch.to_dict(), arch.id, status, metrics, error,
                                    time.monotonic() - t0, worker_name(), reference=name))

    def run(self, runner: str | None = None) -> list[TrialRecord]:
        """Run to the budget with the configured runner; then write the report."""
        from .runners import get_runner

        get_runner(runner or self.cfg.runner.name)(self)
        from .report import write_report

        write_report(self)
        return self.records

    def best(self) -> TrialRecord | None:
        from .report import best_trial

        return best_trial(self.records, self.objective)


def _no_rejection(objective: Objective) -> Objective:
    """References are evaluated fully even when over the latency target."""
    from dataclasses import replace

    return replace(objective, mode="soft" if objective.mode == "constrained" else objective.mode) \
        if objective.mode == "constrained" else objective


def trial_summary(record: TrialRecord, objective: Objective) -> str:
    m = record.metrics
    acc = m.get(objective.accuracy)
    lat = m.get(objective.latency)
    return (f"{record.status:<9} {objective.accuracy}={acc:.3f} " if acc is not None else f"{record.status:<9} ") + \
        (f"{objective.latency}={lat:.2f}" if lat is not None else "")

