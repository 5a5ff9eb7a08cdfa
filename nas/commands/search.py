"""``nas search`` and ``nas report``."""
from __future__ import annotations

from nas.cli import UsageError, arg, command


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
