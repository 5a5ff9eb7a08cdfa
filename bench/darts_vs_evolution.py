"""DARTS against aging evolution at equal wall-clock, at three latency targets.

The targets are the 10th, 50th and 90th percentiles of the 1-thread table latency of
``--n-sample`` random architectures of the default space (printed, not typed in). Then:

1. ``nas sweep``-style DARTS searches, ``--darts-seeds`` per target (default one),
   run as Ray Tune trials (one CPU each, one at a time by default:
   ``--darts-concurrent``): supernet training,
   derivation checked against onnxruntime, and the derived network (or each of
   ``--darts-candidates``) scored by ``train_proxy`` (or the supernet, below). One at
   a time because DARTS steers its derivation by onnxruntime measurements, and with a
   second search training on the other core they read slow
   (session 2: 1.10x the table during the search, 0.91x when re-timed on the idle
   machine; the 2.71 ms target landed at 2.26 ms).
2. Aging-evolution searches at the same targets (hard latency limit, see below),
   ``--evolution-seeds`` seeds each, given the wall-clock its target's DARTS search (seed 0) took
   (``time_budget_s``), two at a time (``--max-concurrent``): evolution's budget is
   the wall-clock DARTS took alone, so if anything evolution is the one held short.
   Both are held to the latency measured by onnxruntime during the search
   (``measured_latency``): evolution as a hard limit, DARTS as the soft objective.
3. On the then idle machine, every result's network is timed again under onnxruntime
   at 1 thread, all of them in interleaved windows (``measure_architectures``).
4. Every result's network is trained again from scratch by the same ``train_proxy``
   with ``--retrain-seeds`` fresh seeds (the searches train with seed 0), two trainings
   at a time, one thread each. Why: evolution reports the best of many noisy 150-step
   trainings and DARTS a single one, so the search-time mAP favours evolution by
   selection alone; the mean over fresh seeds scores both networks alike. Each
   re-trained network is scored on ``--holdout-val`` generated validation images that
   neither search saw (another data seed), as well as on the searches' own: evolution
   picks its result as the best of many candidates on the searches' validation images,
   so its mAP there carries that selection too (session 15; results recorded before it
   were scored on the searches' images, as ``--holdout-val 0`` does).

``--darts-supernet CKPT`` scores DARTS's candidates (``--darts-candidates K``) with the
``supernet`` evaluator on a weight-sharing supernet trained beforehand (``nas supernet
train --input-size 256``) instead of ``train_proxy``: seconds per candidate, and a score
that ranks backbones under DARTS's fixed neck and head (BENCHMARKS.md, issue 4). Its
training is a one-off cost for every target and seed and is not in the wall-clock
evolution gets; the bench says so when it prints the comparison.

With ``--darts-candidates`` above 1, a ``derived`` row per DARTS search is the network
its derivation gave (the one it proposes alone), re-trained and timed the same way, so
the pick among candidates can be told from the search; it is not in the verdict (a
folder of an earlier run with candidates gains these rows, and their re-training, when
run again).

Printed: one row per search (method, target, seed, wall-clock, trials, mAP@.5 of its
result in the search (the supernet's for DARTS with ``--darts-supernet``), re-trained
on the searches' validation images (``on val``, mean) and re-trained on the held-out ones (mean and range over the fresh seeds), table and
measured latency, measured off-target), then per target DARTS's re-trained mAP@.5
(on the held-out images, unless ``--holdout-val 0``)
against the range of evolution's re-trained means over its search seeds, and whether
DARTS's measured latency is within +-10% of the target. With several DARTS seeds, their
median mAP@.5 over the seeds whose training did not diverge is compared (DARTS judged
by its middle, not its luckiest seed; printed as "median of k/N seeds", k of the N
trained), and every seed's latency must be within. Resumable: run again with the
same ``--out`` (re-trainings are cached in ``retrain.json`` as they finish); with a
larger ``--evolution-seeds`` or ``--darts-seeds`` (or other ``--percentiles``) it adds the searches the
folder lacks and keeps the rest. Other settings of the searches themselves (steps,
data, DARTS options) on the same ``--out`` are refused (exit 2), before any search runs.

Usage::

    python bench/darts_vs_evolution.py                     # one DARTS and two evolution seeds per target
    python bench/darts_vs_evolution.py --darts-seeds 4 --evolution-seeds 4   # session 17's run (BENCHMARKS.md)
    python bench/darts_vs_evolution.py --percentiles 10 --darts-fixed head.depth=1 --darts-seeds 4 \\
        --evolution-seeds 4                                # a lighter head held at the lowest target
    python bench/darts_vs_evolution.py --darts-steps 6 --train-steps 2 --n-train 16 \\
        --n-val 8 --holdout-val 8 --evolution-seeds 1 --out runs/bench-dve-smoke     # smoke run
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import random
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a clone without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from latency_tables.predictor import LatencyTable  # noqa: E402
from latency_tables.profiler import measure_architectures  # noqa: E402
from nas.engine import RunFolder  # noqa: E402
from nas.report import best_trial  # noqa: E402
from nas.strategies.darts import DEFAULT_FIXED  # noqa: E402
from nas.sweep import Sweep, Variant  # noqa: E402
from search_spaces import Architecture, InputError, get_space  # noqa: E402
from search_spaces.files import write_text_atomic  # noqa: E402

EVOLUTION = {"name": "evolution", "options": {"population_size": 4, "sample_size": 2}}  # its strategy config
RETRAIN_SEED0 = 1  # the searches' train_proxy uses seed 0; re-training starts past it
HOLDOUT_DATA_SEED = 1  # the searches' images are data seed 0's: seed 1's are images they never saw


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits 2 naming the flag, before any work."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    count, some = at_least(0), at_least(1)
    p.add_argument("--percentiles", type=percentiles, default="10,50,90",
                   help="targets: these percentiles of the table latency")
    p.add_argument("--n-sample", type=some, default=2000, help="random architectures behind the percentiles")
    p.add_argument("--darts-steps", type=some, default=300)
    p.add_argument("--darts-width", type=width_option, default="auto",
                   help="DARTS's width option: auto (default), search (one per stage), or one width")
    p.add_argument("--darts-candidates", type=some, default=1,
                   help="networks DARTS proposes (darts option candidates); the engine keeps the best, and "
                        "their scoring counts in the wall-clock evolution then gets")
    p.add_argument("--darts-factorized", action="store_true",
                   help="DARTS's factorized option: one architecture parameter per choice value, not per candidate")
    p.add_argument("--darts-init-from", default=None, metavar="CKPT",
                   help="DARTS's init_from option: start its supernet from this `nas supernet train` checkpoint "
                        "of the bench's space (default settings: 256 px; e.g. `nas supernet train --input-size 256`); "
                        "its training time is not part of the wall-clock evolution gets")
    p.add_argument("--darts-params-weight", type=float, default=None, metavar="W",
                   help="DARTS's params_weight option: weight of log(parameters) in the derivation "
                        "(default: the strategy's, 2)")
    p.add_argument("--darts-allow-ratio", type=float, default=None, metavar="R",
                   help="DARTS's allow_ratio option: the derivation considers candidates at least R times as "
                        "likely as their position's best (default: the strategy's, 0; until session 22 it "
                        "was 0.1)")
    p.add_argument("--darts-fixed", type=fixed_option, default=None, metavar="NAME=VALUE,...",
                   help="DARTS's fixed option: these neck/head decisions changed from "
                        f"{', '.join(f'{k}={v}' for k, v in DEFAULT_FIXED.items())}; VALUE 'search' "
                        "searches that decision; e.g. head.depth=1,neck.pan=false (without it, the neck "
                        "follows the target: darts.choose_fixed)")
    p.add_argument("--darts-supernet", default=None, metavar="CKPT",
                   help="score DARTS's candidates (--darts-candidates, at least 2) with the supernet evaluator on this "
                        "`nas supernet train` checkpoint of the bench's space (256 px) instead of train_proxy; "
                        "its training time is not part of the wall-clock evolution gets")
    p.add_argument("--supernet-val", type=some, default=128,
                   help="validation images the supernet evaluator scores DARTS's candidates on (--darts-supernet)")
    p.add_argument("--train-steps", type=some, default=150, help="train_proxy steps (both methods)")
    p.add_argument("--batch-size", type=some, default=8)
    p.add_argument("--n-train", type=some, default=256)
    p.add_argument("--n-val", type=some, default=64)
    p.add_argument("--evolution-seeds", type=count, default=2)
    p.add_argument("--darts-seeds", type=some, default=1,
                   help="DARTS searches per target, seeds 0.. (the verdict compares their median with "
                        "evolution's range); evolution's budget stays seed 0's wall-clock")
    p.add_argument("--max-concurrent", type=some, default=2, help="evolution searches at a time")
    p.add_argument("--darts-concurrent", type=some, default=1, help="DARTS searches at a time")
    p.add_argument("--retrain-seeds", type=count, default=3,
                   help="fresh train_proxy seeds every result is re-trained with (0: search-time mAP only)")
    p.add_argument("--holdout-val", type=count, default=512,
                   help="score the re-trained networks on this many generated validation images neither search saw "
                        "(0: on the searches' own validation images only; unused with --retrain-seeds 0)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-darts-vs-evolution"))
    return p.parse_args(argv)


def at_least(low: int):
    """An argparse type: a whole number >= ``low`` (otherwise a usage error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def percentiles(text: str) -> list[float]:
    """An argparse type: comma-separated percentiles, each in [0, 100]."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers, e.g. 10,50,90") from None
    if not all(0 <= v <= 100 for v in values):
        raise argparse.ArgumentTypeError(f"percentiles lie in [0, 100], got {text}")
    return values


def width_option(text: str):
    """An argparse type: ``auto``, ``search`` or one width (a number; whether the space
    has it is checked with the rest of the DARTS options, also before any work)."""
    if text in ("search", "auto"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, search or a width such as 0.75") from None


def fixed_option(text: str) -> dict:
    """An argparse type: ``name=value,...`` over :data:`DEFAULT_FIXED`, the neck/head
    decisions DARTS holds. ``value`` is ``true``/``false`` for ``neck.pan``, a whole
    number for the others, or ``search`` to search that decision. Whether the space has
    the value is checked with the rest of the DARTS options, before any work."""
    fixed, seen = dict(DEFAULT_FIXED), set()
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError("is empty; give NAME=VALUE,... (e.g. head.depth=1)")
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=VALUE (e.g. head.depth=1)")
        if name not in DEFAULT_FIXED:
            raise argparse.ArgumentTypeError(f"{item!r}: {name!r} is not one of {', '.join(DEFAULT_FIXED)}")
        if name in seen:
            raise argparse.ArgumentTypeError(f"{name} is given twice")
        seen.add(name)
        value = value.lower()
        if value == "search":
            del fixed[name]
        elif isinstance(DEFAULT_FIXED[name], bool):
            if value not in ("true", "false"):
                raise argparse.ArgumentTypeError(f"{item!r}: {name} takes true, false or search")
            fixed[name] = value == "true"
        else:
            try:
                fixed[name] = int(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{item!r}: {name} takes a whole number or search") from None
    return fixed


def base_config(args, strategy: dict, mode: str, supernet: str | None = None) -> dict:
    """Both methods are judged on the measured latency (the table is a few percent off on
    single networks): evolution as a hard limit (a candidate over it is rejected before
    training), DARTS as MnasNet's soft objective (its derivation already aims at the
    target; the result is scored either way). Candidates are scored by ``train_proxy``,
    or with ``supernet`` (a checkpoint path) by the ``supernet`` evaluator on it."""
    data = {"n_train": args.n_train, "n_val": args.n_val}
    if supernet:
        # BatchNorm is recalibrated on the searches' training images; scored on --supernet-val images.
        score = {"name": "supernet", "options": {"checkpoint": str(Path(supernet).resolve()), "threads": 1,
                                                 "data": {"n_train": args.n_train, "n_val": args.supernet_val}}}
    else:
        score = {"name": "train_proxy", "options": {"steps": args.train_steps, "batch_size": args.batch_size,
                                                    "threads": 1, "data": data}}
    return {"space": {"name": "cpu_detector"}, "strategy": strategy, "budget": 1000,
            "objective": {"mode": mode, "target_ms": 1.0, "latency": "measured_latency_ms",
                          **({"accuracy": "supernet_map50"} if supernet else {})},
            "evaluators": [{"name": "latency_table", "options": {"threads": 1}}, "params_flops",
                           {"name": "measured_latency", "options": {"threads": 1}}, score]}


def sweep(out: Path, base: dict, variants: list[Variant], max_concurrent: int) -> list[dict]:
    """Run (or resume) the searches of ``variants`` in ``out``: finished ones are kept,
    ones the folder lacks (e.g. more ``--evolution-seeds``) are added. A folder started
    with other settings is refused with exit 2: its searches would not be the ones asked for."""
    return open_sweep(out, base, variants).run("ray", max_concurrent=max_concurrent, cpus_per_trial=1, progress=False)


def open_sweep(out: Path, base: dict, variants: list[Variant]) -> Sweep:
    """:meth:`Sweep.open`, with its refusal as a usage error (exit 2)."""
    try:
        return Sweep.open(out, base, variants)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _train_once(job: tuple) -> tuple[float, float]:
    """mAP@.5 of one architecture trained by ``train_proxy`` with ``options`` (a worker
    process: one torch thread, as in the searches), on the searches' validation images
    and on ``holdout`` held-out ones (NaN when 0); both NaN if the training diverged."""
    arch_json, options, holdout = job
    import torch

    from evaluators.base import get_evaluator
    from evaluators.synthetic import make_synthetic
    from evaluators.trainer import TrainingFailure, evaluate, prepare

    space = get_space("cpu_detector")
    proxy = get_evaluator("train_proxy", **options)
    try:
        searched = float(proxy(Architecture.from_json(arch_json), space)["map50"])
    except TrainingFailure:  # a result, not an error: that seed's training diverged
        return float("nan"), float("nan")
    if not holdout:
        return searched, float("nan")
    size = space.settings()["input_size"]
    images = prepare(make_synthetic(holdout, size, seed=HOLDOUT_DATA_SEED, split="val"), size)
    with torch.no_grad():
        return searched, float(evaluate(proxy.last_model, images)["map50"])


def retrain(args, archs: list[Architecture], path: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``({arch json: [mAP@.5 per fresh seed]}, the same on the held-out images)`` for
    every distinct arch, trained ``--retrain-seeds`` times with the searches'
    train_proxy settings and seeds ``RETRAIN_SEED0...`` (the held-out dict is empty
    with ``--holdout-val 0``). Each result is cached in ``path`` (under its training
    settings, the held-out one also under its image count) as it finishes, so a rerun
    only trains what is missing."""
    options = {"steps": args.train_steps, "batch_size": args.batch_size, "threads": 1,
               "data": {"n_train": args.n_train, "n_val": args.n_val}}
    everything = json.loads(path.read_text()) if path.exists() else {}
    key = json.dumps(options, sort_keys=True)
    caches: list[dict[str, dict[str, float]]] = [everything.setdefault(key, {})]
    if args.holdout_val:
        held_out_key = {**options, "holdout_val": args.holdout_val, "holdout_seed": HOLDOUT_DATA_SEED}
        caches.append(everything.setdefault(json.dumps(held_out_key, sort_keys=True), {}))
    seeds = range(RETRAIN_SEED0, RETRAIN_SEED0 + args.retrain_seeds)
    todo = [(a.to_json(), s) for a in {a.to_json(): a for a in archs}.values() for s in seeds
            if any(str(s) not in cache.get(a.to_json(), {}) for cache in caches)]
    if todo:
        print(f"re-training: {len(todo)} trainings of {args.train_steps} steps, 2 at a time", flush=True)
        # spawn: a forked child would inherit this process's torch/onnxruntime thread pools
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_train_once, (a, {**options, "seed": s}, args.holdout_val)): (a, s)
                       for a, s in todo}
            for future in concurrent.futures.as_completed(futures):
                a, s = futures[future]
                for cache, value in zip(caches, future.result()):  # keeps a value already cached
                    cache.setdefault(a, {}).setdefault(str(s), value)
                write_text_atomic(path, json.dumps(everything, indent=1))
    def per_seed(cache: dict[str, dict[str, float]]) -> dict[str, list[float]]:
        return {a.to_json(): [cache[a.to_json()][str(s)] for s in seeds] for a in archs}

    return per_seed(caches[0]), (per_seed(caches[1]) if args.holdout_val else {})


