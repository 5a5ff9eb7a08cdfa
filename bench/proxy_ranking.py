"""How well does each zero-cost proxy rank detectors of the default space by trained mAP?

For ``--n`` random architectures of ``cpu_detector`` (seeded by ``--seed``) plus its 8
reference architectures, we compute every zero-cost proxy (evaluator ``zero_cost``),
params and FLOPs (``params_flops``), optionally the supernet's mAP@.5 (evaluator
``supernet`` with ``--supernet CKPT``), and the mAP@.5 after ``train_proxy`` training
at a longer budget (``--steps``) on the generated dataset. The proxies are measured on
the very initial weights that training starts from (same seed).

Printed: the command line, one row per architecture, then for every score its Spearman
rho and Kendall tau (scipy) against the trained mAP@.5, over the architectures where
both are known. params and FLOPs are the baselines a proxy has to beat. With
``--versus-steps N`` (or ``--train-seed``), this run's trained mAP@.5 and its final
training loss are also ranked against the mAP@.5 of the run at N steps (or at
``--seed``): a short training is a proxy too, and its loss can be read without the
validation pass.

Trained results are cached per architecture in ``--cache`` (JSON, keyed by the training
settings, then by the compact architecture string) right after each training, so an
interrupted run resumes where it stopped. Proxies, params and FLOPs are recomputed
(seconds per architecture).

Usage::

    python bench/proxy_ranking.py                      # 24 random + 8 references, 400 steps, 128 px
    python bench/proxy_ranking.py --n 3 --steps 20 --n-train 64   # smoke run
    nas supernet train --steps 3000 --input-size 128 --out runs/sn128/supernet.pt
    python bench/proxy_ranking.py --supernet runs/sn128/supernet.pt --cached-only
    python bench/proxy_ranking.py --supernet runs/sn128/supernet.pt --cached-only --supernet-finetune-steps 10
    python bench/proxy_ranking.py --train-seed 1      # the same networks re-trained: how well mAP repeats
    python bench/proxy_ranking.py --steps 800 --shard 0/2 &   # two 1-thread processes share the
    python bench/proxy_ranking.py --steps 800 --shard 1/2     # trainings (and the cache file); each ranks its own
    python bench/proxy_ranking.py --steps 800 --cached-only   # half, so rank all 32 once both are done
    python bench/proxy_ranking.py --steps 100 --n-val 512 --versus-steps 400 --cached-only  # 100 steps as the proxy
    python bench/proxy_ranking.py --n-val 512 --hold-neck-head   # the same backbones, one neck and head
    python bench/proxy_ranking.py --n-val 512 --cached-only --supernet CKPT --supernet-substitute-neck-head
        # free networks, each scored by the supernet as its backbone under that one neck and head

The default input size is 128 px, not the space's 256: 400 steps at 256 px took 577 s
for one architecture on the 2-core machine of BENCHMARKS.md (hours for the 32), at
128 px 88-200 s. The supernet has to be trained at the same size.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import random
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a clone without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from scipy import stats  # noqa: E402

from evaluators.base import get_evaluator  # noqa: E402
from evaluators.trainer import TrainingFailure  # noqa: E402
from evaluators.zero_cost import PROXIES, ProxyError  # noqa: E402
from nas.strategies.darts import DEFAULT_FIXED as HELD_NECK_HEAD  # noqa: E402
from search_spaces import InputError, get_space  # noqa: E402
from search_spaces.files import write_text_atomic  # noqa: E402

TARGET = "map50"
LOSS = "train_loss"  # train_proxy's mean loss over its last 10 steps
DEFAULT_CACHE = ROOT / "bench" / "results" / "proxy_ranking_cache.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24, help="random architectures besides the 8 references (default 24)")
    p.add_argument("--steps", type=int, default=400, help="training steps per architecture (default 400)")
    p.add_argument("--input-size", type=int, default=128, help="input size of the space and the data (default 128)")
    p.add_argument("--n-train", type=int, default=512, help="generated training images (default 512)")
    p.add_argument("--n-val", type=int, default=128, help="generated validation images (default 128)")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size (default 16)")
    p.add_argument("--zc-batch", type=int, default=8, help="images in the zero-cost batch (default 8)")
    p.add_argument("--seed", type=int, default=0, help="architecture sampling, initial weights and training (default 0)")
    p.add_argument("--train-seed", type=int, default=None,
                   help="initial weights and training only (default: --seed); another value with the same --seed "
                        "re-trains the same architectures, which measures how well the trained mAP repeats")
    p.add_argument("--versus-steps", type=int, default=None, metavar="N",
                   help="also print how well the trained mAP, and the final training loss, rank like the mAP at "
                        "N steps (from the cache)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"trained-result cache (default {DEFAULT_CACHE.relative_to(ROOT)})")
    p.add_argument("--supernet", metavar="CKPT", help="also score with the supernet evaluator from this checkpoint")
    p.add_argument("--shard", type=shard, default=(0, 1), metavar="K/N",
                   help="only the architectures whose index i (references first) has i %% N == K, so N processes "
                        "can share the trainings and the cache (default 0/1: all)")
    p.add_argument("--supernet-n-val", type=int, default=None, metavar="N",
                   help="score the supernet on N generated validation images (default: the --n-val the trained "
                        "mAP uses); more images, less noise in a score, more seconds per candidate")
    p.add_argument("--supernet-finetune-steps", type=int, default=0, metavar="N",
                   help="the supernet evaluator's finetune_steps: train each inherited network alone for N steps "
                        "before scoring it (default 0)")
    p.add_argument("--hold-neck-head", action="store_true",
                   help="give every network (references too) the neck and head DARTS holds (DEFAULT_FIXED in "
                        "nas/strategies/darts.py), so that only the backbones differ; the cache is keyed by the "
                        "network, so these are trained as networks of their own")
    p.add_argument("--supernet-substitute-neck-head", action="store_true",
                   help="score each network with the supernet as its backbone under the neck and head DARTS "
                        "holds (the evaluator's substitute option), whatever its own neck and head; the trained "
                        "mAP it is ranked against stays the network's own (with --hold-neck-head it changes nothing)")
    p.add_argument("--cached-only", action="store_true",
                   help="train nothing: rank only the architectures whose trained mAP is already in the cache")
    args = p.parse_args(argv)
    if args.supernet_n_val is not None and args.supernet_n_val < 1:
        p.error(f"--supernet-n-val must be >= 1, got {args.supernet_n_val}")
    if args.supernet_finetune_steps < 0:
        p.error(f"--supernet-finetune-steps must be >= 0, got {args.supernet_finetune_steps}")
    if args.supernet_substitute_neck_head and not args.supernet:
        p.error("--supernet-substitute-neck-head needs --supernet CKPT (it changes how the supernet scores)")
    if args.supernet_finetune_steps and not args.supernet:
        p.error("--supernet-finetune-steps needs --supernet CKPT (it fine-tunes the supernet's candidates)")
    if args.versus_steps is not None and not (args.versus_steps >= 1 and args.versus_steps != args.steps):
        p.error(f"--versus-steps must be a step count >= 1 other than --steps ({args.steps}), got {args.versus_steps}")
    return args


def shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N; otherwise an ArgumentTypeError, which
    argparse prints as a usage error (exit 2)."""
    k, sep, n = text.partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or not 0 <= int(k) < int(n):
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N with 0 <= K < N, e.g. 0/2 and 1/2 for two processes")
    return int(k), int(n)


