"""Is this machine steady enough to time networks? And does timing against a yardstick help?

Part 1, spells: a reference network of the default space (``--arch``) runs back to back
for ``--seconds``; the runs are cut into ``--windows`` consecutive windows and each
window's 20th percentile is printed. On a steady machine the windows agree; on this
project's machine they jump by tens of percent in spells of a second or so.

Part 2, repeatability (``--networks N``, 0 to skip): N random networks of the default
space are timed three times by each of two methods, the passes one after the other:
``wall-clock``, the best of 3 windows of 0.3 s, round-robin over the networks (how
sessions 2-4 timed); and ``yardstick``, ``latency_tables.runtime.time_interleaved`` (each
window alternates the network with a fixed yardstick network and keeps their ratio;
median over 3 windows). For each pair of passes: how far one pass is from the other
(MAPE, share within ±5% and ±10%). Last line: the mean MAPE of both methods.

    python bench/timing_spells.py                       # pp_lcnet_like_w0.5, 1 thread
    python bench/timing_spells.py --threads 2
"""
from __future__ import annotations

import argparse
import itertools
import random
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a clone without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from latency_tables.profiler import model_session  # noqa: E402
from latency_tables.runtime import time_interleaved, time_session  # noqa: E402
from search_spaces import get_space  # noqa: E402


def spells(space, arch: str, threads: int, seconds: float, windows: int) -> None:
    session, feeds = model_session(space, space.reference_architectures()[arch], threads)
    for _ in range(20):
        session.run(None, feeds)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    p20 = [float(np.percentile(c, 20)) for c in np.array_split(np.array(times), windows)]
    print(f"{len(times)} runs of {arch} at {threads} thread(s) in {seconds:g} s; "
          f"20th percentile per {seconds / windows:.2f} s window (ms):")
    print(" ".join(f"{x:.2f}" for x in p20))
    print(f"fastest window {min(p20):.2f} ms, slowest {max(p20):.2f} ms, ratio x{max(p20) / min(p20):.2f}")


def wall_clock(items, windows: int = 3, seconds: float = 0.3) -> np.ndarray:
    """The earlier method: per network the fastest of ``windows`` round-robin windows."""
    best = np.full(len(items), np.inf)
    for _ in range(windows):
        for i, (session, feeds) in enumerate(items):
            best[i] = min(best[i], time_session(session, feeds, warmup=0, min_runs=10, min_seconds=seconds).ms)
    return best


def repeatability(space, threads: int, n: int, seed: int) -> None:
    rng = random.Random(seed)
    items = [model_session(space, space.sample(rng), threads) for _ in range(n)]
    for session, feeds in items:
        for _ in range(10):
            session.run(None, feeds)
    methods = {"wall-clock": wall_clock, "yardstick": lambda it: np.array([t.ms for t in time_interleaved(it, threads)])}
    passes: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for p in range(3):
        for name, method in methods.items():
            t0 = time.perf_counter()
            passes[name].append(method(items))
            print(f"pass {p + 1} {name:<10} {time.perf_counter() - t0:5.1f} s  first networks (ms): "
                  + " ".join(f"{x:.2f}" for x in passes[name][-1][:5]), flush=True)
    means = {}
    for name, runs in passes.items():
        mapes = []
        for a, b in itertools.combinations(range(3), 2):
            rel = np.abs(runs[a] - runs[b]) / runs[b]
            mapes.append(rel.mean())
            print(f"{name:<10} pass {a + 1} vs {b + 1}: MAPE {rel.mean() * 100:5.2f}%  within±5% {(rel <= .05).mean() * 100:5.1f}%"
                  f"  within±10% {(rel <= .10).mean() * 100:5.1f}%  median ratio {np.median(runs[a] / runs[b]):.3f}")
        means[name] = float(np.mean(mapes))
    print(f"{n} networks at {threads} thread(s), pass-to-pass MAPE: "
          + ", ".join(f"{k} {v * 100:.2f}%" for k, v in means.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="pp_lcnet_like_w0.5")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--windows", type=int, default=10)
    p.add_argument("--networks", type=int, default=20, help="networks for the repeatability part (0: skip it)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    space = get_space("cpu_detector")
    spells(space, args.arch, args.threads, args.seconds, args.windows)
    if args.networks:
        repeatability(space, args.threads, args.networks, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
