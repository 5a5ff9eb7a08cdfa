"""How many evaluations each search strategy needs on NAS-Bench-201, against random search.

Each strategy searches the 15,625 NAS-Bench-201 cells for the best ``cifar10_val``
(objective mode ``accuracy``: the benchmark has no latency, so none is invented) for
``--budget`` evaluations, over ``--seeds`` seeds. After every evaluation we record the
TEST regret: the best ``cifar10_test`` in the whole table minus the ``cifar10_test`` of
the architecture with the best ``cifar10_val`` seen so far (what the search would pick).
The test column is never shown to the strategies.

Printed: median and quartiles of the regret at a few budgets, and for each strategy the
first number of evaluations at which its median regret is at most random search's median
regret after 150 evaluations (``>B`` when never within the budget). A PNG of the median
curves with their interquartile bands goes to ``--out``.

The LAST line is exactly ``name=evaluations`` pairs separated by spaces, e.g.
``random=150 evolution=31 tpe=33 rl=70``.

Usage::

    python bench/strategies_nb201.py                       # 100 seeds x 300 evaluations
    python bench/strategies_nb201.py --seeds 10 --budget 100 --strategies random,evolution
    python bench/strategies_nb201.py --seed-start 1000     # a fresh seed range

Exits 0 with a message when the table is absent.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a clone without installing
    sys.path.insert(0, str(ROOT))

from nas.objectives import Objective  # noqa: E402
from nas.strategies import get_strategy, list_strategies  # noqa: E402
from search_spaces.nasbench201 import DEFAULT_TABLE, NasBench201Space  # noqa: E402

REFERENCE = "random"      # every strategy is compared to random search...
REFERENCE_AT = 150        # ...after this many evaluations
OBJECTIVE = Objective(mode="accuracy", accuracy="cifar10_val")
CHECKPOINTS = (10, 25, 50, 75, 100, 150, 200, 300, 500, 1000)

_space: NasBench201Space | None = None


def _init_worker(table: str) -> None:
    global _space
    _space = NasBench201Space(table=table)
    _space.table  # load once per process  # noqa: B018


def run_one(task: tuple[str, int, int, dict[str, Any]]) -> np.ndarray:
    """One search; returns the test regret after each evaluation (shape ``[budget]``)."""
    name, seed, budget, options = task
    space = _space
    assert space is not None, "call _init_worker first"
    table = space.table
    best_test = table.best("cifar10_test")
    strategy = get_strategy(name, space, OBJECTIVE, seed=seed, **options)
    regret = np.empty(budget)
    best_val, picked_test = -np.inf, np.nan
    for i in range(budget):
        arch = strategy.ask()
        if arch is None:  # space exhausted: the pick no longer changes
            regret[i:] = best_test - picked_test
            break
        row = table.lookup(arch)
        strategy.tell(arch, {"cifar10_val": row["cifar10_val"]})
        if row["cifar10_val"] > best_val:
            best_val, picked_test = row["cifar10_val"], row["cifar10_test"]
        regret[i] = best_test - picked_test
    return regret


def run_strategy(name: str, seeds: list[int], budget: int, table: str, workers: int,
                 options: dict[str, Any] | None = None) -> np.ndarray:
    """Regret curves ``[len(seeds), budget]`` of one strategy."""
    tasks = [(name, s, budget, options or {}) for s in seeds]
    if workers <= 1:
        _init_worker(table)
        return np.stack([run_one(t) for t in tasks])
    with multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(
            workers, initializer=_init_worker, initargs=(table,)) as pool:
        return np.stack(pool.map(run_one, tasks, chunksize=1))


def evaluations_to_reach(median: np.ndarray, level: float) -> int | None:
    """First evaluation count (1-based) whose median regret is <= ``level``."""
    hits = np.nonzero(median <= level + 1e-12)[0]
    return int(hits[0]) + 1 if hits.size else None


def plot(curves: dict[str, np.ndarray], out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in curves.items():
        x = np.arange(1, c.shape[1] + 1)
        q1, med, q3 = np.percentile(c, [25, 50, 75], axis=0)
        ax.plot(x, med, label=name)
        ax.fill_between(x, q1, q3, alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)  # regret can be exactly 0: no plain log axis
    ax.set_ylim(bottom=0)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("test regret (accuracy %, median and IQR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=100, help="seeds per strategy (default 100)")
    p.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--budget", type=int, default=300, help="evaluations per search (default 300)")
    p.add_argument("--strategies", default=None,
                   help="comma-separated strategy names (default: every registered strategy)")
    p.add_argument("--table", default=str(DEFAULT_TABLE), help="NAS-Bench-201 CSV")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "strategies_nb201.png"), help="PNG of the curves")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default 2)")
    p.add_argument("--options", default="{}",
                   help='JSON {strategy: {option: value}} passed to the strategies, e.g. \'{"evolution": {"sample_size": 5}}\'')
    args = p.parse_args(argv)

    if not Path(args.table).is_file():
        print(f"skipped: NAS-Bench-201 table not found at {args.table} (see shared/benchmarks/README.md)")
        return 0
    names = args.strategies.split(",") if args.strategies else list_strategies()
    # Random first: it is the reference and must be run whether asked for or not.
    names = [REFERENCE] + [n for n in names if n != REFERENCE]
    unknown = sorted(set(names) - set(list_strategies()))
    if unknown:
        p.error(f"unknown strategies {unknown}; registered: {list_strategies()}")
    options = json.loads(args.options)
    # A registered strategy may not fit a table benchmark (e.g. one that needs a latency
    # target or a supernet): say so and leave it out, unless it was asked for by name.
    probe_space = NasBench201Space(table=args.table)
    for name in list(names):
        try:
            get_strategy(name, probe_space, OBJECTIVE, seed=0, **options.get(name, {}))
        except Exception as exc:  # noqa: BLE001 -- any refusal: report it and move on
            if args.strategies and name in args.strategies.split(","):
                raise
            print(f"skipping strategy {name!r}: {type(exc).__name__}: {exc}")
            names.remove(name)
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    budget = args.budget

    curves: dict[str, np.ndarray] = {}
    print(f"NAS-Bench-201 cifar10: search on val, test regret of the pick; {len(seeds)} seeds "
          f"({seeds[0]}..{seeds[-1]}), {budget} evaluations, {args.workers} workers")
    for name in names:
        t0 = time.perf_counter()
        curves[name] = run_strategy(name, seeds, budget, args.table, args.workers, options.get(name))
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", flush=True)

    points = [c for c in CHECKPOINTS if c <= budget]
    print("\nmedian test regret [q25, q75] after N evaluations")
    print(f"{'N':>6} " + " ".join(f"{n:>22}" for n in names))
    for n in points:
        cells = []
        for name in names:
            q1, med, q3 = np.percentile(curves[name][:, n - 1], [25, 50, 75])
            cells.append(f"{med:6.2f} [{q1:5.2f}, {q3:5.2f}]")
        print(f"{n:>6} " + " ".join(f"{c:>22}" for c in cells))

    ref_at = min(REFERENCE_AT, budget)
    level = float(np.median(curves[REFERENCE][:, ref_at - 1]))
    plot(curves, Path(args.out), f"NAS-Bench-201 cifar10, {len(seeds)} seeds")
    print(f"\nplot: {args.out}")
    print(f"evaluations for the median regret to reach {REFERENCE}'s median at {ref_at} ({level:.3f}):")
    pairs = []
    for name in names:
        n = evaluations_to_reach(np.median(curves[name], axis=0), level)
        pairs.append(f"{name}={n if n is not None else f'>{budget}'}")
    print(" ".join(pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
