"""Measure ops and whole networks under ONNX Runtime, and build a table incrementally.

``build_table`` enumerates every op the space can emit (``space.enumerate_ops``),
measures the ones the table does not have yet, each against the yardstick network
(``runtime.time_interleaved``: this machine's speed moves by tens of percent, the ratio
to the yardstick does not), saves every few seconds (so an interrupted build resumes
where it stopped and loses at most those seconds), then measures a calibration set of
whole networks the same way and fits the predictor's correction.
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
from .runtime import (STATISTIC_QUANTILE, WINDOW_SECONDS, YARDSTICK_VERSION, Timing, ort_session, reference_ms,
                      time_interleaved, to_onnx_bytes)
from .table import TableData, TableError

SAVE_EVERY_S = 5.0
CALIBRATION_SEED = 1_000_003  # far from the seeds validation uses, so they never overlap
DEFAULT_CALIBRATION_MODELS = 120
OP_SECONDS = 0.12


def measure_op(spec: OpSpec, threads: int, unit_ms: float | None = None) -> Timing:
    """Latency of one op as its own ONNX model (random weights, random inputs), in one
    window against the yardstick, in ``unit_ms`` per yardstick (default: this machine's)."""
    torch.manual_seed(0)
    module = make_op(spec)
    inputs = [torch.randn(*shape) for shape in spec.input_shapes]
    session = ort_session(to_onnx_bytes(module, inputs), threads)
    feeds = {f"x{i}": t.numpy() for i, t in enumerate(inputs)}
    return time_interleaved([(session, feeds)], threads, unit_ms=unit_ms, windows=1, seconds=OP_SECONDS)[0]


def model_session(space: SearchSpace, arch: Architecture, threads: int):
    """``(session, feeds)`` of the whole network (decode included), as it is deployed."""
    torch.manual_seed(0)
    model = space.build(arch).eval()
    size = space.settings()["input_size"]
    x = torch.rand(1, 3, size, size)
    return ort_session(to_onnx_bytes(model, [x], ["images"]), threads), {"images": x.numpy()}


def measure_model(space: SearchSpace, arch: Architecture, threads: int, window_seconds: float = WINDOW_SECONDS,
                  unit_ms: float | None = None) -> Timing:
    """End-to-end latency of one network: the median of ``WINDOWS`` windows of
    ``window_seconds``, each against the yardstick (see ``runtime.time_interleaved``)."""
    return time_interleaved([model_session(space, arch, threads)], threads, unit_ms=unit_ms, seconds=window_seconds)[0]


def measure_architectures(space: SearchSpace, archs: list[Architecture], threads: int, progress: bool = True,
                          chunk: int = 20, on_chunk=None, unit_ms: float | None = None) -> np.ndarray:
    """End-to-end latencies of many networks, timed ``chunk`` at a time in interleaved
    windows against the yardstick, in ``unit_ms`` per yardstick (default: this
    machine's). ``on_chunk(archs, ms)`` is called after each chunk (the calibration
    saves there)."""
    out: list[float] = []
    bar = progress_bar(total=len(archs), desc=f"whole networks @{threads}", unit="net", disable=not progress)
    for start in range(0, len(archs), chunk):
        part = archs[start:start + chunk]
        ms = [t.ms for t in time_interleaved([model_session(space, a, threads) for a in part], threads, unit_ms=unit_ms)]
        out += ms
        if on_chunk is not None:
            on_chunk(part, ms)
        bar.update(len(part))
    bar.close()
    return np.array(out)


def new_header(space: SearchSpace, threads: int) -> dict:
    from .runtime import OPSET

    return {"space": space.name, "settings": space.settings(), "fingerprint": machine_fingerprint(threads),
            "opset": OPSET, "dtype": "float32", "batch": 1, "input_size": space.settings()["input_size"],
            "statistic": f"ms = {STATISTIC_QUANTILE:.0%} quantile of timed runs after warm-up (median_ms also kept), "
                         "as a multiple of the yardstick network's, timed in alternation, times yardstick.ms; "
                         "spread iqr_ms = interquartile range",
            "yardstick": {"version": YARDSTICK_VERSION, "ms": round(reference_ms(threads), 5)}}


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
    if (h.get("yardstick") or {}).get("version") != YARDSTICK_VERSION:
        diff.append(f"yardstick version {(h.get('yardstick') or {}).get('version')}, here {YARDSTICK_VERSION}")
    if diff:
        raise TableError(f"{out} was measured on another machine or thread count ({'; '.join(diff)}); "
                         "resuming would mix measurements: pass another --out")
    return table


def build_table(space: SearchSpace, threads: int, out: str | Path, calibration_models: int = DEFAULT_CALIBRATION_MODELS,
                progress: bool = True, max_ops: int | None = None) -> TableData:
    """Measure every op the table does not have yet, then the calibration networks, then
    fit, all in the unit of the header's yardstick. Resumable at any point."""
    torch.set_num_threads(1)  # torch only exports here; keep its threads off the measured cores
    table = open_for_build(space, threads, out)
    ops = space.enumerate_ops()
    if max_ops is not None:
        ops = ops[:max_ops]
    last_save = started = time.monotonic()
    spent = float(table.header.get("build_seconds_ops", 0.0))  # summed over resumed builds
    todo = [op for op in ops if op.key not in table.ops]
    for spec in progress_bar(iterable=todo, desc=f"ops @{threads} thread(s)", unit="op", disable=not progress or not todo):
        t = measure_op(spec, threads, table.unit_ms)
        table.ops[spec.key] = {"kind": spec.kind, "params": spec.param_dict,
                               "input_shapes": [list(s) for s in spec.input_shapes], "ms": round(t.ms, 5),
                               "median_ms": round(t.median_ms, 5), "iqr_ms": round(t.iqr_ms, 5), "runs": t.runs}
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

    def save(part, ms):
        measured.update({a.to_json(): round(m, 5) for a, m in zip(part, ms)})
        table.calibration = {**cal, "measured_ms": measured}
        table.save()

    measure_architectures(space, [a for a in archs if a.to_json() not in measured], threads, progress, on_chunk=save,
                          unit_ms=table.unit_ms)
    table.calibration = {"measured_ms": measured, **fit_calibration(table, space, measured)}
    table.save()



