"""Fake evaluators over the toy space, for engine and runner tests (no torch, instant).

Import this module (config field ``imports: [nas.testing.fake_evaluators]``) to
register ``toy_latency`` (cost table) and ``toy_accuracy`` (cost train). The latter can
kill its own worker process for chosen widths, to test how runners survive dead workers,
and take ``sleep_s`` per call, to test time budgets.
"""
from __future__ import annotations

import os
import time

from evaluators.base import Evaluator, register_evaluator

from .toy_space import toy_metrics


@register_evaluator("toy_latency")
class ToyLatency(Evaluator):
    cost = "table"

    def __call__(self, arch, space):
        return {"latency_ms": toy_metrics(arch)["latency_ms"]}


@register_evaluator("toy_accuracy")
class ToyAccuracy(Evaluator):
    cost = "train"

    def __init__(self, die_on_width: int | None = None, sleep_s: float = 0.0):
        self.die_on_width, self.sleep_s = die_on_width, sleep_s

    def __call__(self, arch, space):
        time.sleep(self.sleep_s)
        if self.die_on_width is not None and arch.sample["width"] == self.die_on_width:
            os._exit(3)  # the worker process dies, as on an OOM kill
        return {"map50": toy_metrics(arch)["map50"]}
