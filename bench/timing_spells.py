"""Is this machine steady enough to time networks? One network, timed in short windows.

A reference network of the default space (``--arch``) runs back to back for
``--seconds``; the runs are cut into ``--windows`` consecutive windows and each window's
20th percentile is printed. On a steady machine the windows agree; on this project's
machine they jump between a fast and a ~40% slower level in spells of a second or two,
which is why ``latency_tables.runtime.time_interleaved`` keeps the fastest of windows
taken seconds apart. Last line: fastest window, slowest window, and their ratio.

    python bench/timing_spells.py                       # pp_lcnet_like_w0.5, 1 thread, 3 s
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a clone without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from latency_tables.profiler import model_session  # noqa: E402
from search_spaces import get_space  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="pp_lcnet_like_w0.5")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--windows", type=int, default=10)
    args = p.parse_args(argv)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    space = get_space("cpu_detector")
    session, feeds = model_session(space, space.reference_architectures()[args.arch], args.threads)
    for _ in range(20):
        session.run(None, feeds)
    times = []
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    chunks = np.array_split(np.array(times), args.windows)
    p20 = [float(np.percentile(c, 20)) for c in chunks]
    print(f"{len(times)} runs of {args.arch} at {args.threads} thread(s) in {args.seconds:g} s; "
          f"20th percentile per {args.seconds / args.windows:.2f} s window (ms):")
    print(" ".join(f"{x:.2f}" for x in p20))
    print(f"fastest window {min(p20):.2f} ms, slowest {max(p20):.2f} ms, ratio x{max(p20) / min(p20):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