def architectures(space, n: int, seed: int, hold: dict | None = None) -> list[tuple[str, object]]:
    """The space's reference architectures, then ``n`` distinct random ones not among them.
    ``hold`` (decision: value) overrides those decisions in every one, references too; the
    random draws are the same, so ``random_00`` keeps its backbone with or without it."""
    def held(arch):
        return space.canonicalize(arch.replace(**hold)) if hold else arch

    references = [(name, held(a)) for name, a in space.reference_architectures().items()]
    seen = {space.to_string(a) for _, a in references}
    rng = random.Random(seed)
    randoms = []
    while len(randoms) < n:
        arch = held(space.sample(rng))
        if space.to_string(arch) not in seen:  # a repeat is near impossible here, but would skew the ranks
            seen.add(space.to_string(arch))
            randoms.append((f"random_{len(randoms):02d}", arch))
    return references + randoms


def settings_key(args: argparse.Namespace) -> str:
    """Everything that changes a trained mAP, as one readable cache key."""
    key = (f"input_size={args.input_size} n_train={args.n_train} n_val={args.n_val} steps={args.steps} "
           f"batch_size={args.batch_size} seed={args.seed}")
    return key if train_seed(args) == args.seed else f"{key} train_seed={train_seed(args)}"


def train_seed(args: argparse.Namespace) -> int:
    return args.seed if args.train_seed is None else args.train_seed


