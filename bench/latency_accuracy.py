"""How well the committed latency tables predict whole-network latency on this CPU.

For each thread count: N random architectures of the default space measured end to
end under onnxruntime, compared with the table's prediction (and with FLOPs- and
params-proportional baselines); the table's build time; and prediction throughput.
First, 8 of the networks the table's calibration timed at build time are timed again:
their median ratio is how much slower (> 1) or faster they time now (timing against
the yardstick already cancels a uniformly slower machine, so this is near 1 unless
relative speeds changed), and the row ``table xF (drift)`` is the table's prediction
scaled by it. Last, the first
``--repeat`` networks are measured a second time: the row ``re-measured`` is how well
one measurement predicts another, the floor for any predictor on this machine.

    python bench/latency_accuracy.py --threads 1 2 --n 200 --seed 7
"""
from __future__ import annotations

import argparse
import random

import numpy as np
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency_tables.predictor import LatencyTable, default_table_path  # noqa: E402
from latency_tables.profiler import measure_architectures  # noqa: E402
from latency_tables.validate import accuracy, machine_drift, validate  # noqa: E402
from search_spaces import get_space  # noqa: E402


def throughput(table: LatencyTable, n: int, seed: int) -> tuple[float, float]:
    """Random architectures predicted per second by a freshly loaded predictor (cold: its
    per-group cache starts empty) and by one that has already predicted ``n`` others
    (steady state, as in a search). No architecture is predicted twice."""
    space = table.space
    rng = random.Random(seed)
    first, second = [space.sample(rng) for _ in range(n)], [space.sample(rng) for _ in range(n)]
    fresh = LatencyTable(table.table, space)
    rates = []
    for archs in (first, second):
        t0 = time.perf_counter()
        fresh.predict_many(archs)
        rates.append(n / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--num-classes", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=50, help="networks measured twice (the noise floor)")
    args = ap.parse_args()
    print("command: python bench/latency_accuracy.py " + " ".join(sys.argv[1:]))
    space = get_space("cpu_detector", input_size=args.input_size, num_classes=args.num_classes)
    for threads in args.threads:
        path = default_table_path(space, threads)
        table = LatencyTable.load(path, space, threads)
        fp = table.table.header["fingerprint"]
        print(f"\n== {threads} thread(s): {path.name} ({len(table.table.ops)} ops, built in "
              f"{table.table.header.get('build_seconds_ops', float('nan')) / 60:.1f} min; {fp['cpu_model']}, "
              f"{'/'.join(fp['isa'])}, onnxruntime {fp['runtime_version']})")
        drift = machine_drift(table)
        print(drift.line())
        out = validate(table, args.n, args.seed, progress=False)
        ms = out["measured_ms"]
        print(f"{args.n} architectures (seed {args.seed}), measured {min(ms):.2f}-{max(ms):.2f} ms")
        rescaled = accuracy(table.predict_many(out["archs"]) * drift.factor, np.array(ms))
        # The floor for any predictor: the same networks measured a second time.
        k = min(args.repeat, args.n)
        again = measure_architectures(space, out["archs"][:k], threads, progress=False, unit_ms=table.unit_ms)
        repeat = accuracy(again, np.array(ms[:k]))
        for name, acc in {**out["results"], f"table x{drift.factor:.3f} (drift)": rescaled,
                          f"re-measured ({k} nets)": repeat}.items():
            print(acc.row(name))
        cold, warm = throughput(table, 5000, args.seed + 1)
        print(f"prediction: {cold:,.0f} architectures/s cold (fresh predictor), {warm:,.0f}/s after 5,000 others")


if __name__ == "__main__":
    main()
