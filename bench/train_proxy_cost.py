"""How long does one ``train_proxy`` evaluation take at its default budget on this machine?

The ``train_proxy`` evaluator with its defaults (its steps and batch size, 512 generated
training images, 128 validation images, 256 px; the same as ``configs/default.yaml``)
scores the space's 8 reference architectures and ``--n`` random ones (seeded). Printed:
the command line, per architecture the wall-clock seconds of the whole evaluation
(data preparation excluded: it is generated once per process and cached), the training
seconds, mAP@.5, params and FLOPs; then the median, the slowest and how many finished
within ``--limit`` seconds (issue 4's target: 3 minutes). ``--versus OUTPUT`` also
prints how well this run's mAP@.5 ranks the networks like an earlier output of this
script (say, at a longer budget): a cheaper budget is only worth having if it does.

Run it on an otherwise idle machine: it is a timing.

Usage::

    python bench/train_proxy_cost.py                 # 8 references + 4 random, 2 threads
    python bench/train_proxy_cost.py --n 0 --steps 300 > long.txt
    python bench/train_proxy_cost.py --n 0 --versus long.txt   # the default budget against 300 steps
    python bench/train_proxy_cost.py --n 0 --steps 5 --input-size 64 --n-train 32 --n-val 8   # smoke run
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a clone without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from evaluators.base import get_evaluator  # noqa: E402
from evaluators.builtin import TrainProxy  # noqa: E402
from evaluators.data import DataConfig  # noqa: E402
from search_spaces import get_space  # noqa: E402


# The evaluator's own defaults, so this bench times the budget a search really gets.
DEFAULTS = {name: param.default for name, param in inspect.signature(TrainProxy.__init__).parameters.items()}
HEADER = f"{'arch':<24}{'seconds':>9}{'training':>10}{'map50':>8}{'params':>10}{'GFLOPs':>8}"


def table_row(name: str, seconds: float, metrics: dict, size: dict) -> str:
    return (f"{name:<24}{seconds:>9.1f}{metrics['train_seconds']:>10.1f}{metrics['map50']:>8.3f}"
            f"{size['params'] / 1e6:>9.2f}M{size['flops'] / 1e9:>8.2f}")


def parse_row(row: str) -> tuple[str, tuple[float, str]]:
    """``(name, (mAP@.5, size))`` of one printed table row, as printed (both runs of a
    comparison are read at the same rounding); IndexError or ValueError if it is not one."""
    fields = row.split()
    return fields[0], (float(fields[3]), " ".join(fields[4:6]))


def read_table(path: Path) -> dict[str, tuple[float, str]]:
    """Per architecture name in an earlier output of this script: its mAP@.5 and its
    printed size (params and GFLOPs, which tell whether a ``random_NN`` of that run is
    the same network as this run's). ValueError naming the file and what is wrong."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    if HEADER not in lines:
        raise ValueError(f"{path} is not an output of bench/train_proxy_cost.py (no table header)")
    table = {}
    start = lines.index(HEADER) + 1
    for number, row in enumerate(itertools.takewhile(str.strip, lines[start:]), start + 1):
        try:
            name, entry = parse_row(row)
        except (IndexError, ValueError):
            raise ValueError(f"{path}, line {number}: not a table row of this script: {row.strip()!r}") from None
        table[name] = entry
    return table


def compare(now: dict[str, tuple[float, str]], earlier: dict[str, tuple[float, str]]) -> str:
    """One line: the Spearman between two runs' mAP@.5 over the networks both ran (same
    name and size; another ``--seed`` draws other random networks under the same names)."""
    both = [name for name in now if name in earlier and now[name][1] == earlier[name][1]]
    if len(both) < 3:
        return (f"only {len(both)} architecture(s) in both runs, no ranking to compare (a name printed with "
                "another size is another network: run with the earlier run's --seed and --input-size)")
    rho = spearmanr([now[n][0] for n in both], [earlier[n][0] for n in both])[0]
    return f"spearman {rho:.3f} over the {len(both)} architectures in both"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4, help="random architectures besides the 8 references (default 4)")
    p.add_argument("--seed", type=int, default=0, help="architecture sampling and training seed (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the whole machine)")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"],
                   help=f"training steps (default {DEFAULTS['steps']}, train_proxy's default)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                   help=f"batch size (default {DEFAULTS['batch_size']}, train_proxy's default)")
    p.add_argument("--input-size", type=int, default=256, help="input size (default 256, the space's default)")
    p.add_argument("--n-train", type=int, default=512, help="generated training images (default 512)")
    p.add_argument("--n-val", type=int, default=128, help="generated validation images (default 128)")
    p.add_argument("--limit", type=float, default=180.0, help="target seconds per candidate (default 180)")
    p.add_argument("--versus", type=Path, metavar="OUTPUT",
                   help="an earlier output of this script: also print the Spearman between its mAP@.5 and this run's")
    args = p.parse_args(argv)
    if args.versus is not None:
        try:  # read first: a bad file fails before any training
            args.versus_table = read_table(args.versus)
        except ValueError as exc:
            p.error(f"--versus: {exc}")  # exit 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    torch.set_num_threads(args.threads)
    space = get_space("cpu_detector", input_size=args.input_size)
    data = {"n_train": args.n_train, "n_val": args.n_val}
    start = time.monotonic()
    DataConfig(**data).load(args.input_size)  # generated once, cached for the process
    print(f"data: {args.n_train} + {args.n_val} generated images at {args.input_size} px in "
          f"{time.monotonic() - start:.1f} s (once per process, not counted below)", flush=True)
    trainer = get_evaluator("train_proxy", data=data, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    stats = get_evaluator("params_flops")
    rng = random.Random(args.seed)
    archs = list(space.reference_architectures().items()) + [(f"random_{i:02d}", space.sample(rng)) for i in range(args.n)]

    print(f"\n{HEADER}", flush=True)
    seconds, table = [], {}
    for name, arch in archs:
        start = time.monotonic()
        metrics = trainer(arch, space)
        took = time.monotonic() - start
        seconds.append(took)
        row = table_row(name, took, metrics, stats(arch, space))
        table.update([parse_row(row)])
        print(row, flush=True)
    within = sum(s <= args.limit for s in seconds)
    print(f"\n{len(seconds)} candidates at {args.steps} steps, batch {args.batch_size}, {args.input_size} px, "
          f"{args.threads} thread(s): median {np.median(seconds):.0f} s, slowest {max(seconds):.0f} s, "
          f"{within}/{len(seconds)} within {args.limit:.0f} s")
    if args.versus is not None:
        print(f"map50 vs {args.versus}: {compare(table, args.versus_table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