def load_cache(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def save_result(path: Path, cache: dict, key: str, name: str, result: dict) -> None:
    """Add one trained result to ``cache`` and to the file, atomically (an interrupt while
    writing never loses earlier results). The file is re-read under a lock and merged, so
    processes training other shards into the same file do not drop each other's results;
    ``cache`` gets their results too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        for k, entries in load_cache(path).items():
            cache.setdefault(k, {}).update({n: r for n, r in entries.items() if n not in cache.get(k, {})})
        cache.setdefault(key, {})[name] = result
        write_text_atomic(path, json.dumps(cache, indent=1, sort_keys=True))


def trained(arch, space, trainer, cache: dict, key: str, path: Path) -> tuple[dict, bool]:
    """The train_proxy metrics of ``arch`` (``{"error": ...}`` if training diverged),
    from the cache or trained now and cached; second value: whether it was cached."""
    entry = cache.setdefault(key, {})
    name = space.to_string(arch)
    if name in entry:
        return entry[name], True
    try:
        result = {k: float(v) for k, v in trainer(arch, space).items()}
    except TrainingFailure as exc:  # deterministic for the settings: cache it, do not retry
        result = {"error": str(exc)}
    save_result(path, cache, key, name, result)
    return result, False


def measure(arch, space, evaluators: dict, supernet_seconds: list[float]) -> dict[str, float | None]:
    """Every cheap score of ``arch``; a proxy that fails on this network is None (it is
    left out of that proxy's correlation) and the reason is printed. The supernet
    evaluator's time is appended to ``supernet_seconds``."""
    scores: dict[str, float | None] = {}
    for proxy in sorted(PROXIES):
        try:
            scores.update(evaluators[f"zc_{proxy}"](arch, space))
        except ProxyError as exc:
            print(f"    {exc}", flush=True)
            scores[f"zc_{proxy}"] = None
    scores.update(evaluators["params_flops"](arch, space))
    if "supernet" in evaluators:
        from evaluators.supernet import UntrainedOpsError

        try:
            start = time.monotonic()
            scores["supernet_map50"] = float(evaluators["supernet"](arch, space)["supernet_map50"])
            supernet_seconds.append(time.monotonic() - start)
        # A path the supernet never sampled, or whose fine-tuning diverged: no score, not a made-up one.
        except (UntrainedOpsError, TrainingFailure) as exc:
            print(f"    supernet: {str(exc)[:160]}", flush=True)
            scores["supernet_map50"] = None
    return scores


def rank_correlation(x: list, y: list) -> tuple[float, float, int]:
    """(Spearman rho, Kendall tau, n) over the pairs where both values are known; NaN when
    fewer than 3 pairs or either side is constant (no ranking to compare)."""
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    n = len(pairs)
    if n < 3:
        return float("nan"), float("nan"), n
    a, b = map(np.asarray, zip(*pairs))
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan"), n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b).statistic), float(stats.kendalltau(a, b).statistic), n


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def print_architectures(rows: list[dict], columns: list[str]) -> None:
    header = ["arch", TARGET] + columns
    print("\n" + "  ".join(f"{h:>14}" if i else f"{h:<22}" for i, h in enumerate(header)))
    for row in rows:
        cells = [row["name"], _fmt(row[TARGET])] + [_fmt(row[c]) for c in columns]
        print("  ".join(f"{c:>14}" if i else f"{c:<22}" for i, c in enumerate(cells)))


def recorded_args(path: Path) -> argparse.Namespace:
    """The options an earlier run was given, parsed from the command line its output
    starts with (``$ python bench/proxy_ranking.py ...``, as :func:`main` prints it), so
    that its row names can be turned back into the same networks (``--n``, ``--seed``,
    ``--input-size``, ``--hold-neck-head``). InputError if the first line is not such a
    command or its options no longer parse."""
    first = path.read_text(encoding="utf-8").partition("\n")[0]
    words = shlex.split(first[2:]) if first.startswith("$ ") else []
    script = next((i for i, w in enumerate(words) if w.endswith("proxy_ranking.py")), None)
    if script is None:
        raise InputError(f"{path}: the first line is not the '$ ... proxy_ranking.py ...' command of a run")
    try:
        return parse_args(words[script + 1:])
    except SystemExit:  # argparse printed why
        raise InputError(f"{path}: its recorded command's options do not parse (above)") from None


def run_architectures(space, args: argparse.Namespace) -> list[tuple[str, object]]:
    """The (name, architecture) list a run with ``args`` ranks."""
    return architectures(space, args.n, args.seed, HELD_NECK_HEAD if args.hold_neck_head else None)


def read_architectures(path: Path, column: str) -> list[dict]:
    """The per-network table an earlier run printed (:func:`print_architectures`), read
    back from its saved output: ``{"name", TARGET, column}`` per row where both values
    are known (a ``-`` cell, a proxy or training that failed, leaves the row out).
    InputError if the file has no such table or no such column."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("arch ")), None)
    if start is None:
        raise InputError(f"{path}: no per-network table (a line starting 'arch'); is it a proxy_ranking.py output?")
    header = lines[start].split()
    if column not in header[1:]:
        raise InputError(f"{path}: no column {column!r} (columns: {header[1:]})")
    rows = []
    for line in lines[start + 1:]:
        parts = line.split()
        if len(parts) != len(header):  # the table ends at a blank line (older outputs: at the next table)
            break
        row = dict(zip(header, parts))
        if row[TARGET] != "-" and row[column] != "-":
            rows.append({"name": row["arch"], TARGET: float(row[TARGET]), column: float(row[column])})
    return rows


def print_correlations(rows: list[dict], columns: list[str]) -> None:
    target = [row[TARGET] for row in rows]
    if len({t for t in target if t is not None}) < 2:
        print(f"\nnote: the trained {TARGET} is the same for every architecture, so no score can rank them; "
              "train longer (--steps) or on more images (--n-train)")
    print(f"\n{'score':<20}{'spearman':>10}{'kendall':>10}{'n':>5}   vs trained {TARGET}")
    for column in columns:
        rho, tau, n = rank_correlation([row[column] for row in rows], target)
        kind = "  (baseline)" if column in ("params", "flops") else ""
        print(f"{column:<20}{rho:>10.3f}{tau:>10.3f}{n:>5}{kind}")


def print_agreement(args: argparse.Namespace, space, archs, cache: dict, key: str) -> None:
    """How well this run's trained mAP ranks like another run's in the cache, over the
    architectures both trained: with ``--train-seed`` other than ``--seed``, the ``--seed``
    run (how well the ground truth repeats; it bounds what any proxy can reach against
    one training run); with ``--versus-steps N``, the run at N steps (how much the
    ground truth depends on the training budget, or how well a short training ranks).
    This run's final training loss is ranked the same way, and the median and range of
    the training seconds the cache holds for this run are printed."""
    others = []
    if train_seed(args) != args.seed:
        others.append((f"train seed {train_seed(args)} vs {args.seed}", key.rsplit(" train_seed=", 1)[0]))
    if args.versus_steps is not None:
        others.append((f"{args.steps} steps vs {args.versus_steps}",
                       settings_key(argparse.Namespace(**{**vars(args), "steps": args.versus_steps}))))
    names, this = [space.to_string(a) for _, a in archs], cache.get(key, {})
    for label, other_key in others:
        base = cache.get(other_key, {})
        print()
        # This run's mAP, then its training loss (negated: lower is better), against the other run's mAP.
        for score, sign, what in ((TARGET, 1.0, f"trained {TARGET}"), (LOSS, -1.0, f"{LOSS} (lower ranks higher)")):
            pairs = [(base[n][TARGET], sign * this[n][score]) for n in names
                     if TARGET in base.get(n, {}) and score in this.get(n, {})]
            rho, tau, n = rank_correlation(*zip(*pairs)) if pairs else (float("nan"), float("nan"), 0)
            print(f"{what}, {label}: spearman {rho:.3f}, kendall {tau:.3f}, n {n}")
    seconds = [this[n]["train_seconds"] for n in names if "train_seconds" in this.get(n, {})]
    if others and seconds:  # what the loss costs without the validation pass, as recorded when trained
        print(f"training alone, this run's settings: median {np.median(seconds):.1f} s, {min(seconds):.1f}-"
              f"{max(seconds):.1f} s per network (n {len(seconds)}; as cached, with whatever ran beside it)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    try:
        return run(args)
    except InputError as exc:  # a bad option, checkpoint or dataset: one line, as the CLI does
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """The whole benchmark for parsed ``args``; prints as it goes."""
    torch.set_num_threads(args.threads)
    space = get_space("cpu_detector", input_size=args.input_size)  # 6 classes: the generated dataset's
    data = {"n_train": args.n_train, "n_val": args.n_val}
    # Every evaluator is built before any training, so a bad option or checkpoint fails now.
    # One zero_cost evaluator per proxy, so a non-finite score drops only that proxy.
    evaluators = {f"zc_{p}": get_evaluator("zero_cost", proxies=[p], batch_size=args.zc_batch, data=data, seed=train_seed(args))
                  for p in sorted(PROXIES)}
    evaluators["params_flops"] = get_evaluator("params_flops")
    if args.supernet:
        supernet_data = None if args.supernet_n_val is None else {"n_train": args.n_train, "n_val": args.supernet_n_val}
        substitute = HELD_NECK_HEAD if args.supernet_substitute_neck_head else None
        evaluators["supernet"] = get_evaluator("supernet", checkpoint=args.supernet, data=supernet_data,
                                                finetune_steps=args.supernet_finetune_steps, substitute=substitute)
        start = time.monotonic()
        evaluators["supernet"].prepare(space)
        print(f"supernet {args.supernet} loaded in {time.monotonic() - start:.1f} s", flush=True)
    trainer = get_evaluator("train_proxy", data=data, steps=args.steps, batch_size=args.batch_size, seed=train_seed(args))
    cache, key = load_cache(args.cache), settings_key(args)
    print(f"cache {args.cache} [{key}]", flush=True)

    archs = run_architectures(space, args)
    rows, supernet_seconds = [], []
    k, n_shards = args.shard
    for i, (name, arch) in enumerate(archs, 1):
        if (i - 1) % n_shards != k or (args.cached_only and space.to_string(arch) not in cache.get(key, {})):
            continue
        start = time.monotonic()
        scores = measure(arch, space, evaluators, supernet_seconds)
        measured = time.monotonic()
        result, cached = trained(arch, space, trainer, cache, key, args.cache)
        source = f"scores {measured - start:.1f} s, " + ("mAP cached" if cached else f"trained {time.monotonic() - measured:.0f} s")
        if "error" in result:
            print(f"[{i:>3}/{len(archs)}] {name:<22} training failed ({result['error']}): left out", flush=True)
            continue
        print(f"[{i:>3}/{len(archs)}] {name:<22} {TARGET} {result[TARGET]:.4f}  {source}", flush=True)
        rows.append({"name": name, TARGET: result[TARGET], **scores})

    columns = [f"zc_{p}" for p in sorted(PROXIES)] + (["supernet_map50"] if args.supernet else []) + ["params", "flops"]
    print_architectures(rows, columns)
    print_correlations(rows, columns)
    print_agreement(args, space, archs, cache, key)
    if supernet_seconds:
        print(f"\nsupernet evaluator: median {np.median(supernet_seconds):.2f} s, max {max(supernet_seconds):.2f} s "
              f"per candidate ({len(supernet_seconds)} candidates, {args.threads} thread(s), after loading)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
