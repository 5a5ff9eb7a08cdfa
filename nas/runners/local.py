"""The in-process runner: one trial at a time, fully deterministic for a seed."""
from __future__ import annotations

import sys
import time

from ..engine import MAX_DUPLICATE_STREAK, Engine, TrialRecord, evaluate_candidate, worker_name
from latency_tables.progress import progress_bar


def run_local(engine: Engine) -> None:
    engine.evaluate_references()
    budget = engine.cfg.budget
    streak = 0
    with progress_bar(total=budget, initial=engine.n_evaluated, desc="search", disable=not engine.progress) as bar:
        _show_best(engine, bar)
        while engine.n_evaluated < budget:
            if engine.out_of_time():
                print(f"time budget of {engine.cfg.time_budget_s:.0f} s spent; stopping", file=sys.stderr)
                break
            arch = engine.strategy.ask()
            if arch is None:
                print("strategy has nothing more to propose; stopping early", file=sys.stderr)
                break
            trial = sum(1 for r in engine.records if r.reference is None)
            known = engine.duplicate_of(arch)
            if known is not None:
                streak += 1
                record = TrialRecord(trial, arch.to_dict(), arch.id, "duplicate", dict(known.metrics), known.error,
                                     0.0, worker_name())
                engine.record(record)
                engine.tell(arch, record)
                if streak >= MAX_DUPLICATE_STREAK:
                    print(f"{streak} duplicates in a row: the strategy has converged; stopping", file=sys.stderr)
                    break
                continue
            streak = 0
            t0 = time.monotonic()
            status, metrics, error = evaluate_candidate(arch, engine.space, engine.evaluators(), engine.objective,
                                                        engine.folder.candidates)
            record = TrialRecord(trial, arch.to_dict(), arch.id, status, metrics, error, time.monotonic() - t0, worker_name())
            engine.record(record)
            engine.tell(arch, record)
            bar.update(1)
            _show_best(engine, bar)


def _show_best(engine: Engine, bar) -> None:
    best = engine.best()
    if best is not None:
        acc = best.metrics.get(engine.objective.accuracy)
        lat = best.metrics.get(engine.objective.latency)
        bar.set_postfix_str(f"best {engine.objective.accuracy}={acc:.3f} @ {lat:.2f} ms" if acc is not None and lat is not None else "")
