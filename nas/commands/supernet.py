"""``nas supernet train``: the weight-sharing supernet behind the ``supernet`` evaluator."""
from __future__ import annotations

from nas.cli import arg, comma_list, command


@command("supernet train", help="train a weight-sharing supernet (SPOS) for the 'supernet' evaluator; "
                                "re-running with the same --out resumes it")
@arg("--steps", type=int, required=True, help="optimiser steps, one uniformly sampled path each")
@arg("--out", required=True, help="checkpoint file (written atomically every --save-every steps)")
@arg("--data", default="synthetic", help="'synthetic' (default) or a dataset folder (COCO, YOLO or VOC)")
@arg("--n-train", type=int, default=512, help="training images used (synthetic: generated)")
@arg("--n-val", type=int, default=128, help="validation images the evaluator scores on by default")
@arg("--input-size", type=int, default=256)
@arg("--batch-size", type=int, default=16)
@arg("--seed", type=int, default=0)
@arg("--lr", type=float, default=4e-3, help="peak AdamW learning rate (warm-up, then cosine decay to 0)")
@arg("--weight-decay", type=float, default=0.05,
     help="AdamW's decoupled weight decay (0: none); it also shrinks the channels and kernel taps a step's "
          "path leaves unused (0 ranked worse in one run here, see BENCHMARKS.md)")
@arg("--save-every", type=int, default=100)
@arg("--sampling", choices=("uniform", "sandwich", "distill"), default="uniform",
     help="paths per step: one uniformly sampled (SPOS), or that one plus its largest and smallest versions "
          "(BigNAS's sandwich rule; three times the cost per step); distill: the sandwich, where the smaller "
          "two also learn the largest one's class scores (BigNAS's in-place distillation; it ranked worse "
          "here, see BENCHMARKS.md)")
@arg("--split", default="", metavar="DECISIONS",
     help="comma-separated decisions (e.g. neck.depth,head.depth) whose every value combination gets its own "
          "neck and head weights (few-shot NAS); the backbone stays shared")
@arg("--separate", default="", metavar="PARAMS",
     help="comma-separated op parameters (act, se, expansion, kernel) whose values get their own weights "
          "instead of sharing one copy per position and block kind (act,se,expansion ranked worse than "
          "sharing, see BENCHMARKS.md)")
@arg("--init-from", default=None, metavar="CHECKPOINT",
     help="start from this trained supernet's weights (same space and --separate; with --split, every group "
          "starts from the checkpoint's neck and head) instead of a fresh draw: few-shot NAS's fine-tuning")
@arg("--time-budget", type=float, default=None, metavar="SECONDS",
     help="stop after this long (checkpoint saved); run again to continue")
def train(args):
    from evaluators.data import DataConfig
    from evaluators.supernet import train_supernet
    from search_spaces import InputError, get_space

    # --seed is the training seed (paths, batches, init); the data stay the default ones,
    # so that supernets of different seeds are scored on the same images.
    data = DataConfig(source=args.data, n_train=args.n_train, n_val=args.n_val)
    try:
        space = get_space("cpu_detector", num_classes=data.num_classes(), input_size=args.input_size)
    except ValueError as exc:  # the space's own setting checks (e.g. --input-size not a multiple of 32)
        raise InputError(str(exc)) from None
    run = train_supernet(space, data, args.steps, args.batch_size, args.seed, args.out,
                         time_budget_s=args.time_budget, save_every=args.save_every, sampling=args.sampling,
                         split=tuple(comma_list(args.split, "--split", allow_empty=True)),
                         separate=tuple(comma_list(args.separate, "--separate", allow_empty=True)),
                         init_from=args.init_from, lr=args.lr, weight_decay=args.weight_decay)
    params = sum(p.numel() for p in run.supernet.parameters())
    tail = run.losses[-20:]
    loss = f", loss {sum(tail) / len(tail):.3f} (last {len(tail)} steps)" if tail else ""
    state = "done" if run.complete else "stopped early; run the same command again to resume"
    print(f"supernet: {run.step}/{run.steps} steps ({state}), {len(run.supernet.weights)} shared tensors, "
          f"{params / 1e6:.1f}M params, {run.seconds:.0f} s of training{loss}; wrote {run.path}")

