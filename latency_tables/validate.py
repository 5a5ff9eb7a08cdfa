"""Check a table's predictions against whole networks measured end to end."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from search_spaces import Architecture, SearchSpace

from .predictor import LatencyTable
from .profiler import measure_architectures


@dataclass(frozen=True)
class Accuracy:
    mape: float
    within10: float
    within5: float
    spearman: float
    kendall: float

    def row(self, name: str) -> str:
        return (f"{name:<22} MAPE {self.mape * 100:6.2f}%  within±10% {self.within10 * 100:5.1f}%  "
                f"within±5% {self.within5 * 100:5.1f}%  Spearman {self.spearman:.3f}  Kendall {self.kendall:.3f}")


def accuracy(predicted: np.ndarray, measured: np.ndarray) -> Accuracy:
    from scipy.stats import kendalltau, spearmanr

    rel = np.abs(predicted - measured) / measured
    return Accuracy(float(rel.mean()), float((rel <= 0.10).mean()), float((rel <= 0.05).mean()),
                    float(spearmanr(predicted, measured)[0]), float(kendalltau(predicted, measured)[0]))


def proportional(feature: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Baseline: latency proportional to a feature, scaled by the median ratio (fitted on
    the validation set itself, which flatters the baseline)."""
    return feature * float(np.median(measured / feature))


def validation_architectures(space: SearchSpace, n: int, seed: int) -> list[Architecture]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def validate(table: LatencyTable, n: int, seed: int, progress: bool = True) -> dict:
    """Measure ``n`` sampled networks; return accuracies of the table and the baselines."""
    from search_spaces.stats import count_flops, count_params

    space = table.space
    archs = validation_architectures(space, n, seed)
    measured = measure_architectures(space, archs, table.threads, progress)
    hw = (space.settings()["input_size"],) * 2
    models = [space.build(a) for a in archs]
    flops = np.array([count_flops(m, hw) for m in models], dtype=float)
    params = np.array([count_params(m) for m in models], dtype=float)
    results = {"table": accuracy(table.predict_many(archs), measured),
               "table (plain op sum)": accuracy(np.array([table.raw_sum(a) for a in archs]), measured),
               "FLOPs-proportional": accuracy(proportional(flops, measured), measured),
               "params-proportional": accuracy(proportional(params, measured), measured)}
    return {"results": results, "measured_ms": measured.tolist(), "archs": archs}
