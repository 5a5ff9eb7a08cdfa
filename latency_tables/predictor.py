"""Latency prediction from a table: per-op latencies (each timed against the yardstick
network, see ``runtime``) summed, then a calibration fitted on whole networks measured
end to end the same way.

Why a calibration: an op timed as its own ONNX model pays one ``session.run`` call
overhead and sees its inputs in the default layout, while inside a network onnxruntime
fuses across op borders and keeps blocked layouts between ops. The per-op sum is
therefore biased by op kind and by the number of ops. The correction is linear:

    latency ~= sum_k coef_k * (sum of table ms over ops of kind k) + coef_n * n_ops + coef_0

fitted by non-negative least squares on relative error over a calibration set of whole
networks measured on the same machine (see ``profiler.calibrate``). BENCHMARKS.md holds
the numbers that justify it against the plain sum.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from search_spaces import Architecture, OpSpec, SearchSpace, get_space

from .fingerprint import machine_tag, mismatches
from .runtime import TABLES_DIR, table_header
from .table import MissingOpError, TableData, build_command



class FingerprintMismatchWarning(UserWarning):
    """The table was measured on another machine: predictions may not hold here."""


_warned: set[str] = set()


def table_stem(space: SearchSpace, threads: int) -> str:
    """File name (without ``.json``) shared by every committed table of these settings."""
    s = dict(space.settings())
    size, classes = s.pop("input_size", None), s.pop("num_classes", None)
    extra = "".join(f"_{k}-{v}" for k, v in sorted(s.items()))  # any other setting, e.g. _fixed_act-relu
    return f"{space.name}_{size}px_{classes}cls{extra}_{threads}t"


def default_table_path(space: SearchSpace, threads: int) -> Path:
    """The committed table for these settings and this machine.

    Several machines can each have their table: ``<stem>.json`` and ``<stem>.<machine
    tag>.json`` (``fingerprint.machine_tag``). The first whose fingerprint matches this
    machine is returned, else ``<stem>.json`` (loading it warns that it was measured
    elsewhere)."""
    stem = table_stem(space, threads)
    base = TABLES_DIR / f"{stem}.json"
    for path in [base, *sorted(TABLES_DIR.glob(f"{stem}.*.json"))]:
        if path.exists() and not mismatches(table_header(path).get("fingerprint", {}), threads):
            return path
    return base


def build_table_path(space: SearchSpace, threads: int) -> Path:
    """Where ``nas latency build`` writes by default: this machine's committed table if
    there is one, else ``<stem>.json`` when that is free, else ``<stem>.<machine tag>.json``
    (so another machine's table is never overwritten)."""
    found = default_table_path(space, threads)
    if not found.exists() or not mismatches(table_header(found).get("fingerprint", {}), threads):
        return found
    return TABLES_DIR / f"{table_stem(space, threads)}.{machine_tag()}.json"


def kinds_of(table: TableData) -> list[str]:
    return sorted({entry["kind"] for entry in table.ops.values()})


def op_features(ops_ms: list[tuple[str, float]], kinds: list[str]) -> np.ndarray:
    """[sum ms per kind..., n_ops, 1] for one network's (kind, ms) list."""
    f = np.zeros(len(kinds) + 2)
    index = {k: i for i, k in enumerate(kinds)}
    for kind, ms in ops_ms:
        f[index[kind]] += ms
    f[-2] = len(ops_ms)
    f[-1] = 1.0
    return f


def fit_calibration(table: TableData, space: SearchSpace, measured: dict[str, float]) -> dict:
    """NNLS fit of the correction on relative error; returns the calibration fields."""
    from scipy.optimize import nnls

    predictor = LatencyTable(table, space, calibrated=False)
    kinds = kinds_of(table)
    rows, ys = [], []
    for arch_json, ms in measured.items():
        rows.append(predictor.features(Architecture.from_json(arch_json), kinds))
        ys.append(ms)
    a, y = np.array(rows), np.array(ys)
    coef, _ = nnls(a / y[:, None], np.ones(len(y)))
    fitted = a @ coef
    raw = a[:, :-2].sum(1)
    return {"features": kinds + ["n_ops", "intercept"], "coef": [float(c) for c in coef],
            "n_models": len(y), "fit_mape": float(np.mean(np.abs(fitted - y) / y)),
            "raw_sum_mape": float(np.mean(np.abs(raw - y) / y))}


class LatencyTable:
    """Predicts a network's latency (ms) on the table's machine and thread count.

    ``predict(arch)`` walks ``space.op_groups(arch)`` and caches each group's
    contribution, so after warm-up a prediction is a few dict look-ups per group. A missing op raises :class:`MissingOpError` naming the op
    key and the command that measures it; there is never a made-up value.
    """

    def __init__(self, table: TableData, space: SearchSpace | None = None, calibrated: bool = True):
        self.table = table
        self.space = space or get_space(table.header["space"], **table.header.get("settings", {}))
        if self.space.settings() != table.header.get("settings"):
            raise ValueError(f"table {table.path} is for {table.header.get('settings')}, space is {self.space.settings()}")
        cal = table.calibration if calibrated else None
        self.calibrated = bool(cal and "coef" in cal)
        self._coef = np.array(cal["coef"]) if self.calibrated else None
        self._kinds = cal["features"][:-2] if self.calibrated else kinds_of(table)
        self._ms = {key: entry["ms"] for key, entry in table.ops.items()}
        self._group_cache: dict = {}
        # Speed factor, 1.0 as built; set from machine_drift() when whole networks on this
        # machine no longer time as they did during the build.
        self.scale = 1.0

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace | None = None, threads: int | None = None) -> "LatencyTable":
        table = TableData.load(path)
        diff = mismatches(table.header.get("fingerprint", {}), threads)
        if diff and str(path) not in _warned:
            _warned.add(str(path))
            warnings.warn(f"latency table {path} was not measured on this machine ({'; '.join(diff)}); "
                          f"build one here with: {build_command(table.header)}", FingerprintMismatchWarning, stacklevel=2)
        return cls(table, space)

    @classmethod
    def default(cls, space: SearchSpace, threads: int = 1) -> "LatencyTable":
        """The committed table for this space's settings and thread count."""
        return cls.load(default_table_path(space, threads), space, threads)

    @property
    def coef(self) -> list[float]:
        """Calibration coefficients over ``feature_kinds + [n_ops, intercept]``."""
        if not self.calibrated:
            return [1.0] * len(self._kinds) + [0.0, 0.0]  # the plain sum, in the same linear form
        return [float(c) for c in self._coef]

    @property
    def feature_kinds(self) -> list[str]:
        return list(self._kinds)

    @property
    def unit_ms(self) -> float:
        """Milliseconds per yardstick in this table (``runtime.time_interleaved``): measure
        whole networks in this unit to compare them with its predictions."""
        return self.table.unit_ms

    @property
    def threads(self) -> int:
        return int(self.table.header.get("fingerprint", {}).get("threads", 1))

    def op_ms(self, spec: OpSpec) -> float:
        try:
            return self._ms[spec.key]
        except KeyError:
            raise MissingOpError(
                f"op '{spec.key}' (at {spec.role}) is not in latency table {self.table.path}; measure the missing ops with: "
                f"{build_command(self.table.header, self.table.path)} (it resumes and measures only what is missing)") from None

    def ops_ms(self, arch: Architecture) -> list[tuple[str, float]]:
        return [(spec.kind, self.op_ms(spec)) for spec in self.space.ops(arch)]

    def features(self, arch: Architecture, kinds: list[str] | None = None) -> np.ndarray:
        return op_features(self.ops_ms(arch), kinds or self._kinds)

    def raw_sum(self, arch: Architecture) -> float:
        return float(sum(ms for _, ms in self.ops_ms(arch))) * self.scale

    def predict(self, arch: Architecture) -> float:
        """Predicted latency (ms) of ``arch`` on the table's machine and thread count."""
        # The prediction is linear in per-op terms, so it is a sum of per-group
        # contributions, each computed once per group key (see SearchSpace.op_groups).
        coef = self.coef
        total = coef[-1]  # intercept
        cache = self._group_cache
        for key, make in self.space.op_groups(arch):
            part = cache.get(key)
            if part is None:
                f = op_features([(spec.kind, self.op_ms(spec)) for spec in make()], self._kinds)
                part = cache[key] = float(f[:-1] @ np.asarray(coef[:-1]))
            total += part
        return float(total) * self.scale

    def predict_many(self, archs) -> np.ndarray:
        return np.array([self.predict(a) for a in archs])
