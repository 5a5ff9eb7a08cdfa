"""What do the finishing passes buy on this CPU? train -> distill -> prune -> int8.

One architecture of ``cpu_detector`` (``--arch``, default the search-space reference
``mobilenetv2_like_w1.0`` with a ReLU stem and neck, ``--fixed-act relu``) goes through
the four passes on the built-in generated dataset;
every stage is exported and measured as deployed (mAP of the ONNX file in onnxruntime,
latency at 1 and 2 threads, size, params, FLOPs). Printed: the command line, the
table, then per stage the comparison with the stage it was made from (latency ratio =
parent / stage, so > 1 is faster; mAP@.5 change), and distill vs train (same schedule,
same initial weights, only the loss differs).

Then int8 once more, of the unpruned ``train`` stage (``nas finish OUT/train/weights.pt
--passes int8``, into ``OUT/int8-of-train``): int8 against the fp32 network it came
from, without pruning in between (pruning shrinks the convolutions int8 speeds up, so
int8 of a pruned network gains less).

Artifacts (every stage's model.onnx / weights.pt, finish.md, finish.json) go to ``--out``.
Latencies are ``nas finish``'s: at the end it times every stage's ONNX file again, all
together in interleaved windows (``--retime OUT`` does only that for an older run).

Why that default: onnxruntime has no int8 h-swish, so in an h-swish network every
activation leaves int8 and comes back (DequantizeLinear, HardSigmoid, Mul,
QuantizeLinear); and small depthwise-separable networks (``pp_lcnet_like``) are slower
in int8 even without it (int8 depthwise kernels lose to the fp32 NCHWc ones here).
Expansion-6 inverted residuals are pointwise-heavy, where VNNI pays. ``--fixed-act
hswish --arch pp_lcnet_like_w0.5`` shows the other case.

Usage::

    python bench/finishing.py                                   # 256 px, 1200 steps: the real run
    python bench/finishing.py --input-size 64 --n-train 16 --n-val 8 --steps 4 --batch-size 4 \\
        --calibration-images 4 --min-runs 5 --min-seconds 0.05 --teacher-arch mobilenetv2_like_w0.5   # smoke run
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a clone without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from evaluators.data import DataConfig  # noqa: E402
from nas.finishing import finish, finish_config, format_table, load_source  # noqa: E402
from nas.finishing.config import DEFAULT_TRAIN  # noqa: E402


# The default teacher: the student's MobileNetV2-like blocks with 5x5 kernels, a wider and
# deeper neck and head (0.88 vs 0.70 GFLOPs, 1.65 vs 1.43 M params at 256 px; the space's
# widths stop at 1.0, so a teacher cannot simply be wider).
TEACHER = ("cpu_detector|s1x1.0:ir_k5_e6_re+ir_k5_e6_re|s2x1.0:ir_k5_e6_re+ir_k5_e6_re+ir_k5_e6_re"
           "|s3x1.0:ir_k5_e6_re+ir_k5_e6_re+ir_k5_e6_re+ir_k5_e6_re|s4x1.0:ir_k5_e6_re+ir_k5_e6_re+ir_k5_e6_re"
           "|s5x1.0:ir_k5_e6_re+ir_k5_e6_re+ir_k5_e6_re|neck:c96_d2_k5_pan|head:d3_k5")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="mobilenetv2_like_w1.0", help="architecture: reference name, compact string or JSON")
    p.add_argument("--teacher-arch", default=TEACHER, help="distillation teacher (trained first)")
    p.add_argument("--teacher", metavar="WEIGHTS", help="a trained teacher checkpoint instead (e.g. OUT/teacher/weights.pt "
                   "of an earlier run with the same options: the teacher takes 3x the student's steps)")
    p.add_argument("--fixed-act", default="relu", choices=["relu", "hswish"], help="space setting: stem/neck activation")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training (latency is measured at 1 and 2)")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--n-train", type=int, default=512, help="generated training images")
    p.add_argument("--n-val", type=int, default=128, help="generated validation images")
    p.add_argument("--steps", type=int, default=DEFAULT_TRAIN.steps, help="train/distill steps (prune fine-tunes half)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_TRAIN.batch_size)
    p.add_argument("--teacher-steps", type=int, default=None,
                   help="teacher steps (default: 3x --steps: a teacher must beat the student to teach it; at equal "
                        "steps the larger teacher trains slower and lost, 0.157 vs 0.273 mAP@.5 in session 2)")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of internal channels kept by pruning")
    p.add_argument("--calibration-images", type=int, default=64)
    p.add_argument("--methods", default="minmax,entropy,percentile", help="int8 calibration methods")
    p.add_argument("--min-runs", type=int, default=50, help="timed onnxruntime runs per latency (at least)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds per latency (at least)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-finishing"))
    p.add_argument("--retime", metavar="OUT", help="only re-time the stages of a finished run in OUT (interleaved)")
    return p.parse_args(argv)


def compare(r: dict, base: dict, threads: tuple[int, ...]) -> str:
    """Speed-up (base latency / stage latency, > 1 is faster), mAP@.5 change and size ratio."""
    speed = "  ".join(f"{t}T x{base[f'latency_ms@{t}t'] / r[f'latency_ms@{t}t']:.2f}" for t in threads)
    return (f"{r['stage']:<16} vs {base['stage']:<8} speed-up {speed}   mAP@.5 {r['map50'] - base['map50']:+.3f}"
            f"   size x{r['size_mb'] / base['size_mb']:.2f}")


def comparisons(rows: list[dict], threads: tuple[int, ...]) -> list[str]:
    """Each stage against the stage it was made from; distill against train (same steps
    and initial weights); the kept int8 model against train (everything finishing adds)."""
    by_name = {r["stage"]: r for r in rows}
    lines = [compare(r, by_name[r["parent"]], threads) for r in rows if r.get("parent") in by_name]
    if "distill" in by_name and "train" in by_name:
        lines.append(compare(by_name["distill"], by_name["train"], threads))
    kept = [r for r in rows if "kept as int8/model.onnx" in r["note"]]
    if kept and "train" in by_name:
        lines.append(compare(kept[0], by_name["train"], threads) + "   (kept int8 model)")
    return lines


def retime(out: Path, windows: int = 5) -> list[dict]:
    """For a run made before ``finish`` re-timed its stages itself: re-time them now
    (``nas.finishing.measure.retime_stages``), rewrite finish.json / finish.md, and print
    the table and comparisons as a fresh run does."""
    import json

    from nas.finishing.measure import retime_stages
    from nas.finishing.pipeline import write_tables

    finished = json.loads((out / "finish.json").read_text())
    threads = tuple(finished["config"]["measure"]["threads"])
    stages = retime_stages(out, finished.pop("stages"), threads, windows)
    write_tables(out, finished, stages, threads)
    print("\n" + format_table(stages, threads) + "\n")
    print("\n".join(comparisons(stages, threads)))
    return stages


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    if args.retime:
        retime(Path(args.retime))
        return 0
    settings = {"input_size": args.input_size, "num_classes": 6, **({"fixed_act": args.fixed_act} if args.fixed_act != "hswish" else {})}
    source, cfg = load_source(args.arch, settings=settings)
    cfg = finish_config({
        "passes": ["train", "distill", "prune", "int8"],
        "data": dataclasses.asdict(DataConfig(n_train=args.n_train, n_val=args.n_val, seed=args.seed)),
        "train": {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
                  "warmup_steps": min(DEFAULT_TRAIN.warmup_steps, max(1, args.steps // 10))},
        "measure": {"min_runs": args.min_runs, "min_seconds": args.min_seconds},
        "distill": {"teacher_arch": args.teacher_arch, "teacher": args.teacher,
                    "teacher_steps": 3 * args.steps if args.teacher_steps is None else args.teacher_steps},
        "prune": {"ratio": args.ratio},
        "int8": {"calibration_images": args.calibration_images, "methods": args.methods.split(",")},
    }, cfg, "bench options")
    result = finish(source, cfg, args.out)
    print("\n" + format_table(result.rows, cfg.measure.threads) + "\n")
    print("\n".join(comparisons(result.rows, cfg.measure.threads)))
    print(f"\n{result.out / 'finish.md'}  ({result.seconds:.0f} s)")

    print("\n== int8 of the unpruned train stage")
    source, cfg8 = load_source(str(result.out / "train" / "weights.pt"), passes=("int8",))  # this run's config
    result8 = finish(source, cfg8, result.out / "int8-of-train")
    print("\n" + format_table(result8.rows, cfg.measure.threads) + "\n")
    print("\n".join(comparisons(result8.rows, cfg.measure.threads)))
    print(f"\n{result8.out / 'finish.md'}  ({result8.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
