"""Several searches side by side: ``nas sweep``.

One base config and a grid of variants (latency targets x seeds), each variant a whole
search in its own run folder ``<out>/<variant>/`` with everything a single search has
(log, checkpoints, resume, report, best/ export). The obvious use is several DARTS
searches at once, one per latency target, where each search is a single long job; any
strategy works.

With ``runner="ray"`` every variant is one Ray Tune trial (``tune.grid_search`` over the
variants, ``cpus_per_trial`` reserved each, at most ``max_concurrent`` at once) on a local
cluster or the one at ``address``; with ``runner="local"`` they run one after another in
this process. A variant whose worker dies is retried by Tune and resumes from its own
folder; ``nas sweep --resume OUT`` does the same for a whole interrupted sweep, and a
variant that has finished is not run again. Afterwards ``<out>/sweep.md`` puts the
variants side by side (target, what was found, table and measured latency).
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from search_spaces.errors import InputError
from search_spaces.files import write_text_atomic

from .config import apply_overrides, config_from_dict

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Variant:
    name: str           # the sub-folder, e.g. "t3.6-s0"
    overrides: dict     # dotted config keys set on the base config


def grid(targets: list[float] | None = None, seeds: list[int] | None = None) -> list[Variant]:
    """Every (target, seed) pair; an omitted list keeps the base config's value."""
    out = []
    for target, seed in itertools.product(targets or [None], seeds or [None]):
        parts = ([f"t{target:g}"] if target is not None else []) + ([f"s{seed}"] if seed is not None else [])
        out.append(Variant("-".join(parts) or "base", {"objective.target_ms": target, "seed": seed}))
    return out


ERROR_FILE = "error.txt"  # in a variant's folder: why its last attempt failed


def run_variant(base: dict, overrides: dict, folder: str | Path, progress: bool = False) -> dict:
    """Run (or resume) one variant's search to its end in ``folder``; return its summary.

    An exception is written to ``folder/error.txt`` (first line: type and message, then
    the traceback) and raised again, so ``sweep.md`` can say why a variant stopped
    whichever runner ran it; a later successful attempt removes the file."""
    import traceback

    from .engine import Engine

    folder = Path(folder)
    try:
        if (folder / "trials.jsonl").exists():
            engine = Engine.resume(folder, progress=progress)
        else:
            cfg = config_from_dict(apply_overrides(base, {**overrides, "runner.name": "local"}), f"variant {folder.name}")
            engine = Engine.new(cfg, folder, progress=progress)
        engine.run("local")
    except Exception as exc:
        folder.mkdir(parents=True, exist_ok=True)
        first = (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0]
        write_text_atomic(folder / ERROR_FILE, first + "\n\n" + traceback.format_exc())
        raise
    (folder / ERROR_FILE).unlink(missing_ok=True)
    return summarize(folder)


def summarize(folder: str | Path) -> dict:
    """One row for ``sweep.md``: the variant's target, best trial and (DARTS) derivation."""
    from .engine import RunFolder
    from .report import best_trial

    folder = Path(folder)
    run = RunFolder(folder)
    error = folder / ERROR_FILE
    failed = None
    if error.is_file():  # first line only, and no "|": it goes into a markdown table cell
        first = (error.read_text(encoding="utf-8", errors="replace").splitlines() or ["unknown error"])[0]
        failed = "failed: " + first[:200].replace("|", "\\|")
    if not (folder / "config.yaml").exists():
        return {"variant": folder.name, "status": failed or "not started"}
    cfg = run.config()
    objective = cfg.make_objective()
    records = run.read()
    search = [r for r in records if r.reference is None and r.status != "duplicate"]
    best = best_trial(records, objective)
    row = {"variant": folder.name, "target_ms": objective.target_ms, "seed": cfg.seed,
           "status": "done" if (folder / "report.md").exists() else failed or "incomplete", "trials": len(search),
           "wall_s": round(max((r.elapsed for r in records), default=0.0), 1)}
    if best is not None:
        row.update(arch_id=best.arch_id, accuracy=best.metrics.get(objective.accuracy),
                   latency_ms=best.metrics.get(objective.latency), measured_ms=best.metrics.get("measured_latency_ms"))
    state = (run.load_strategy() or {}).get("state") or {}
    report = state.get("report")
    if report:  # DARTS: where the derivation landed against the target
        row.update(width=report.get("width"), derived_table_ms=report.get("derived_table_ms"))
        # Its timing describes the first derived network; with candidates the best may be
        # another (no best: no accuracy metric was configured).
        if best is None or (state.get("derived") or [None])[0] == best.arch:
            row["derived_measured_ms"] = report.get("measured_ms")
    return row


