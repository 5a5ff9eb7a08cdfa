"""``nas data check`` and ``nas data synth``."""
from __future__ import annotations

from nas.cli import arg, command


@command("data check", help="validate a detection dataset (COCO, YOLO or VOC) before a long search")
@arg("path", help="dataset root folder")
@arg("--format", choices=["coco", "yolo", "voc"], default=None, help="default: detected from the layout")
@arg("--no-decode", action="store_true", help="skip decoding every image (faster, finds fewer problems)")
def check(args):
    from evaluators.datasets import check_dataset

    report = check_dataset(args.path, format=args.format, decode_images=not args.no_decode)
    print(report.summary())
    return 0 if report.ok else 1


@command("data synth", help="write the built-in generated dataset to disk (YOLO layout) to look at it")
@arg("--out", required=True)
@arg("--train", type=int, default=64)
@arg("--val", type=int, default=16)
@arg("--size", type=int, default=256)
@arg("--seed", type=int, default=0)
def synth(args):
    from evaluators.synthetic import write_synthetic

    print(f"wrote {write_synthetic(args.out, args.train, args.val, args.size, args.seed)}")
