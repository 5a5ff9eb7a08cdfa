"""``nas search`` and ``nas report``."""
from __future__ import annotations

import sys

from nas.cli import UsageError, arg, comma_list, command


@command("search", help="run (or resume) an architecture search")
@arg("--config", default=None, help="YAML config (default: built-in defaults; see configs/default.yaml)")
@arg("--strategy", default=None, help="override strategy.name (random, evolution, rl, tpe, ...)")
@arg("--budget", type=int, default=None, help="override the number of evaluated trials")
@arg("--seed", type=int, default=None)
@arg("--runner", choices=["local", "ray"], default=None)
@arg("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
@arg("--out", default=None, help="run folder to create (default: runs/<strategy>-<seed>)")
@arg("--resume", default=None, metavar="RUN", help="continue the search in this run folder")
@arg("--no-progress", action="store_true")
def search(args):
    from nas.config import load_config
    from nas.engine import Engine

    if args.resume:
        if args.config or args.strategy or args.seed is not None or args.out:
            raise UsageError("--resume takes the config from the run folder; only --budget, --runner and --ray-address may be given")
        engine = Engine.resume(args.resume, progress=not args.no_progress, budget=args.budget)
    else:
        cfg = load_config(args.config, {"strategy.name": args.strategy, "budget": args.budget, "seed": args.seed,
                                        "runner.name": args.runner, "runner.address": args.ray_address})
        out = args.out or f"runs/{cfg.strategy.name}-{cfg.seed}"
        engine = Engine.new(cfg, out, progress=not args.no_progress)
    if args.ray_address and args.resume:
        from dataclasses import replace

        engine.cfg = replace(engine.cfg, runner=replace(engine.cfg.runner, address=args.ray_address))
    engine.run(args.runner)
    folder = engine.folder.path
    best = engine.best()
    print(f"\nrun folder: {folder}")
    if best is not None:
        from nas.engine import trial_summary

        print(f"best: {best.arch_id}  {trial_summary(best, engine.objective)}")
    print(f"report: {folder / 'report.md'}" + (f"\nplot:   {folder / 'pareto.png'}" if (folder / 'pareto.png').exists() else ""))


@command("report", help="re-render a run's Pareto front, plot, best/ and report.md")
@arg("run", help="run folder")
def report(args):
    from nas.engine import Engine, RunFolder
    from nas.report import write_report

    engine = Engine(RunFolder(args.run).config(), args.run, progress=False)
    engine.records = engine.folder.read()
    print(f"wrote {write_report(engine)}")


def _number_list(text: str | None, flag: str, kind=float) -> list | None:
    """The numbers of ``--targets`` / ``--seeds``; None when the flag is not given."""
    return None if text is None else comma_list(text, flag, kind)


@command("sweep", help="run several searches side by side (latency targets x seeds), e.g. DARTS per target on Ray")
@arg("--config", default=None, help="YAML config shared by every variant")
@arg("--strategy", default=None, help="override strategy.name (e.g. darts)")
@arg("--budget", type=int, default=None, help="override each variant's trial budget")
@arg("--targets", default=None, help="comma-separated latency targets in ms, one search each (e.g. 2.3,3.6,5.9)")
@arg("--seeds", default=None, help="comma-separated seeds, one search each (crossed with --targets)")
@arg("--runner", choices=["local", "ray"], default=None, help="ray: variants in parallel (default: the config's runner)")
@arg("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
@arg("--max-concurrent", type=int, default=None, help="variants in flight on Ray (default: the config's runner)")
@arg("--cpus-per-trial", type=float, default=None, help="CPUs per variant on Ray (default: the config's runner)")
@arg("--out", default=None, help="sweep folder (each variant gets a sub-folder); an existing one of the same "
                                  "config gains the variants it lacks")
@arg("--resume", default=None, metavar="SWEEP", help="continue an interrupted sweep")
@arg("--no-progress", action="store_true")
def sweep(args):
    from dataclasses import asdict

    from nas.config import RUNNER_CHECKS, RunnerConfig, apply_overrides, read_yaml
    from nas.sweep import Sweep, format_rows, grid

    # Checked first: a bad runner flag must not leave a new sweep folder behind.
    for flag, value, field in (("--max-concurrent", args.max_concurrent, "max_concurrent"),
                               ("--cpus-per-trial", args.cpus_per_trial, "cpus_per_trial")):
        ok, wanted = RUNNER_CHECKS[field]
        if value is not None and not ok(value):
            raise UsageError(f"{flag} must be {wanted}, got {value}")
    if args.resume:
        if args.config or args.strategy or args.budget or args.targets or args.seeds or args.out:
            raise UsageError("--resume takes everything from the sweep folder; only the runner flags may be given")
        sw = Sweep.resume(args.resume)
    else:
        if not args.out:
            raise UsageError("--out is required (the sweep folder)")
        if not args.targets and not args.seeds:
            raise UsageError("give --targets and/or --seeds: the variants of the sweep")
        base = apply_overrides(read_yaml(args.config) if args.config else {},
                               {"strategy.name": args.strategy, "budget": args.budget})
        # An existing --out of the same config is resumed and gains the variants it lacks
        # (e.g. more --seeds); one of another config is refused.
        sw = Sweep.open(args.out, base, grid(_number_list(args.targets, "--targets"),
                                              _number_list(args.seeds, "--seeds", int)))
    runner = {**asdict(RunnerConfig()), **(sw.base.get("runner") or {})}  # the config's, over the defaults
    rows = sw.run(args.runner or runner["name"], address=args.ray_address or runner["address"],
                  max_concurrent=runner["max_concurrent"] if args.max_concurrent is None else args.max_concurrent,
                  cpus_per_trial=runner["cpus_per_trial"] if args.cpus_per_trial is None else args.cpus_per_trial,
                  max_failures=runner["max_failures"], progress=not args.no_progress)
    print("\n" + format_rows(rows))
    print(f"\nsweep folder: {sw.out}   summary: {sw.out / 'sweep.md'}")
    failed = [r["variant"] for r in rows if str(r.get("status", "")).startswith("failed")]
    if failed:  # the others ran; the exit status still tells a script that not all did
        print(f"{len(failed)} variant(s) failed: {', '.join(failed)} (see error.txt in each)", file=sys.stderr)
        return 1
