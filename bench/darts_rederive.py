"""Re-derive finished DARTS searches under another derivation rule, paired with the rule they ran.

Most of what decides DARTS's network is the derivation (which candidates it may pick,
how it values them, what it holds), and trying a rule on fresh searches costs a full
``bench/darts_vs_evolution.py`` run. This takes the trained architecture distributions
of such a run (``OUT/darts/*/darts.pt``), derives each search's network twice, as
searched (its config's options, with the width and neck/head its checkpoint recorded)
and under the variant given by the flags, and re-trains every network the way
the bench does (its ``train_proxy`` settings, ``--retrain-seeds`` fresh seeds, scored on
``--holdout-val`` held-out images; cached in ``OUT/retrain.json``, which the bench's own
networks are already in). The comparison is paired: the same distribution, only the rule
differs.

Flags that make the variant: ``--params-weight``, ``--allow-ratio`` and ``--fixed`` (the
neck/head decisions held, as the bench's ``--darts-fixed``). A different held neck/head is
allowed here though a search refuses it on resume, because the derivation reads only the
architecture parameters, not the supernet's weights. ``--measure-rounds`` (default the
searches' own) steers both derivations by onnxruntime timings, so run this on an
otherwise idle machine, as the bench.

Printed: per search, each network's table and measured latency and its re-trained
mAP@.5 (mean and range over the seeds); per target, the median over the searches of
each rule, against evolution's range from the bench's ``summary.json``, and the paired
difference (variant minus as searched) per search.

    python bench/darts_rederive.py OUT --fixed head.depth=3,head.kernel=5
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import darts_vs_evolution as dve  # noqa: E402
from nas.config import load_config  # noqa: E402
from nas.strategies.base import get_strategy  # noqa: E402
from nas.strategies.darts import DartsSupernet, _closest  # noqa: E402
from search_spaces import InputError, get_space  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="a bench/darts_vs_evolution.py output folder (with darts/*/darts.pt)")
    p.add_argument("--params-weight", type=float, default=None, metavar="W", help="darts option params_weight")
    p.add_argument("--allow-ratio", type=float, default=None, metavar="R", help="darts option allow_ratio")
    p.add_argument("--fixed", type=dve.fixed_option, default=None, metavar="NAME=VALUE,...",
                   help="the neck/head held, over today's default (as the bench's --darts-fixed; printed whole), "
                        "not over what the search held")
    p.add_argument("--measure-rounds", type=dve.at_least(0), default=None, metavar="N",
                   help="onnxruntime-corrected derivations (default: the searches' own)")
    p.add_argument("--searches", default="*", metavar="GLOB",
                   help="only the search folders whose names match (e.g. 't4.51*'; default all)")
    p.add_argument("--retrain-seeds", type=dve.at_least(1), default=3, metavar="N", help="fresh seeds per network")
    p.add_argument("--holdout-val", type=dve.at_least(1), default=512, metavar="N",
                   help="held-out validation images (the bench's default)")
    return p.parse_args(argv)


def searches(out: Path, pattern: str = "*") -> list[Path]:
    """The DARTS search folders of a bench output whose names match ``pattern``, each
    with its trained ``darts.pt``."""
    found = sorted(p.parent for p in (out / "darts").glob(f"{pattern}/darts.pt"))
    if not found:
        raise InputError(f"{out / 'darts'} has no search folder matching {pattern!r} with a darts.pt; give the "
                         f"--out folder of a bench/darts_vs_evolution.py run")
    return found


def derive(folder: Path, overrides: dict, space):
    """``(target, arch, table ms, measured ms or None)``: ``folder``'s search
    derived again from its trained architecture parameters, with the options it ran
    under ``overrides``."""
    cfg = load_config(folder / "config.yaml")
    ck = torch.load(folder / "darts.pt", map_location="cpu", weights_only=False)
    # As searched: its config's options, and the width and held neck/head its checkpoint
    # recorded (the config leaves out what took a default, and defaults change).
    recorded = {k: ck["state"][k] for k in ("width", "fixed") if k in ck["state"]}
    options = {**cfg.strategy.options, **recorded, **overrides, "progress": False}
    strategy = get_strategy("darts", space, cfg.make_objective(), seed=cfg.seed, **options)
    net = DartsSupernet(space, ck["state"]["width"], strategy.fixed, strategy.kinds,
                        ck["state"].get("factorized", False))
    with torch.no_grad():  # only alpha: the derivation does not read the weights
        net.alpha.copy_(ck["net"]["alpha"])
        net.axis_alpha.copy_(ck["net"]["axis_alpha"])
    table, target = strategy.latency_table(), float(cfg.objective["target_ms"])
    arch, measured = strategy.derive_measured(net, table, target)
    closest = (_closest(measured, target) or {}).get("measured_ms")  # the one the derivation kept
    return target, arch, table.predict(arch), closest


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        folders = searches(out, args.searches)
        first = load_config(folders[0] / "config.yaml")
        variant = {**({"params_weight": args.params_weight} if args.params_weight is not None else {}),
                   **({"allow_ratio": args.allow_ratio} if args.allow_ratio is not None else {}),
                   **({"measure_rounds": args.measure_rounds} if args.measure_rounds is not None else {})}
        if args.fixed is not None:
            variant["fixed"] = args.fixed
        if not variant or variant.keys() == {"measure_rounds"}:
            raise InputError("no variant: give at least one of --params-weight, --allow-ratio, --fixed")
        # the baseline: as searched (with the same measure_rounds, so the two differ by the rule alone)
        rules = {"searched": {k: v for k, v in variant.items() if k == "measure_rounds"}, "variant": variant}
        space = get_space(first.space.name, **first.space.settings)
        get_strategy("darts", space, first.make_objective(), **{**first.strategy.options, **variant, "progress": False})
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    print(f"variant: {json.dumps(variant)}", flush=True)
    proxy = next(e.options for e in first.evaluators if e.name == "train_proxy")
    retrain_args = argparse.Namespace(train_steps=proxy["steps"], batch_size=proxy["batch_size"],
                                      n_train=proxy["data"]["n_train"], n_val=proxy["data"]["n_val"],
                                      retrain_seeds=args.retrain_seeds, holdout_val=args.holdout_val)
    rows = []
    for folder in folders:
        for rule, overrides in rules.items():
            target, arch, table_ms, measured_ms = derive(folder, overrides, space)
            rows.append({"search": folder.name, "rule": rule, "target": target, "arch": arch,
                         "table_ms": table_ms, "measured_ms": measured_ms})
    _, held = dve.retrain(retrain_args, [r["arch"] for r in rows], out / "retrain.json")
    print(f"\nsearch        rule       table  measured     off   mAP@.5 (held-out, {args.retrain_seeds} seeds)")
    for r in rows:
        seeds = held[r["arch"].to_json()]
        r["map50"] = float(np.mean(seeds))
        off = f"{r['measured_ms'] / r['target'] - 1:+.1%}" if r["measured_ms"] else "-"
        measured = f"{r['measured_ms']:.2f}" if r["measured_ms"] else "-"
        print(f"{r['search']:12s}  {r['rule']:9s}  {r['table_ms']:5.2f}  {measured:>8s}  {off:>6s}   "
              f"{r['map50']:.3f} [{min(seeds):.3f}-{max(seeds):.3f}]  {space.to_string(r['arch'])}")
    summary = out / "summary.json"
    evolution = json.loads(summary.read_text())["rows"] if summary.exists() else []
    print()
    for target in sorted({r["target"] for r in rows}):
        at = {rule: {r["search"]: r["map50"] for r in rows if r["target"] == target and r["rule"] == rule}
              for rule in rules}
        evo = [e["map50"] for e in evolution if e["method"] == "evolution" and e["target"] == target]
        diffs = [at["variant"][s] - at["searched"][s] for s in at["searched"]]
        line = (f"target {target:g} ms: as searched {np.median(list(at['searched'].values())):.3f}, "
                f"variant {np.median(list(at['variant'].values())):.3f} (medians of {len(diffs)} searches); "
                f"paired variant - searched: {', '.join(f'{d:+.3f}' for d in diffs)} "
                f"(higher in {sum(d > 0 for d in diffs)}/{len(diffs)})")
        if evo:
            line += f"; evolution [{min(evo):.3f}, {max(evo):.3f}]"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
