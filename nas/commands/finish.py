"""``nas finish`` and ``nas predict``."""
from __future__ import annotations

from nas.cli import arg, comma_list, command
from nas.commands.space import _space_settings, with_settings


@command("finish", help="finishing passes on a run's best, a checkpoint or an architecture: train, distill, prune, int8; re-measured")
@arg("source", metavar="RUN|CHECKPOINT|ARCH", help="run folder (best/arch.json + best/weights.pt), a trained "
     "weights.pt (a run's or a finishing stage's) or an architecture (file, JSON, compact string, reference name)")
@arg("--passes", default=None, help="comma-separated, run in this order (default: train,distill,prune,int8)")
@arg("--config", default=None, help="finishing YAML: data:, train:, measure:, space:, and one block per pass")
@arg("--out", default=None, help="output folder (default: RUN/finish, CHECKPOINT's folder/finish, or runs/finish-<arch id>)")
@arg("--no-progress", action="store_true", help="no training progress bars")
@with_settings
def finish_command(args):
    import torch

    from nas.finishing import finish, format_table, load_source

    torch.set_num_threads(1)  # the latency columns are per thread count; training shares the CPU
    # an empty list goes on to the pass check, which names the passes to choose from
    passes = tuple(comma_list(args.passes, "--passes", allow_empty=True)) if args.passes is not None else None
    source, cfg = load_source(args.source, args.config, _space_settings(args), passes)
    out = args.out or source.default_out
    print(f"finishing {source.description}\npasses {', '.join(cfg.passes)} -> {out}")
    result = finish(source, cfg, out, progress=not args.no_progress)
    print("\n" + format_table(result.rows, cfg.measure.threads))
    print(f"\n{result.out / 'finish.md'} ({result.seconds:.0f} s)")


@command("predict", help="run an exported ONNX detector (fp32 or int8) on images; write boxes JSON and drawn images")
@arg("model", help="ONNX file written by 'nas export' or 'nas finish'")
@arg("images", nargs="+", help="image files")
@arg("--out", required=True, help="output folder: <image stem>.json and <image stem>.jpg")
@arg("--score-threshold", type=float, default=0.3, help="minimum class score kept (default 0.3)")
@arg("--threads", type=int, default=1, help="onnxruntime threads")
def predict_command(args):
    import json

    from nas.finishing.predict import predict_files

    written = predict_files(args.model, args.images, args.out, args.score_threshold, args.threads)
    for path in written:
        n = len(json.loads(path.read_text(encoding="utf-8"))["detections"])
        print(f"{path.with_suffix('.jpg')}: {n} detection{'s' * (n != 1)}")
