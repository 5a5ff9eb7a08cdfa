"""Where a proxy disagrees with training, decision by decision.

Reads a ``bench/proxy_ranking.py`` output (its per-network table) and prints, for each
neck/head decision and for the share of each block kind, the Spearman correlation of
that decision with the trained mAP@.5 and with a proxy's score (default the supernet's).
A decision the proxy favours and training does not (session 10: neck and head depth
for the fully shared supernets) is where its weight sharing misleads it.

    python bench/proxy_marginals.py bench/results/proxy_ranking_supernet_sandwich.txt

The networks behind the output's row names are rebuilt from the command line the output
starts with.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from scipy.stats import ConstantInputWarning, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import proxy_ranking  # noqa: E402
from search_spaces import InputError, get_space  # noqa: E402
from search_spaces.cpu_detector import STAGES  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output", type=Path, help="a bench/proxy_ranking.py output file")
    p.add_argument("--score", default="supernet_map50", help="the proxy's column")
    args = p.parse_args(argv)
    print(f"$ python bench/proxy_marginals.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    try:
        # The output's own command line says which networks its rows are (--n, --seed,
        # --input-size, --hold-neck-head), so a row name is never read as another network.
        run = proxy_ranking.recorded_args(args.output)
        table = proxy_ranking.read_architectures(args.output, args.score)
    except InputError as exc:  # not a proxy_ranking.py output, or no such column: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    space = get_space("cpu_detector", input_size=run.input_size)
    archs = dict(proxy_ranking.run_architectures(space, run))
    rows = [(archs[row['name']].sample, row[proxy_ranking.TARGET], row[args.score]) for row in table]

    def blocks(s):
        return [f"{st.name}.b{j}" for st in STAGES for j in range(s[f"{st.name}.depth"])]

    macro = [name for name in space.decisions() if name.startswith(("neck.", "head."))]
    features = {name: (lambda s, name=name: float(s[name])) for name in macro}
    features.update({f"share {k}": (lambda s, k=k: sum(s[f"{b}.kind"] == k for b in blocks(s)) / len(blocks(s)))
                     for k in space.block_kinds})
    features["blocks"] = lambda s: float(len(blocks(s)))
    trained = [t for _, t, _ in rows]
    scores = [q for _, _, q in rows]
    print(f"{args.output} ({len(rows)} networks): Spearman of each decision with the trained map50 and with {args.score}")
    print(f"{'decision':<16} {'trained':>8} {args.score:>16}")
    for name, f in features.items():
        x = [f(s) for s, _, _ in rows]
        with warnings.catch_warnings():  # a decision held for every network is constant: nan, said once
            warnings.simplefilter("ignore", ConstantInputWarning)
            cells = f"{spearmanr(x, trained)[0]:>8.2f} {spearmanr(x, scores)[0]:>16.2f}"
        print(f"{name:<16} {cells}" + ("   (the same in every network)" if len(set(x)) == 1 else ""))
    print(f"{'overall':<16} {'':>8} {spearmanr(trained, scores)[0]:>16.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
