"""A small search space with known optima, for testing strategies without torch.

Six decisions of two to five int/str/bool/float choices (540 distinct networks once
canonicalised; ``se_ratio`` only matters when ``se`` is on). :func:`toy_metrics` gives a
deterministic, smooth ``map50`` and ``latency_ms`` in tension: capacity (width x depth)
and bigger kernels raise both, so a latency target has a non-trivial optimum.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

from search_spaces.architecture import Architecture
from search_spaces.base import SearchSpace
from search_spaces.registry import register_space

_ACT_ACC = {"relu": 0.0, "hswish": 0.02, "silu": 0.03}
_ACT_MS = {"relu": 0.0, "hswish": 0.5, "silu": 1.0}
_KERNEL_ACC = {3: 0.0, 5: 0.04, 7: 0.03}


@register_space("toy")
class ToySpace(SearchSpace):
    """Toy space: ``width``, ``depth``, ``kernel``, ``act``, ``se``, ``se_ratio``."""

    def decisions(self) -> dict[str, list[Any]]:
        return {
            "width": [16, 24, 32, 48, 64],
            "depth": [1, 2, 3, 4],
            "kernel": [3, 5, 7],
            "act": ["relu", "hswish", "silu"],
            "se": [False, True],
            "se_ratio": [0.25, 0.5],
        }

    def active_decisions(self, arch: Architecture) -> list[str]:
        names = list(self.decisions())
        return names if arch.sample.get("se") is True else [n for n in names if n != "se_ratio"]

    def all_architectures(self) -> list[Architecture]:
        """Every distinct canonical architecture (the space is small enough to list)."""
        decisions = self.decisions()
        seen: dict[str, Architecture] = {}
        for values in itertools.product(*decisions.values()):
            arch = self.from_sample(dict(zip(decisions, values)))
            seen.setdefault(arch.id, arch)
        return list(seen.values())


def toy_metrics(arch: Architecture) -> dict[str, float]:
    """Deterministic ``{"map50": ..., "latency_ms": ...}`` of a toy architecture."""
    s = arch.sample
    capacity = (s["width"] / 64) * (s["depth"] / 4)  # 1/16 .. 1
    se_on = s["se"] is True
    acc = (0.30 + 0.45 * math.sqrt(capacity) + _KERNEL_ACC[s["kernel"]] + _ACT_ACC[s["act"]]
           + (0.02 + (0.01 if s["se_ratio"] == 0.25 else 0.0) if se_on else 0.0))
    latency = (2.0 + 20.0 * capacity * (s["kernel"] / 3) + _ACT_MS[s["act"]]
               + ((1.0 + (1.0 if s["se_ratio"] == 0.5 else 0.0)) if se_on else 0.0))
    return {"map50": round(acc, 6), "latency_ms": round(latency, 6)}
