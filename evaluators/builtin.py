"""Built-in evaluators: table latency, params/FLOPs, measured latency, short training."""
from __future__ import annotations

import math

import torch

from search_spaces import Architecture, SearchSpace
from search_spaces.errors import InputError

from .base import Evaluator, register_evaluator
from .data import DataConfig
from .trainer import TrainConfig, evaluate, train


def check_classes(data_classes: int, space: SearchSpace) -> None:
    """The head must predict exactly the dataset's classes."""
    space_classes = space.settings().get("num_classes")
    if space_classes is not None and space_classes != data_classes:
        raise InputError(f"the dataset has {data_classes} classes but space {space.name!r} is set to "
                         f"num_classes={space_classes}; set space.settings.num_classes: {data_classes}")


@register_evaluator("latency_table")
class TableLatency(Evaluator):
    """``latency_ms`` predicted by the lookup table (the committed one by default).

    ``rescale: true`` re-times a few of the table's calibration networks when the table
    is loaded (about 10 s) and scales every prediction by how much slower (> 1) they time
    now than during the build; the factor is returned as ``latency_scale``.
    """

    cost = "table"

    def __init__(self, threads: int = 1, table: str | None = None, rescale: bool = False):
        self.threads, self.path, self.rescale = threads, table, rescale
        self._table = None

    def __call__(self, arch: Architecture, space: SearchSpace):
        from latency_tables.predictor import LatencyTable

        if self._table is None or self._table.space.settings() != space.settings():
            self._table = (LatencyTable.load(self.path, space, self.threads) if self.path
                           else LatencyTable.default(space, self.threads))
            if self.rescale:
                from latency_tables.validate import machine_drift

                self._table.scale = machine_drift(self._table).factor
        out = {"latency_ms": self._table.predict(arch)}
        return {**out, "latency_scale": self._table.scale} if self.rescale else out


@register_evaluator("params_flops")
class ParamsFlops(Evaluator):
    """``params`` and ``flops`` (torch's FLOP counter, batch 1, the space's input size)."""

    cost = "table"

    def __call__(self, arch, space):
        from search_spaces.stats import count_flops, count_params

        model = space.build(arch)
        size = space.settings()["input_size"]
        return {"params": float(count_params(model)), "flops": float(count_flops(model, (size, size)))}


@register_evaluator("measured_latency")
class MeasuredLatency(Evaluator):
    """``measured_latency_ms``: the whole network under onnxruntime, fixed threads, timed
    against the yardstick network in this machine's reference milliseconds (the unit of
    the committed table measured here: ``latency_tables.runtime.reference_ms``), so it
    compares with ``latency_ms`` from the table."""

    cost = "measure"

    def __init__(self, threads: int = 1):
        self.threads = threads

    def __call__(self, arch, space):
        from latency_tables.profiler import measure_model

        return {"measured_latency_ms": measure_model(space, arch, self.threads).ms}


@register_evaluator("train_proxy")
class TrainProxy(Evaluator):
    """Short training from scratch, then mAP on the validation split.

    Returns ``map``, ``map50``, ``train_loss`` (the mean loss of the last 10 steps),
    ``loss_score`` and ``train_seconds``. ``loss_score`` is ``exp(-train_loss)``: in (0,
    1], bigger when the network trained faster, so it can stand as an objective's
    ``accuracy`` (which must be >= 0 and maximised). Only its order has been measured: on
    one sample of 32 networks (128 px), the loss of 50-100 training steps ranked them by
    their 400-step mAP about as well as those steps' own mAP, slightly better by Spearman
    (BENCHMARKS.md, "Short training as the proxy: its loss"). Its scale is not mAP's, so
    the ``soft`` and ``pareto`` objectives, which weigh accuracy against latency, trade
    differently with it; ``accuracy`` and ``constrained`` use only its order.
    """

    cost = "train"

    def __init__(self, data: dict | None = None, steps: int = 120, batch_size: int = 16, lr: float = 4e-3,
                 time_budget_s: float | None = None, seed: int = 0, threads: int | None = None):
        self.data = DataConfig(**(data or {}))
        self.cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, time_budget_s=time_budget_s, seed=seed)
        self.threads = threads

    def __call__(self, arch, space):
        if self.threads:
            torch.set_num_threads(self.threads)
        train_data, val_data = self.data.load(space.settings()["input_size"])
        check_classes(train_data.num_classes, space)
        torch.manual_seed(self.cfg.seed)
        model = space.build(arch)
        result = train(model, train_data, self.cfg)
        metrics = evaluate(model, val_data)
        self.last_model = model  # the engine saves the best candidate's weights from here
        return {**metrics, "train_loss": result.final_loss, "loss_score": math.exp(-result.final_loss),
                "train_seconds": result.seconds, "train_steps": float(result.steps)}
