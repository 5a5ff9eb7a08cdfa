"""``nas space ...`` and ``nas export``."""
from __future__ import annotations

import json
import random
import sys

from nas.cli import arg, command


def _space_settings(args) -> dict:
    settings = {}
    if getattr(args, "num_classes", None) is not None:
        settings["num_classes"] = args.num_classes
    if getattr(args, "input_size", None) is not None:
        settings["input_size"] = args.input_size
    return settings


SETTINGS_ARGS = [
    arg("--num-classes", type=int, default=None, help="number of classes (default: the space's)"),
    arg("--input-size", type=int, default=None, help="square input size in pixels (default: the space's)"),
]


def with_settings(fn):
    for decorate in reversed(SETTINGS_ARGS):
        fn = decorate(fn)
    return fn


@command("space list", help="list registered search spaces (built-in and plugins)")
def space_list(args):
    from search_spaces import get_space_class, list_spaces

    for name in list_spaces():
        cls = get_space_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name}\t{cls.__module__}\t{doc}")


@command("space sample", help="print N random architectures as JSON lines")
@arg("--space", default="cpu_detector")
@arg("--n", type=int, default=1)
@arg("--seed", type=int, default=0)
@arg("--references", action="store_true", help="print the space's reference architectures instead")
def space_sample(args):
    from search_spaces import get_space

    space = get_space(args.space)
    if args.references:
        for name, arch in space.reference_architectures().items():
            print(json.dumps({"name": name, **arch.to_dict()}, sort_keys=True))
        return
    rng = random.Random(args.seed)
    for _ in range(args.n):
        print(space.sample(rng).to_json())


@command("space show", help="show an architecture: its blocks, params and FLOPs")
@arg("arch", help="architecture JSON file, JSON string, compact string or reference name")
@with_settings
def space_show(args):
    from search_spaces.stats import count_flops, count_params

    arch, space = resolve_architecture(args.arch, _space_settings(args))
    print(f"architecture  {arch.id}  ({space.name}, {json.dumps(space.settings())})")
    print(f"compact       {space.to_string(arch)}")
    try:
        ops = space.ops(arch)
    except NotImplementedError:
        return
    print(f"\n{'role':<14} {'op':<13} {'input':<16} params")
    for spec in ops:
        shape = "x".join(map(str, spec.input_shapes[0][1:]))
        params = " ".join(f"{k}={v}" for k, v in spec.params)
        print(f"{spec.role:<14} {spec.kind:<13} {shape:<16} {params}")
    model = space.build(arch)
    hw = (space.settings()["input_size"],) * 2
    flops = count_flops(model, hw)
    print(f"\nparams {count_params(model) / 1e6:.3f} M   FLOPs {flops / 1e9:.3f} G "
          f"({flops / 2e9:.3f} G multiply-adds) at {hw[0]}x{hw[1]}, {len(ops)} ops")


def resolve_architecture(text: str, settings: dict | None = None):
    """(arch, space) from a file, JSON, compact string or a reference name of the default space."""
    from search_spaces import get_space, parse_architecture
    from search_spaces.registry import list_spaces

    settings = settings or {}
    default = get_space("cpu_detector", **settings)
    refs = default.reference_architectures()
    if text in refs:
        return refs[text], default
    arch = parse_architecture(text, **settings) if not text.startswith("cpu_detector") else default.from_string(text)
    space = default if arch.space == default.name else get_space(arch.space, **({} if arch.space not in list_spaces() else settings))
    return arch, space


@command("export", help="export an architecture (optionally with trained weights) to ONNX")
@arg("arch", nargs="?", help="architecture (file, JSON, compact string, reference name); omit with --weights")
@arg("--out", required=True, help="output .onnx path")
@arg("--weights", default=None, help="checkpoint written by training (its architecture is used)")
@arg("--check", action="store_true", help="run the exported model in onnxruntime and compare with torch")
@with_settings
def export(args):
    import numpy as np
    import torch

    from latency_tables.runtime import ort_session
    from nas.cli import UsageError
    from nas.export import export_onnx, model_from_checkpoint

    if args.weights:
        model, arch, space = model_from_checkpoint(args.weights)
        if args.arch:
            given, _ = resolve_architecture(args.arch, space.settings())
            if space.canonicalize(given) != space.canonicalize(arch):
                raise UsageError(f"--weights {args.weights} holds architecture {arch.id}, not the one given ({given.id})")
    elif args.arch:
        arch, space = resolve_architecture(args.arch, _space_settings(args))
        torch.manual_seed(0)
        model = space.build(arch).eval()
    else:
        raise UsageError("give an architecture or --weights CHECKPOINT")
    data = export_onnx(model, arch, space, args.out)
    print(f"wrote {args.out} ({len(data) / 1e6:.2f} MB), architecture {arch.id}")
    if args.check:
        size = space.settings()["input_size"]
        x = torch.rand(1, 3, size, size)
        with torch.no_grad():
            ref = [t.numpy() for t in model(x)]
        got = ort_session(data).run(None, {"images": x.numpy()})
        err = max(float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max()))) for a, b in zip(ref, got))
        print(f"onnxruntime vs torch: max relative difference {err:.2e}")
        if err > 1e-4:
            print("nas: error: exported model differs from torch by more than 1e-4", file=sys.stderr)
            return 1