def _check_names(variants: list[Variant]) -> None:
    """InputError for repeated variant names (they would share one run folder)."""
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise InputError(f"sweep variants must differ; got {names}")


def _check_variants(base: dict, variants: list[Variant]) -> None:
    """InputError for repeated variant names or a variant whose config (or strategy
    option) is bad, so it fails before anything is written."""
    _check_names(variants)
    from .engine import check_search_config

    for v in variants:
        cfg = config_from_dict(apply_overrides(base, v.overrides), f"sweep variant {v.name}")
        try:
            check_search_config(cfg)
        except InputError as exc:
            raise InputError(f"sweep variant {v.name}: {exc}") from None


class Sweep:
    """A sweep folder: ``sweep.json`` (base config + variants) and one run folder per variant."""

    def __init__(self, out: str | Path, base: dict, variants: list[Variant]):
        self.out, self.base, self.variants = Path(out), base, variants

    @classmethod
    def new(cls, out: str | Path, base: dict, variants: list[Variant]) -> "Sweep":
        out = Path(out)
        if (out / SWEEP_FILE).exists():
            raise InputError(f"{out} already holds a sweep; resume it with 'nas sweep --resume {out}' or choose another --out")
        _check_variants(base, variants)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / SWEEP_FILE, json.dumps({"base": base, "variants": [asdict(v) for v in variants]}, indent=1))
        return cls(out, base, variants)

    @classmethod
    def resume(cls, out: str | Path) -> "Sweep":
        path = Path(out) / SWEEP_FILE
        if not path.is_file():
            raise InputError(f"{out} is not a sweep folder (no {SWEEP_FILE}); give the --out folder of 'nas sweep'")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(out, data["base"], [Variant(**v) for v in data["variants"]])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{path} is corrupt ({exc}); start a new sweep with another --out") from None

    @classmethod
    def open(cls, out: str | Path, base: dict, variants: list[Variant]) -> "Sweep":
        """The sweep of ``base`` and ``variants`` in ``out``: a new one if ``out`` holds
        none, else the one there, extended by the variants it lacks (so a benchmark run
        again with more seeds adds their searches and keeps the finished ones).

        Raises :class:`InputError`, writing nothing, when the folder's base config or a
        variant of the same name differs from the one given: its finished searches
        would not be the ones asked for. The sweep returned runs and summarises (in
        ``sweep.md``) the variants given; others already in the folder stay in
        ``sweep.json`` for ``nas sweep --resume``."""
        _check_names(variants)
        if not (Path(out) / SWEEP_FILE).exists():
            return cls.new(out, base, variants)
        sw = cls.resume(out)
        as_stored = lambda x: json.loads(json.dumps(x))  # tuples -> lists etc., as sweep.json holds them
        if as_stored(base) != sw.base:
            changed = sorted(k for k in set(sw.base) | set(base) if as_stored(base.get(k)) != sw.base.get(k))
            raise InputError(f"{out} holds a sweep of another base config (differs in {', '.join(changed)}); "
                             f"run with the settings it was started with, or choose another output folder")
        stored = {v.name: v for v in sw.variants}
        for v in variants:
            if v.name in stored and as_stored(v.overrides) != stored[v.name].overrides:
                raise InputError(f"{out}: variant {v.name} was started with {stored[v.name].overrides}, "
                                 f"not {v.overrides}; choose another output folder")
        added = [Variant(v.name, as_stored(v.overrides)) for v in variants if v.name not in stored]
        if added:
            _check_variants(sw.base, added)
            everything = sw.variants + added
            write_text_atomic(Path(out) / SWEEP_FILE,
                              json.dumps({"base": sw.base, "variants": [asdict(v) for v in everything]}, indent=1))
            stored.update((v.name, v) for v in added)
        return cls(out, sw.base, [stored[v.name] for v in variants])

    def run(self, runner: str = "local", address: str | None = None, max_concurrent: int = 2,
            cpus_per_trial: float = 1.0, max_failures: int = 1, progress: bool = True) -> list[dict]:
        """Run every unfinished variant; write and return the side-by-side summary."""
        todo = [v for v in self.variants if summarize(self.out / v.name).get("status") != "done"]
        if runner == "ray":
            self._run_ray(todo, address, max_concurrent, cpus_per_trial, max_failures)
        elif runner == "local":
            for v in todo:  # as on Ray, a failing variant does not stop the others
                if progress:
                    print(f"variant {v.name}", flush=True)
                try:
                    run_variant(self.base, v.overrides, self.out / v.name, progress=progress)
                except Exception as exc:
                    print(f"variant {v.name} failed ({type(exc).__name__}: {exc}); see {self.out / v.name / ERROR_FILE}",
                          file=sys.stderr, flush=True)
        else:
            raise InputError(f"unknown sweep runner {runner!r}; choose local or ray")
        rows = [summarize(self.out / v.name) for v in self.variants]
        (self.out / "sweep.md").write_text(format_rows(rows) + "\n", encoding="utf-8")
        return rows

    def _run_ray(self, todo: list[Variant], address, max_concurrent, cpus_per_trial, max_failures) -> None:
        if not todo:
            return
        from ray import tune

        from .runners.ray_runner import ray_session

        by_name = {v.name: v.overrides for v in todo}
        constants = {"base": json.dumps(self.base), "overrides": json.dumps(by_name), "out": str(self.out.resolve()),
                     "threads": max(1, int(cpus_per_trial)), "cwd": os.getcwd()}
        with ray_session(address):
            tuner = tune.Tuner(
                tune.with_resources(_variant_trainable, {"cpu": cpus_per_trial}),
                param_space={"variant": tune.grid_search(list(by_name)), **constants},
                tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
                run_config=tune.RunConfig(name=f"sweep-{int(time.time())}", storage_path=str((self.out / "ray").resolve()),
                                          failure_config=tune.FailureConfig(max_failures=max_failures), verbose=0))
            tuner.fit()


