"""How much a proxy's ranking depends on how it was made: its scores from several
``bench/proxy_ranking.py`` runs (e.g. supernets trained with different seeds or
settings), compared with each other and with the trained mAP@.5.

For each output: its Spearman with the trained mAP@.5. For each pair: the Spearman
between their scores. Then the mean rank over all of them (an ensemble) against the
trained mAP@.5. Two supernets trained alike that rank the networks very differently
say the supernet's score is mostly noise at that training budget (session 11: 0.36).

    python bench/proxy_agreement.py bench/results/proxy_ranking_supernet_split.txt \\
        bench/results/proxy_ranking_supernet_split_seed1.txt
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import proxy_ranking  # noqa: E402
from search_spaces import InputError  # noqa: E402


def scores(path: Path, column: str, target: dict[str, float] | None) -> dict[str, float]:
    """``column`` per network of one output; InputError if the output lacks the column,
    or gives other trained mAPs than ``target`` for the networks both hold."""
    table = proxy_ranking.read_architectures(path, column)
    if target is not None and any(target.get(r["name"], r[proxy_ranking.TARGET]) != r[proxy_ranking.TARGET] for r in table):
        raise InputError(f"{path}: other trained mAPs than the first output; "
                         "compare outputs made from one proxy_ranking.py cache")
    return {r["name"]: r[column] for r in table}


def main(argv=None) -> int:
    try:
        return run(argv)
    except InputError as exc:  # a file that is not a proxy_ranking.py output: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outputs", type=Path, nargs="+", help="bench/proxy_ranking.py output files")
    p.add_argument("--score", default="supernet_map50", help="the proxy's column (default supernet_map50)")
    args = p.parse_args(argv)
    first = proxy_ranking.read_architectures(args.outputs[0], args.score)
    target = {r["name"]: r[proxy_ranking.TARGET] for r in first}
    print("$ python " + " ".join(["bench/proxy_agreement.py", *(argv if argv is not None else sys.argv[1:])]))
    runs = {path.name: scores(path, args.score, target) for path in args.outputs}
    names = sorted(set.intersection(*(set(s) for s in runs.values())))  # scored by every run
    truth = [target[n] for n in names]
    print(f"{args.score} of {len(runs)} outputs over the {len(names)} networks they all scored")
    print(f"\n{'output':<48} {'vs trained':>10}")
    for label, s in runs.items():
        print(f"{label:<48} {spearmanr([s[n] for n in names], truth)[0]:>10.3f}")
    if len(runs) > 1:
        print(f"\n{'pair':<48} {'':<48} {'spearman':>8}")
        for (a, sa), (b, sb) in itertools.combinations(runs.items(), 2):
            print(f"{a:<48} {b:<48} {spearmanr([sa[n] for n in names], [sb[n] for n in names])[0]:>8.3f}")
        ensemble = np.mean([rankdata([s[n] for n in names]) for s in runs.values()], axis=0)
        print(f"\nmean rank of all {len(runs)} vs trained: {spearmanr(ensemble, truth)[0]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