def darts_grid(targets: list[float], seeds: int, candidates: int) -> list[Variant]:
    """One DARTS search per target and seed. Seed 0 keeps the name and overrides the
    bench always gave it (``t2.89``), so folders of earlier runs resume; other seeds
    are ``t2.89-s1``... The budget is the number of networks DARTS proposes."""
    return [Variant(f"t{t:g}" + (f"-s{s}" if s else ""),
                    {"objective.target_ms": t, "budget": candidates, **({"seed": s} if s else {})})
            for t in targets for s in range(seeds)]


def accuracy_verdict(darts: list[float], evolution: list[float]) -> tuple[float, float, float, str]:
    """``(DARTS's median mAP@.5, evolution's lowest, its highest, verdict)`` at one target,
    from each method's mAP@.5 per seed: ``better`` above evolution's [lowest, highest],
    ``within`` it, or ``worse``. Evolution's seeds give the range; DARTS's are summarised
    by their median (one seed: its own figure). NaN (a diverged training) is no result,
    in either list; a side with none gives NaN figures and ``no ... run/result``."""
    darts, evolution = ([m for m in ms if np.isfinite(m)] for ms in (darts, evolution))
    median = float(np.median(darts)) if darts else float("nan")
    lo, hi = (min(evolution), max(evolution)) if evolution else (float("nan"), float("nan"))
    if not evolution:
        return median, lo, hi, "no evolution run"
    if not darts:
        return median, lo, hi, "no DARTS result"
    return median, lo, hi, "better" if median > hi else "within" if median >= lo else "worse"