def _variant_trainable(config: dict) -> dict:
    """Ray Tune function trainable: one variant's whole search, in its own folder."""
    import torch

    torch.set_num_threads(config["threads"])
    # Ray starts a trial in its own folder: go back to where the sweep was launched (on a
    # machine that has it), so relative paths in the config (table, init_from) mean the
    # same as they did when Sweep.new or Sweep.open checked them.
    if os.path.isdir(config["cwd"]):
        os.chdir(config["cwd"])
    name = config["variant"]
    overrides = json.loads(config["overrides"])[name]
    return {"summary": json.dumps(run_variant(json.loads(config["base"]), overrides, Path(config["out"]) / name))}


def format_rows(rows: list[dict]) -> str:
    """The markdown table of ``sweep.md``."""
    def num(x, fmt=".3f"):
        return "" if x is None else format(x, fmt)

    lines = ["| variant | target ms | status | trials | best arch | accuracy | table ms | measured ms | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        measured = r.get("derived_measured_ms") or r.get("measured_ms")
        lines.append(f"| {r['variant']} | {num(r.get('target_ms'), 'g')} | {r['status']} | {r.get('trials', '')} | "
                     f"{r.get('arch_id', '')} | {num(r.get('accuracy'))} | {num(r.get('latency_ms'), '.2f')} | "
                     f"{num(measured, '.2f')} | {num(r.get('wall_s'), '.0f')} |")
    return "\n".join(lines)
