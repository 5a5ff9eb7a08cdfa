"""The finishing configuration: a small YAML, frozen dataclasses, unknown fields are errors.

::

    space: {num_classes: 6, input_size: 256}   # only for an ARCH source; a run brings its own
    data:  {source: synthetic, n_train: 512, n_val: 128}         # evaluators.data.DataConfig
    train: {steps: 1200, batch_size: 16, lr: 0.004}              # evaluators.trainer.TrainConfig;
                                                                 # also the ``train`` pass's schedule
    measure: {threads: [1, 2]}                                   # MeasureOptions
    distill: {teacher_arch: mobilenetv2_like_w1.0, temperature: 2.0}   # one block per pass that
    prune: {ratio: 0.5, criterion: l1}                                 # declares options
    int8: {calibration_images: 64, methods: [minmax, entropy, percentile]}

Layering of values (later wins): built-in defaults, then what a run folder implies (its
space settings, the ``train_proxy`` data options and a schedule 4x the proxy's, at least
1,200 steps), then the file, then CLI flags.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from evaluators.data import DataConfig
from evaluators.trainer import TrainConfig
from nas.config import ConfigError, build_dataclass

DEFAULT_PASSES = ("train", "distill", "prune", "int8")
# Finishing trains much longer than a search's proxy.
DEFAULT_TRAIN = TrainConfig(steps=1200)
# From a run folder, the ``train`` pass runs this many times the search's proxy steps, and
# never fewer than DEFAULT_TRAIN's: the proxy's budget is chosen for ranking, not accuracy.
PROXY_SCHEDULE_FACTOR = 4


@dataclass(frozen=True)
class MeasureOptions:
    """How every stage's ONNX file is measured."""
    threads: tuple[int, ...] = (1, 2)   # onnxruntime intra-op threads, one latency column each
    warmup: int = 10                    # untimed runs first (allocations, caches)
    min_runs: int = 50                  # timed runs: at least this many ...
    min_seconds: float = 1.0            # ... and at least this long, in alternation with the yardstick
                                        # network; their 20th percentile in reference ms is reported
                                        # (latency_tables.runtime.time_interleaved)
    eval_threads: int = 1               # threads of the session that computes mAP (not timed)
    retime_windows: int = 5             # at the end all stages are timed again together in this many
                                        # interleaved windows of min_seconds / 3 each (0: keep the
                                        # per-stage timings)

    def __post_init__(self):
        if not self.threads or any(int(t) < 1 for t in self.threads):
            raise ValueError(f"threads must be a non-empty list of positive integers, got {self.threads!r}")
        if self.retime_windows < 0:
            raise ValueError(f"retime_windows must be >= 0, got {self.retime_windows}")
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))


@dataclass(frozen=True)
class FinishConfig:
    passes: tuple[str, ...] = DEFAULT_PASSES
    space: dict = field(default_factory=dict)           # space settings (num_classes, input_size)
    data: DataConfig = DataConfig()
    train: TrainConfig = DEFAULT_TRAIN
    measure: MeasureOptions = MeasureOptions()
    pass_options: dict = field(default_factory=dict)     # pass name -> its options dataclass instance

    def options(self, pass_name: str):
        """The options of ``pass_name`` (its dataclass defaults when the file has no block)."""
        from .passes import get_pass

        spec = get_pass(pass_name)
        if spec.options is None:
            return None
        return self.pass_options.get(pass_name) or spec.options()

    def to_dict(self) -> dict:
        return {"passes": list(self.passes), "space": dict(self.space), "data": dataclasses.asdict(self.data),
                "train": dataclasses.asdict(self.train), "measure": dataclasses.asdict(self.measure),
                **{name: dataclasses.asdict(self.options(name)) for name in self.passes if self.options(name) is not None}}


_build = build_dataclass


def parse_passes(value, where: str = "passes") -> tuple[str, ...]:
    """``"train,prune"`` or a list -> validated tuple of registered pass names, in order."""
    from .passes import check_order

    names = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value or [])
    names = [n for n in names if n]
    try:
        check_order(names)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return tuple(names)


def finish_config(data: dict | None, base: FinishConfig = FinishConfig(), where: str = "finish config") -> FinishConfig:
    """Overlay a parsed YAML mapping on ``base``."""
    from .passes import PASSES

    data = dict(data or {})
    fixed = {"passes", "space", "data", "train", "measure"}
    option_blocks = {name for name, spec in PASSES.items() if spec.options is not None}
    unknown = sorted(set(data) - fixed - option_blocks)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(fixed | option_blocks)}")
    cfg = base
    if "passes" in data:
        cfg = dataclasses.replace(cfg, passes=parse_passes(data["passes"], f"{where}: field 'passes'"))
    if "space" in data:
        if not isinstance(data["space"], dict):
            raise ConfigError(f"{where}: field 'space' must be a mapping of space settings")
        cfg = dataclasses.replace(cfg, space={**cfg.space, **data["space"]})
    for key, cls in (("data", DataConfig), ("train", TrainConfig), ("measure", MeasureOptions)):
        if key in data:
            cfg = dataclasses.replace(cfg, **{key: _build(cls, data[key], f"{where}: field '{key}'", getattr(cfg, key))})
    options = dict(cfg.pass_options)
    for name in option_blocks & set(data):
        cls = PASSES[name].options
        options[name] = _build(cls, data[name], f"{where}: field '{name}'", options.get(name) or cls())
    return dataclasses.replace(cfg, pass_options=options)


def load_finish_config(path: str | Path | None, base: FinishConfig = FinishConfig()) -> FinishConfig:
    """Read a finishing YAML on top of ``base`` (``path`` None: ``base`` itself)."""
    from nas.config import read_yaml

    if path is None:
        return base
    return finish_config(read_yaml(path), base, str(path))
