"""``nas latency build|validate|predict``."""
from __future__ import annotations

from nas.cli import UsageError, arg, command


def _space(args):
    from search_spaces import get_space

    settings = {}
    if args.input_size is not None:
        settings["input_size"] = args.input_size
    if args.num_classes is not None:
        settings["num_classes"] = args.num_classes
    return get_space(args.space, **settings)


@command("latency build", help="measure every op of a space on this CPU into a table (resumable)")
@arg("--space", default="cpu_detector")
@arg("--threads", type=int, default=1, help="onnxruntime intra-op threads")
@arg("--input-size", type=int, default=None)
@arg("--num-classes", type=int, default=None)
@arg("--out", default=None, help="table path (default: this machine's committed table for these settings; "
                                  "a new <stem>.<cpu>.json beside another machine's)")
@arg("--calibration-models", type=int, default=None,
     help="whole networks measured to fit the correction (default 120; 0: none)")
def build(args):
    from latency_tables.predictor import build_table_path
    from latency_tables.profiler import DEFAULT_CALIBRATION_MODELS, build_table

    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    space = _space(args)
    out = args.out or build_table_path(space, args.threads)
    n_cal = DEFAULT_CALIBRATION_MODELS if args.calibration_models is None else args.calibration_models
    table = build_table(space, args.threads, out, calibration_models=n_cal)
    cal = table.calibration or {}
    print(f"wrote {out}: {len(table.ops)} ops"
          + (f"; calibration on {cal['n_models']} networks: fit MAPE {cal['fit_mape'] * 100:.2f}% "
             f"(plain op sum {cal['raw_sum_mape'] * 100:.2f}%)" if "coef" in cal else ""))


@command("latency validate", help="compare table predictions with whole networks measured here")
@arg("--table", required=True)
@arg("--n", type=int, default=50)
@arg("--seed", type=int, default=7)
@arg("--rescale", action="store_true", help="first re-time 8 of the table's calibration networks and scale "
                                             "predictions by how much slower (> 1) they time now than at the build")
def validate_cmd(args):
    from latency_tables.predictor import LatencyTable
    from latency_tables.validate import machine_drift, validate

    table = LatencyTable.load(args.table)
    if args.rescale:
        drift = machine_drift(table)
        table.scale = drift.factor
        print(drift.line())
    out = validate(table, args.n, args.seed)
    res = out["results"]
    print(f"{args.n} architectures (seed {args.seed}), {table.threads} thread(s), "
          f"measured {min(out['measured_ms']):.2f}-{max(out['measured_ms']):.2f} ms")
    for name, acc in res.items():
        print(acc.row(name))
    t = res["table"]
    print(f"summary: table={args.table} n={args.n} threads={table.threads} scale={table.scale:.3f} MAPE={t.mape * 100:.2f}% "
          f"within10={t.within10 * 100:.1f}% within5={t.within5 * 100:.1f}% spearman={t.spearman:.3f} "
          f"kendall={t.kendall:.3f} flops_spearman={res['FLOPs-proportional'].spearman:.3f}")


@command("latency predict", help="predict an architecture's latency from a table")
@arg("arch", help="architecture file, JSON, compact string or reference name")
@arg("--table", required=True)
def predict(args):
    from latency_tables.predictor import LatencyTable
    from nas.commands.space import resolve_architecture

    table = LatencyTable.load(args.table)
    arch, _ = resolve_architecture(args.arch, table.space.settings())
    print(f"{arch.id}  {table.predict(arch):.3f} ms  ({table.threads} thread(s), plain op sum {table.raw_sum(arch):.3f} ms)")
