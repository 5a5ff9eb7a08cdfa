"""The finishing passes: a registry of ``name -> PassSpec``, run in the order asked.

A pass receives the model the previous stage left (and that stage is already measured),
the :class:`FinishContext` and its options (a frozen dataclass read from the YAML block
of the pass's name); it records one or more measured stages with
:meth:`FinishContext.record` and returns the model for the next pass. A ``final`` pass
produces no torch model (``int8`` exists only as ONNX) and must come last.

Register more with ``@register_pass("name", options=MyOptions)``.
"""
from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from evaluators.distillation import DEFAULT_TEMPERATURE
from evaluators.trainer import PreparedData, TrainConfig, evaluate, train
from search_spaces import Architecture, SearchSpace
from search_spaces.errors import InputError

from .config import FinishConfig
from .measure import count_model, measure_onnx
from .models import export_stage, load_model, save_model


@dataclass(frozen=True)
class PassSpec:
    name: str
    run: Callable[[nn.Module, "FinishContext", object], nn.Module | None]
    options: type | None = None     # frozen dataclass of the pass's options; None: it has none
    final: bool = False             # produces no torch model; only allowed as the last pass
    help: str = ""


PASSES: dict[str, PassSpec] = {}


def register_pass(name: str, options: type | None = None, final: bool = False):
    """Decorator registering ``fn(model, ctx, options) -> model | None`` as pass ``name``."""

    def decorate(fn):
        if name in PASSES:
            raise ValueError(f"finishing pass {name!r} is already registered")
        PASSES[name] = PassSpec(name, fn, options, final, (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return decorate


def get_pass(name: str) -> PassSpec:
    try:
        return PASSES[name]
    except KeyError:
        raise InputError(f"unknown finishing pass {name!r}; registered: {', '.join(PASSES)}") from None


def check_order(names: list[str]) -> None:
    """Raise ValueError unless ``names`` are known, distinct, non-empty and finals come last."""
    if not names:
        raise ValueError(f"no passes given; choose from {', '.join(PASSES)}")
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise ValueError(f"unknown pass(es) {unknown}; registered: {', '.join(PASSES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a pass is listed twice in {names}")
    for name in names[:-1]:
        if PASSES[name].final:
            raise ValueError(f"pass {name!r} produces no torch model and must be the last one (got {names})")


# ----- the context every pass works in -------------------------------------------------------
CURRENT = object()  # record()'s default parent: the stage the pass received
@dataclass
class FinishContext:
    """Shared state of one finishing run. Single-threaded; passes append to ``rows``."""
    arch: Architecture
    space: SearchSpace
    cfg: FinishConfig
    train_data: PreparedData
    val_data: PreparedData
    out: Path
    class_names: list[str] | None
    input_model: nn.Module                      # the pipeline's input, untouched by passes
    log: Callable[[str], None] = print
    progress: bool = False
    on_change: Callable[[list[dict]], None] = lambda rows: None   # called after every new row
    rows: list[dict] = field(default_factory=list)
    current: dict | None = None                 # the row of the model the next pass receives

    @property
    def input_hw(self) -> tuple[int, int]:
        size = self.space.settings()["input_size"]
        return size, size

    def record(self, stage: str, model: nn.Module | None = None, *, onnx_path: Path | None = None,
               arch: Architecture | None = None, counts_model: nn.Module | None = None, note: str = "",
               current: bool = True, parent=CURRENT) -> dict:
        """Save (``<stage>/weights.pt``, ``<stage>/model.onnx``) and measure a stage; append its row.

        Give ``model`` (saved and exported here) or an existing ``onnx_path`` (then
        ``counts_model`` supplies params and FLOPs). ``current=False`` for side rows (a
        teacher) that the next pass does not continue from. ``parent`` names the stage
        this one was made from (default: the current stage; None: none), for comparisons.
        """
        arch = arch or self.arch
        weights = None
        if model is not None:
            model.eval()
            weights = self.out / stage / "weights.pt"
            fmt = save_model(weights, model, arch, self.space, stage=stage)
            onnx_path = export_stage(model, arch, self.space, self.out / stage / "model.onnx", stage, self.class_names)
            note = note or f"{fmt} checkpoint"
        if onnx_path is None:
            raise ValueError("record() needs a model or an ONNX file")
        if parent is CURRENT:
            parent = self.current["stage"] if self.current else None
        row = {"stage": stage, "parent": parent, **measure_onnx(onnx_path, self.val_data, self.cfg.measure),
               **count_model(counts_model or model, self.input_hw),
               "onnx": str(Path(onnx_path).relative_to(self.out)),
               "weights": str(weights.relative_to(self.out)) if weights else None, "note": note}
        self.rows.append(row)
        if current:
            self.current = row
        self.log(f"[{stage}] mAP@.5 {row['map50']:.3f}  mAP {row['map']:.3f}  " + "  ".join(
            f"{t}t {row[f'latency_ms@{t}t']:.2f} ms" for t in self.cfg.measure.threads) + f"  {row['size_mb']:.2f} MB")
        self.on_change(self.rows)
        return row

    def schedule(self, **changes) -> TrainConfig:
        return replace(self.cfg.train, **changes)


# ----- train -------------------------------------------------------------------------------
@register_pass("train")
def train_pass(model: nn.Module, ctx: FinishContext, options) -> nn.Module:
    """Train longer with the search's trainer (the train: schedule), from the previous stage's weights."""
    model = copy.deepcopy(model)
    result = train(model, ctx.train_data, ctx.cfg.train, progress=ctx.progress)
    ctx.record("train", model, note=f"{result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.3f}")
    return model


# ----- distill -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DistillOptions:
    teacher: str | None = None                  # checkpoint of a trained teacher; None: train teacher_arch first
    teacher_arch: str = "mobilenetv2_like_w1.0"  # reference name, compact string or JSON (file) of the same space
    init: str = "input"                          # student starts from: input (the pipeline's input weights, so
                                                 # train vs distill is one schedule, two losses) | previous (stage)
    steps: int | None = None                     # student steps; None: train.steps
    teacher_steps: int | None = None             # teacher steps (a larger network needs more); None: the student's
    temperature: float = DEFAULT_TEMPERATURE
    # Term weights. Defaults from ablations on bench/finishing.py's setting (300 steps, teacher
    # 0.549 mAP@.5, student alone 0.273): soft classes alone 0.288, + boxes 0.278, + features
    # 0.265. So the box and feature terms are off unless asked for.
    cls_weight: float = 1.0                      # soft class targets (quality-focal KL at temperature T, x T^2)
    box_weight: float = 0.0                      # GIoU to the teacher's boxes, weighted by its objectness^2
    feature_weight: float = 0.0                  # neck feature imitation through 1x1 adapters (MSE)

    def __post_init__(self):
        if self.init not in STUDENT_INIT:
            raise ValueError(f"init must be one of {sorted(STUDENT_INIT)}, got {self.init!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.teacher is not None and not Path(self.teacher).is_file():
            raise ValueError(f"teacher checkpoint {self.teacher!r} not found; give the weights.pt of a trained "
                             f"teacher, or leave teacher unset to train teacher_arch first")
        for name in ("steps", "teacher_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


STUDENT_INIT: dict[str, Callable[[FinishContext, nn.Module], nn.Module]] = {
    "input": lambda ctx, previous: ctx.input_model,
    "previous": lambda ctx, previous: previous,
}


def _teacher(ctx: FinishContext, o: DistillOptions, cfg: TrainConfig) -> nn.Module:
    """The teacher: loaded from ``o.teacher``, or ``o.teacher_arch`` trained with ``cfg``; measured as a row."""
    if o.teacher:
        teacher, arch, space = load_model(o.teacher)
        if space.settings() != ctx.space.settings():
            raise InputError(f"teacher {o.teacher} was built for {space.settings()}, the student for "
                             f"{ctx.space.settings()}; distillation needs the same classes and input size")
        ctx.record("teacher", teacher, arch=arch, note=f"loaded from {o.teacher}", current=False, parent=None)
        return teacher
    from nas.commands.space import resolve_architecture

    arch, space = resolve_architecture(o.teacher_arch, ctx.space.settings())
    if space.name != ctx.space.name:
        raise InputError(f"teacher_arch {o.teacher_arch!r} is an architecture of space {space.name!r}, "
                         f"not of the student's space {ctx.space.name!r}")
    torch.manual_seed(cfg.seed)
    teacher = space.build(arch)
    result = train(teacher, ctx.train_data, cfg, progress=ctx.progress)
    ctx.record("teacher", teacher, arch=arch, current=False, parent=None,
               note=f"{o.teacher_arch}, {result.steps} steps in {result.seconds:.0f} s")
    return teacher


@register_pass("distill", options=DistillOptions)
def distill_pass(model: nn.Module, ctx: FinishContext, o: DistillOptions) -> nn.Module:
    """Distil from a larger teacher: soft classes; objectness-weighted boxes and neck features when weighted."""
    from .distill import DistillLoss, DistillStudent, make_adapters, neck_widths

    cfg = ctx.schedule(steps=o.steps or ctx.cfg.train.steps)
    teacher = _teacher(ctx, o, ctx.schedule(steps=o.teacher_steps) if o.teacher_steps else cfg)
    student = copy.deepcopy(STUDENT_INIT[o.init](ctx, model))
    wrapper = DistillStudent(student, make_adapters(neck_widths(student), neck_widths(teacher)))
    loss = DistillLoss(teacher, o.temperature, o.cls_weight, o.box_weight, o.feature_weight)
    result = train(wrapper, ctx.train_data, cfg, progress=ctx.progress, loss_fn=loss)
    parent = "input" if o.init == "input" else ctx.current["stage"]
    ctx.record("distill", student, parent=parent, note=f"from {o.init}, T={o.temperature}, {result.steps} steps in "
                                        f"{result.seconds:.0f} s, final loss {result.final_loss:.3f}")
    return student


# ----- prune -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PruneOptions:
    ratio: float = 0.5                  # fraction of each internal channel group KEPT
    criterion: str = "l1"               # l1 (conv filter L1 norm) | bn (|BN scale|)
    round_to: int = 8                   # kept channels rounded up to a multiple (SIMD width)
    finetune_steps: int | None = None   # None: half of train.steps; 0: no fine-tuning
    finetune_lr: float | None = None    # None: train.lr / 4 (a trained network needs a gentle restart)

    def __post_init__(self):
        from .prune import IMPORTANCE

        if not 0 < self.ratio <= 1:
            raise ValueError(f"ratio (fraction of channels kept) must be in (0, 1], got {self.ratio}")
        if self.criterion not in IMPORTANCE:
            raise ValueError(f"criterion must be one of {sorted(IMPORTANCE)}, got {self.criterion!r}")
        if self.round_to < 1:
            raise ValueError(f"round_to must be >= 1, got {self.round_to}")
        if self.finetune_steps is not None and self.finetune_steps < 0:
            raise ValueError(f"finetune_steps must be >= 0, got {self.finetune_steps}")


@register_pass("prune", options=PruneOptions)
def prune_pass(model: nn.Module, ctx: FinishContext, o: PruneOptions) -> nn.Module:
    """Structured pruning of blocks' internal channels, then fine-tuning."""
    from .prune import prune_channels

    model = copy.deepcopy(model)
    report = prune_channels(model, o.ratio, o.criterion, o.round_to)
    note = report.summary()
    steps = ctx.cfg.train.steps // 2 if o.finetune_steps is None else o.finetune_steps
    if steps:
        before = evaluate(model, ctx.val_data)  # torch; shows what fine-tuning recovers
        cfg = ctx.schedule(steps=steps, lr=o.finetune_lr or ctx.cfg.train.lr / 4,
                           warmup_steps=min(ctx.cfg.train.warmup_steps, max(1, steps // 10)))
        result = train(model, ctx.train_data, cfg, progress=ctx.progress)
        note += f"; mAP@.5 {before['map50']:.3f} before {result.steps} fine-tuning steps"
    ctx.record("prune", model, note=note)
    return model


# ----- int8 --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Int8Options:
    calibration_images: int = 64                 # first N training images
    methods: tuple[str, ...] = ("minmax", "entropy", "percentile")   # all measured, the best kept
    select_by: str = "map50"                     # metric that picks the kept model (ties: faster at 1 thread)
    per_channel: bool = True                     # per-output-channel weight scales
    op_types: tuple[str, ...] | None = None      # op types to quantise; None: all onnxruntime supports
    exclude_decode: bool = True                  # keep sigmoid/softplus/box arithmetic in float

    def __post_init__(self):
        from .quantize import CALIBRATION_METHODS

        bad = [m for m in self.methods if m not in CALIBRATION_METHODS]
        if not self.methods or bad:
            raise ValueError(f"methods must be a non-empty list of {sorted(CALIBRATION_METHODS)}, got {list(self.methods)}")
        if self.calibration_images < 1:
            raise ValueError(f"calibration_images must be >= 1, got {self.calibration_images}")
        if self.select_by not in ("map50", "map"):
            raise ValueError(f"select_by must be map50 or map, got {self.select_by!r}")


@register_pass("int8", options=Int8Options, final=True)
def int8_pass(model: nn.Module, ctx: FinishContext, o: Int8Options) -> None:
    """Static int8 quantisation (QDQ, per-channel) of the previous stage's ONNX; calibration methods compared."""
    from .quantize import QuantSettings, preprocess, quantize

    source = ctx.current
    folder = ctx.out / "int8"
    folder.mkdir(parents=True, exist_ok=True)
    pre = preprocess(ctx.out / source["onnx"], folder / "preprocessed.onnx")
    calibration = ctx.train_data.images[:o.calibration_images]
    settings = QuantSettings(o.per_channel, o.op_types, o.exclude_decode)
    rows = []
    try:
        for method in o.methods:
            path = quantize(pre, folder / f"model_{method}.onnx", calibration, method, settings,
                            metadata={"nas.stage": f"int8-{method}"})
            rows.append(ctx.record(f"int8-{method}", onnx_path=path, counts_model=model, current=False,
                                   note=f"from {source['stage']}, {method} on {len(calibration)} images"))
    finally:
        pre.unlink(missing_ok=True)
    first = ctx.cfg.measure.threads[0]
    best = max(rows, key=lambda r: (r[o.select_by], -r[f"latency_ms@{first}t"]))
    shutil.copyfile(ctx.out / best["onnx"], folder / "model.onnx")
    best["note"] += f"; best by {o.select_by}, kept as int8/model.onnx"
    ctx.current = best
    ctx.on_change(ctx.rows)
    return None
