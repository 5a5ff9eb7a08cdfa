"""ONNX Runtime plumbing shared by the profiler, validation and export.

Timing rules (the mistakes other tools made): a fixed thread count, all graph
optimisations on, warm-up runs before timing, many timed runs, and a robust statistic
(the median) with its spread recorded.
"""
from __future__ import annotations

import io
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

OPSET = 17


def to_onnx_bytes(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor],
                  input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None) -> bytes:
    """Export a module in eval mode to ONNX bytes (TorchScript exporter: ~50 ms for a
    small module, where the dynamo exporter takes ~2 s)."""
    module = module.eval()
    buf = io.BytesIO()
    names = list(input_names) if input_names else [f"x{i}" for i in range(len(example_inputs))]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(example_inputs), buf, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=list(output_names) if output_names else None)
    return buf.getvalue()


def ort_session(model, threads: int = 1):
    """CPU session: all graph optimisations, ``threads`` intra-op threads, sequential."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])


# The statistic a table stores: a low quantile of the timed runs. On a shared machine
# interference only ever adds time, so a low quantile tracks the undisturbed latency
# more closely than the median (the reason timeit reports the minimum); p20 rather
# than the minimum keeps it robust to a lucky outlier.
STATISTIC_QUANTILE = 0.2


@dataclass(frozen=True)
class Timing:
    ms: float          # the STATISTIC_QUANTILE quantile of the timed runs
    median_ms: float
    iqr_ms: float      # spread: interquartile range of the timed runs
    runs: int


def time_session(session, feeds: dict[str, np.ndarray], warmup: int = 10, min_runs: int = 30,
                 min_seconds: float = 0.2, max_runs: int = 2000) -> Timing:
    """Latency of ``session.run`` over at least ``min_runs`` runs and ``min_seconds``."""
    for _ in range(warmup):
        session.run(None, feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=20)  # q[k] is the (k+1)*5 % point
    low = q[round(STATISTIC_QUANTILE * 20) - 1]
    return Timing(low, statistics.median(times), q[14] - q[4], len(times))


# This (shared, virtualised) machine alternates between a fast state and a slower one in
# spells of a second or so (bench/timing_spells.py shows them): a network timed for
# 0.3 s lands in one or the other. So a measurement takes several short windows seconds
# apart and keeps the fastest window's statistic.
WINDOWS = 3
WINDOW_SECONDS = 0.3


def time_interleaved(items: list[tuple[object, dict]], windows: int = WINDOWS, seconds: float = WINDOW_SECONDS,
                     gap_seconds: float = 0.0, warmup: int = 10) -> list[Timing]:
    """Time every ``(session, feeds)`` in ``windows`` rounds, round-robin over the items
    (so one item's windows are the other items' time apart, plus ``gap_seconds``); per
    item the window with the lowest statistic. Timings are in the order of ``items``."""
    for session, feeds in items:
        for _ in range(warmup):
            session.run(None, feeds)
    best: list[Timing | None] = [None] * len(items)
    for w in range(windows):
        if w and gap_seconds:
            time.sleep(gap_seconds)
        for i, (session, feeds) in enumerate(items):
            t = time_session(session, feeds, warmup=0, min_runs=10, min_seconds=seconds)
            if best[i] is None or t.ms < best[i].ms:
                best[i] = Timing(t.ms, t.median_ms, t.iqr_ms, t.runs + (best[i].runs if best[i] else 0))
    return best  # type: ignore[return-value]


def random_feeds(session, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs of the session's (static) input shapes."""
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in session.get_inputs()}
