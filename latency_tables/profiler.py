"""Measure ops and whole networks under ONNX Runtime, and build a table incrementally.

``build_table`` enumerates every op the space can emit (``space.enumerate_ops``),
measures the ones the table does not have yet, saves every few seconds (so an
interrupted build resumes where it stopped and loses at most those seconds), then
measures a calibration set of whole networks and fits the predictor's correction.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from search_spaces import Architecture, OpSpec, SearchSpace
from search_spaces.ops import make_op

from .fingerprint import machine_fingerprint, mismatches
from .progress import progress_bar
from .runtime import STATISTIC_QUANTILE, Timing, ort_session, time_session, to_onnx_bytes
from .table import TableData, TableError

SAVE_EVERY_S = 5.0
CALIBRATION_SEED = 1_000_003  # far from the seeds validation uses, so they never overlap
DEFAULT_CALIBRATION_MODELS = 60


def measure_op(spec: OpSpec, threads: int) -> Timing:
    """Latency of one op as its own ONNX model (random weights, random inputs)."""
    torch.manual_seed(0)
    module = make_op(spec)
    inputs = [torch.randn(*shape) for shape in spec.input_shapes]
    session = ort_session(to_onnx_bytes(module, inputs), threads)
    feeds = {f"x{i}": t.numpy() for i, t in enumerate(inputs)}
    return time_session(session, feeds, warmup=10, min_runs=30, min_seconds=0.1)


def measure_model(space: SearchSpace, arch: Architecture, threads: int, min_seconds: float = 0.3) -> Timing:
    """End-to-end latency of the whole network (decode included), as it is deployed."""
    torch.manual_seed(0)
    model = space.build(arch).eval()
    size = space.settings()["input_size"]
    x = torch.rand(1, 3, size, size)
    session = ort_session(to_onnx_bytes(model, [x], ["images"]), threads)
    return time_session(session, {"images": x.numpy()}, warmup=10, min_runs=20, min_seconds=min_seconds)


def new_header(space: SearchSpace, threads: int) -> dict:
    from .runtime import OPSET

    return {"space": space.name, "settings": space.settings(), "fingerprint": machine_fingerprint(threads),
            "opset": OPSET, "dtype": "float32", "batch": 1, "input_size": space.settings()["input_size"],
            "statistic": f"ms = {STATISTIC_QUANTILE:.0%} quantile of timed runs after warm-up (median_ms also kept); "
                         "spread iqr_ms = interquartile range"}


def open_for_build(space: SearchSpace, threads: int, out: str | Path) -> TableData:
    """The table at ``out`` to resume, or a new one; refuses to mix other settings in."""
    out = Path(out)
    if not out.exists():
        return TableData(new_header(space, threads), path=out)
    table = TableData.load(out)
    h = table.header
    if h.get("space") != space.name or h.get("settings") != space.settings():
        raise TableError(f"{out} holds a table for {h.get('space')} {h.get('settings')}, not {space.name} "
                         f"{space.settings()}; pass another --out")
    diff = mismatches(h.get("fingerprint", {}), threads)
    if diff:
        raise TableError(f"{out} was measured on another machine or thread count ({'; '.join(diff)}); "
                         "resuming would mix measurements: pass another --out")
    return table


def build_table(space: SearchSpace, threads: int, out: str | Path, calibration_models: int = DEFAULT_CALIBRATION_MODELS,
                progress: bool = True, max_ops: int | None = None) -> TableData:
    """Measure every missing op, then the calibration networks, then fit. Resumable."""
    torch.set_num_threads(1)  # torch only exports here; keep its threads off the measured cores
    table = open_for_build(space, threads, out)
    todo = [op for op in space.enumerate_ops() if op.key not in table.ops]
    if max_ops is not None:
        todo = todo[:max_ops]
    last_save = started = time.monotonic()
    spent = float(table.header.get("build_seconds_ops", 0.0))  # summed over resumed builds
    bar = progress_bar(iterable=todo, desc=f"ops @{threads} thread(s)", unit="op", disable=not progress)
    for spec in bar:
        t = measure_op(spec, threads)
        table.ops[spec.key] = {"kind": spec.kind, "params": spec.param_dict, "input_shapes": [list(s) for s in spec.input_shapes],
                               "ms": round(t.ms, 5), "median_ms": round(t.median_ms, 5), "iqr_ms": round(t.iqr_ms, 5), "runs": t.runs}
        if time.monotonic() - last_save > SAVE_EVERY_S:
            table.header["build_seconds_ops"] = round(spent + time.monotonic() - started, 1)
            table.save()
            last_save = time.monotonic()
    table.header["build_seconds_ops"] = round(spent + time.monotonic() - started, 1)
    table.save()
    if max_ops is None and calibration_models > 0:
        calibrate(table, space, threads, calibration_models, progress)
    return table


def calibration_architectures(space: SearchSpace, n: int) -> list[Architecture]:
    rng = random.Random(CALIBRATION_SEED)
    archs = list(space.reference_architectures().values())
    seen = {a.id for a in archs}
    target = len(archs) + n
    while len(archs) < target:
        a = space.sample(rng)
        if a.id not in seen:
            seen.add(a.id)
            archs.append(a)
    return archs


def calibrate(table: TableData, space: SearchSpace, threads: int, n: int, progress: bool = True) -> None:
    """Measure whole networks (kept in the table, so this step resumes too) and fit."""
    from .predictor import fit_calibration

    cal = table.calibration or {}
    measured: dict[str, float] = dict(cal.get("measured_ms", {}))
    archs = calibration_architectures(space, n)
    for arch in progress_bar(iterable=[a for a in archs if a.to_json() not in measured], desc="calibration networks",
                             unit="net", disable=not progress):
        measured[arch.to_json()] = round(measure_model(space, arch, threads).ms, 5)
        table.calibration = {**cal, "measured_ms": measured}
        table.save()
    table.calibration = {"measured_ms": measured, **fit_calibration(table, space, measured)}
    table.save()


def measure_architectures(space: SearchSpace, archs: list[Architecture], threads: int, progress: bool = True) -> np.ndarray:
    return np.array([measure_model(space, a, threads).ms
                     for a in progress_bar(iterable=archs, desc=f"whole networks @{threads}", unit="net", disable=not progress)])
