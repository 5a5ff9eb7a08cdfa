"""How long does one ``train_proxy`` evaluation take at its default budget on this machine?

The ``train_proxy`` evaluator with its defaults (300 steps, batch 16, 512 generated
training images, 128 validation images, 256 px; the same as ``configs/default.yaml``)
scores the space's 8 reference architectures and ``--n`` random ones (seeded). Printed:
the command line, per architecture the wall-clock seconds of the whole evaluation
(data preparation excluded: it is generated once per process and cached), the training
seconds, mAP@.5, params and FLOPs; then the median, the slowest and how many finished
within ``--limit`` seconds (issue 4's target: 3 minutes).

Run it on an otherwise idle machine: it is a timing.

Usage::

    python bench/train_proxy_cost.py                 # 8 references + 4 random, 2 threads
    python bench/train_proxy_cost.py --n 0 --steps 5 --input-size 64 --n-train 32 --n-val 8   # smoke run
"""
from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a clone without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from evaluators.base import get_evaluator  # noqa: E402
from evaluators.data import DataConfig  # noqa: E402
from search_spaces import get_space  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4, help="random architectures besides the 8 references (default 4)")
    p.add_argument("--seed", type=int, default=0, help="architecture sampling and training seed (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the whole machine)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300, train_proxy's default)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16, train_proxy's default)")
    p.add_argument("--input-size", type=int, default=256, help="input size (default 256, the space's default)")
    p.add_argument("--n-train", type=int, default=512, help="generated training images (default 512)")
    p.add_argument("--n-val", type=int, default=128, help="generated validation images (default 128)")
    p.add_argument("--limit", type=float, default=180.0, help="target seconds per candidate (default 180)")
    return p.parse_args(argv)


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

    print(f"\n{'arch':<24}{'seconds':>9}{'training':>10}{'map50':>8}{'params':>10}{'GFLOPs':>8}", flush=True)
    seconds = []
    for name, arch in archs:
        start = time.monotonic()
        metrics = trainer(arch, space)
        took = time.monotonic() - start
        seconds.append(took)
        size = stats(arch, space)
        print(f"{name:<24}{took:>9.1f}{metrics['train_seconds']:>10.1f}{metrics['map50']:>8.3f}"
              f"{size['params'] / 1e6:>9.2f}M{size['flops'] / 1e9:>8.2f}", flush=True)
    within = sum(s <= args.limit for s in seconds)
    print(f"\n{len(seconds)} candidates at {args.steps} steps, batch {args.batch_size}, {args.input_size} px, "
          f"{args.threads} thread(s): median {np.median(seconds):.0f} s, slowest {max(seconds):.0f} s, "
          f"{within}/{len(seconds)} within {args.limit:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
