"""Check a table's predictions against whole networks measured end to end."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from search_spaces import Architecture, SearchSpace

from .predictor import LatencyTable
from .profiler import measure_architectures
from .table import TableError


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


@dataclass(frozen=True)
class Drift:
    factor: float            # median of now / at build over the re-timed networks
    ratios: list[float]

    def line(self) -> str:
        lo, hi = min(self.ratios), max(self.ratios)
        return (f"machine speed vs the table's build: x{self.factor:.3f} latency now "
                f"({len(self.ratios)} calibration networks re-timed, ratios {lo:.2f}-{hi:.2f})")


def machine_drift(table: LatencyTable, n: int = 8, progress: bool = False) -> Drift:
    """Re-time ``n`` of the whole networks the table's calibration measured at build time
    (spread over their latency range) and compare. Timing against the yardstick already
    cancels a machine that runs uniformly faster or slower; what is left is a change in
    relative speeds since the build (another runtime build, other neighbours), which one
    factor (``table.scale = drift.factor``) corrects on average without a rebuild."""
    cal = (table.table.calibration or {}).get("measured_ms") or {}
    if not cal:
        raise TableError(f"table {table.table.path} has no calibration networks to re-time; rebuild it with "
                         "--calibration-models > 0, or leave out --rescale / rescale: true")
    items = sorted(cal.items(), key=lambda kv: kv[1])
    picks = [items[round(i * (len(items) - 1) / max(1, n - 1))] for i in range(min(n, len(items)))]
    archs = [Architecture.from_json(a) for a, _ in picks]
    now = measure_architectures(table.space, archs, table.threads, progress, unit_ms=table.unit_ms)
    ratios = [float(m / then) for m, (_, then) in zip(now, picks)]
    return Drift(float(np.median(ratios)), ratios)


def validation_architectures(space: SearchSpace, n: int, seed: int) -> list[Architecture]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def validate(table: LatencyTable, n: int, seed: int, progress: bool = True) -> dict:
    """Measure ``n`` sampled networks; return accuracies of the table and the baselines."""
    from search_spaces.stats import count_flops, count_params

    space = table.space
    archs = validation_architectures(space, n, seed)
    measured = measure_architectures(space, archs, table.threads, progress, unit_ms=table.unit_ms)
    hw = (space.settings()["input_size"],) * 2
    models = [space.build(a) for a in archs]
    flops = np.array([count_flops(m, hw) for m in models], dtype=float)
    params = np.array([count_params(m) for m in models], dtype=float)
    results = {"table": accuracy(table.predict_many(archs), measured),
               "table (plain op sum)": accuracy(np.array([table.raw_sum(a) for a in archs]), measured),
               "FLOPs-proportional": accuracy(proportional(flops, measured), measured),
               "params-proportional": accuracy(proportional(params, measured), measured)}
    return {"results": results, "measured_ms": measured.tolist(), "archs": archs}