def result_arch(folder: Path) -> tuple[Architecture | None, float]:
    """A search's best network (by its objective's score) and that network's accuracy
    metric in the search: ``map50`` from train_proxy, ``supernet_map50`` from a supernet."""
    run = RunFolder(folder)
    objective = run.config().make_objective()
    best = best_trial(run.read(), objective)
    if best is None:
        return None, float("nan")
    return Architecture.from_dict(best.arch), best.metrics.get(objective.accuracy, float("nan"))


def check_supernet_flags(args) -> str | None:
    """What is wrong with ``--darts-supernet`` and the flags around it (None: nothing).
    The checkpoint itself (missing, or a supernet of other settings such as 128 px) is
    checked with the DARTS sweep's variants, also before anything is written."""
    if not args.darts_supernet:
        return None
    if args.darts_candidates < 2:
        return "scores DARTS's candidates, so it needs --darts-candidates 2 or more"
    if not args.retrain_seeds:
        return ("needs --retrain-seeds >= 1: DARTS's search-time score is then the supernet's, not the "
                "train_proxy mAP@.5 evolution's is, so only re-training compares them")
    return None


def derived_arch(folder: Path) -> tuple[Architecture | None, float]:
    """A DARTS search's derived network (its first candidate, the one ``candidates: 1``
    would have proposed) and its search-time score, or ``(None, nan)`` when the search
    proposed one network only (then it is the result)."""
    run = RunFolder(folder)
    objective = run.config().make_objective()
    derived = ((run.load_strategy() or {}).get("state") or {}).get("derived", [])
    if len(derived) < 2:
        return None, float("nan")
    arch = Architecture.from_dict(derived[0])
    scores = [r.metrics.get(objective.accuracy, float("nan")) for r in run.read() if r.arch_id == arch.id]
    return arch, scores[0] if scores else float("nan")


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_supernet_flags(args)
    if problem:
        print(f"error: --darts-supernet: {problem}", file=sys.stderr)
        return 2
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    space = get_space("cpu_detector")
    table = LatencyTable.default(space, 1)
    rng = random.Random(0)
    lat = np.array([table.predict(space.sample(rng)) for _ in range(args.n_sample)])
    pcts = args.percentiles
    targets = [round(float(np.percentile(lat, q)), 2) for q in pcts]
    print(f"targets (table latency percentiles {pcts} of {args.n_sample} random architectures, 1 thread): {targets} ms")
    out = Path(args.out)

    darts = {"name": "darts", "options": {"steps": args.darts_steps, "batch_size": args.batch_size,
                                          "width": args.darts_width,
                                          "candidates": args.darts_candidates,
                                          "factorized": args.darts_factorized,
                                          **({"init_from": str(Path(args.darts_init_from).resolve())}
                                             if args.darts_init_from else {}),
                                          # only when given, so folders of earlier runs still resume
                                          **({"params_weight": args.darts_params_weight}
                                             if args.darts_params_weight is not None else {}),
                                          **({"allow_ratio": args.darts_allow_ratio}
                                             if args.darts_allow_ratio is not None else {}),
                                          **({"fixed": args.darts_fixed} if args.darts_fixed is not None else {}),
                                          "threads": 1, "data": {"n_train": args.n_train, "n_val": args.n_val}}}
    darts_variants = darts_grid(targets, args.darts_seeds, args.darts_candidates)
    evo_base = base_config(args, EVOLUTION, "constrained")
    if (out / "evolution" / "sweep.json").exists():  # other evolution settings: refused now, not after DARTS ran
        open_sweep(out / "evolution", evo_base, [])
    darts_rows = sweep(out / "darts", base_config(args, darts, "soft", args.darts_supernet), darts_variants,
                       args.darts_concurrent)
    failed = [f"{r['variant']}: {r['status']}" for r in darts_rows if r.get("status") != "done"]
    if failed:  # evolution's budgets are seed 0's wall-clock, and the verdict needs every seed
        sys.exit(f"DARTS searches did not finish ({'; '.join(failed)}); see error.txt in {out / 'darts'}/<variant>, "
                 f"then run the same command again (it resumes)")
    wall = {r["target_ms"]: r["wall_s"] for r in darts_rows if r["seed"] == 0}

    evo_variants = [Variant(f"t{t:g}-s{s}", {"objective.target_ms": t, "seed": s, "time_budget_s": wall[t]})
                    for t in targets for s in range(args.evolution_seeds)]
    # --evolution-seeds 0: DARTS alone (its latency rows); a later run with seeds resumes DARTS as done.
    evo_rows = sweep(out / "evolution", evo_base, evo_variants,
                     args.max_concurrent) if evo_variants else []

    found = [(method, r, *result_arch(out / method / r["variant"]))
             for method, rs in (("darts", darts_rows), ("evolution", evo_rows)) for r in rs]
    if args.darts_candidates > 1:  # the network DARTS would have given alone, beside its pick (not judged)
        found += [("derived", r, *derived_arch(out / "darts" / r["variant"])) for r in darts_rows]
        found = [f for f in found if f[0] != "derived" or f[2] is not None]
    timed = measure_architectures(space, [a for _, _, a, _ in found if a is not None], 1, progress=False,
                                  unit_ms=table.unit_ms)
    measured_by_id = dict(zip([a.id for _, _, a, _ in found if a is not None], timed))
    retrained, held_out = retrain(args, [a for _, _, a, _ in found if a is not None], out / "retrain.json") \
        if args.retrain_seeds else ({}, {})
    rows = []
    for method, r, arch, search_map50 in found:
        measured = measured_by_id[arch.id] if arch is not None else float("nan")
        key = arch.to_json() if arch is not None else None
        on_search_val = retrained.get(key, [])
        again = held_out.get(key, []) if held_out else on_search_val  # the figures compared
        own = method != "derived"  # a derived row is a network of a DARTS search, not a search
        rows.append({"method": method, "target": r["target_ms"], "seed": r["seed"],
                     "wall_s": r["wall_s"] if own else float("nan"), "trials": r["trials"] if own else "-",
                     "search_map50": search_map50,
                     "search_metric": "supernet_map50" if args.darts_supernet and method != "evolution" else "map50",
                     "retrained_search_val_map50": on_search_val,
                     "retrained_map50": again,
                     # the mAP compared: the fresh-seed mean when re-trained, else the search's own
                     "map50": float(np.nanmean(again)) if again else search_map50,
                     "table_ms": table.predict(arch) if arch is not None else float("nan"), "measured_ms": measured,
                     "arch": space.to_string(arch) if arch is not None else "-"})
    # search: the mAP@.5 the search picked its result by (train_proxy's, or the supernet's); on val: re-trained, on the searches' validation
    # images; retrain and range: re-trained, on the held-out ones (or on val without them).
    print(f"\n{'method':<10} {'target':>6} {'seed':>4} {'wall s':>7} {'trials':>6} {'search':>7} {'on val':>7} "
          f"{'retrain':>7} {'range':>13} {'table':>6} {'measured':>8} {'off':>7}")
    for r in rows:
        again, on_val = r["retrained_map50"], r["retrained_search_val_map50"]
        spread = f"{min(again):.3f}-{max(again):.3f}" if again else "-"
        print(f"{r['method']:<10} {r['target']:>6.2f} {r['seed']:>4} {r['wall_s']:>7.0f} {r['trials']:>6} "
              f"{r['search_map50']:>7.3f} {np.nanmean(on_val) if on_val else float('nan'):>7.3f} "
              f"{r['map50'] if again else float('nan'):>7.3f} {spread:>13} "
              f"{r['table_ms']:>6.2f} {r['measured_ms']:>8.2f} {r['measured_ms'] / r['target'] - 1:>+7.1%}")
    scored = (f"re-trained with {args.retrain_seeds} fresh seeds, mean"
              + (f", on {args.holdout_val} validation images neither search saw (data seed {HOLDOUT_DATA_SEED})"
                 if args.holdout_val else ", on the searches' validation images")) if args.retrain_seeds \
        else "search-time"
    print(f"\nmAP@.5 compared: {scored}")
    if args.darts_supernet:
        print(f"DARTS's candidates scored by the supernet {args.darts_supernet}, whose training is not in "
              f"the wall-clock evolution got; the search column is that supernet's mAP@.5 for darts and "
              f"derived rows, train_proxy's for evolution")
    verdicts = []
    several = args.darts_seeds > 1
    for t in targets:
        ds = [r for r in rows if r["method"] == "darts" and r["target"] == t]
        e = [r["map50"] for r in rows if r["method"] == "evolution" and r["target"] == t]
        median, lo, hi, verdict = accuracy_verdict([d["map50"] for d in ds], e)
        off = [d["measured_ms"] / t - 1 for d in ds]
        n_within = sum(abs(o) <= 0.10 for o in off)
        verdicts.append((n_within == len(ds), verdict))
        trained = sum(bool(np.isfinite(d["map50"])) for d in ds)
        seeds = f" (median of {trained}/{len(ds)} seeds)" if several else ""
        measured = ", ".join(f"{d['measured_ms']:.2f}" for d in ds)
        offs = ", ".join(f"{o:+.1%}" for o in off)
        within = (f"{n_within}/{len(ds)} within" if several else "within" if n_within else "outside")
        print(f"target {t:.2f} ms: DARTS mAP@.5 {median:.3f}{seeds} vs evolution [{lo:.3f}, {hi:.3f}] "
              f"({verdict}); DARTS measured {measured} ms ({offs}, {within} +-10%)")
        for d in ds:
            print(f"  darts arch, seed {d['seed']}: {d['arch']}")
        derived = [r["map50"] for r in rows if r["method"] == "derived" and r["target"] == t]
        if derived:
            kept = [m for m in derived if np.isfinite(m)]
            print(f"  derived networks (not judged): mAP@.5 {np.median(kept) if kept else float('nan'):.3f} "
                  f"(median of {len(kept)}/{len(derived)})")
    (out / "summary.json").write_text(json.dumps({"targets": targets, "map50_compared": scored, "rows": rows},
                                                 indent=1))
    n_lat = sum(w for w, _ in verdicts)
    n_acc = sum(v in ("better", "within") for _, v in verdicts)
    print(f"\nlatency within +-10%{' (every DARTS seed)' if several else ''}: {n_lat}/{len(targets)} "
          f"targets; mAP{' (DARTS median)' if several else ''} within or above evolution's range: "
          f"{n_acc}/{len(targets)} targets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
