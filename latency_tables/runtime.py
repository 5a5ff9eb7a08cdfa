"""ONNX Runtime plumbing shared by the profiler, validation and export.

Timing rules (the mistakes other tools made): a fixed thread count, all graph
optimisations on, warm-up runs before timing, many timed runs, and a robust statistic
(a low quantile) with its spread recorded; and, on this shared machine, every latency
measured against a yardstick network run in alternation (see ``time_interleaved``).
"""
from __future__ import annotations

import io
import json
import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
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
    return Timing(*_low_median_iqr(times), len(times))


def _low_median_iqr(times: list[float]) -> tuple[float, float, float]:
    """The STATISTIC_QUANTILE quantile, the median and the interquartile range."""
    q = statistics.quantiles(times, n=20)  # q[k] is the (k+1)*5 % point
    return q[round(STATISTIC_QUANTILE * 20) - 1], statistics.median(times), q[14] - q[4]


# This (shared, virtualised) machine's speed moves by 20-45% between spells of a second
# or so and drifts over minutes (bench/timing_spells.py), so an absolute wall-clock
# timing of the same network differs by 12-17% from one minute to the next. The speed
# changes alike for every network, though (at 1 thread): timed run by run in alternation
# with a fixed *yardstick* network, a network's latency as a multiple of the
# yardstick's repeats within about 2.5% where wall-clock timings were 7% apart
# (BENCHMARKS.md, "How latency is timed here"; at 2 threads neither repeats). So every
# latency here is measured as that ratio and reported in milliseconds of the machine's
# reference speed:
# ratio x ``yardstick_ms``, the yardstick's own latency recorded once per machine and
# thread count (in the latency table's header; see ``reference_ms``).
WINDOWS = 3
WINDOW_SECONDS = 0.3
YARDSTICK_VERSION = 1


class _Yardstick(torch.nn.Module):
    """A fixed MobileNetV2-like network (stride-2 stem, inverted residuals with ReLU and
    h-swish, 3x3 and 5x5 depthwise convs) at 1x3x256x256: the same kinds of kernels the
    search spaces produce, so it slows down with the machine as they do. About 1.8 ms
    at 1 thread on this project's machine. Changing it changes every measurement's
    unit: bump YARDSTICK_VERSION."""

    def __init__(self):
        super().__init__()
        nn = torch.nn

        def ir(cin, cout, k, stride, act):
            mid = cin * 4
            return nn.Sequential(nn.Conv2d(cin, mid, 1), act(), nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid), act(),
                                 nn.Conv2d(mid, cout, 1))

        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.Hardswish(),
                                  ir(16, 24, 3, 2, nn.ReLU), ir(24, 32, 3, 2, nn.ReLU), ir(32, 48, 5, 1, nn.Hardswish),
                                  ir(48, 64, 5, 2, nn.Hardswish), ir(64, 96, 3, 2, nn.ReLU), nn.Conv2d(96, 64, 1))

    def forward(self, x):
        return self.body(x)


_yardsticks: dict[int, tuple] = {}


def yardstick(threads: int):
    """``(session, feeds)`` of the yardstick network at ``threads`` (built once per process)."""
    if threads not in _yardsticks:
        torch.manual_seed(0)
        x = torch.rand(1, 3, 256, 256)
        session = ort_session(to_onnx_bytes(_Yardstick(), [x], ["images"]), threads)
        feeds = {"images": x.numpy()}
        for _ in range(10):
            session.run(None, feeds)
        _yardsticks[threads] = (session, feeds)
    return _yardsticks[threads]


def _relative_window(session, feeds, ref, seconds: float, min_runs: int = 10) -> tuple[float, float, float, int]:
    """One window of ``seconds``: the yardstick and the item alternate, one yardstick run
    then item runs for about as long, so both see the same machine state. Returns the
    item's (p20, median, IQR) as multiples of the yardstick's p20, and its run count."""
    ref_session, ref_feeds = ref
    item, ref_times = [], []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(item) < min_runs or len(ref_times) < 3:
        t0 = time.perf_counter()
        ref_session.run(None, ref_feeds)
        t1 = time.perf_counter()
        ref_times.append(t1 - t0)
        stop = t1 + ref_times[-1]
        while True:
            t0 = time.perf_counter()
            session.run(None, feeds)
            t1 = time.perf_counter()
            item.append(t1 - t0)
            if t1 >= stop:
                break
    unit = _low_median_iqr(ref_times)[0]
    low, median, iqr = _low_median_iqr(item)
    return low / unit, median / unit, iqr / unit, len(item)


def time_interleaved(items: list[tuple[object, dict]], threads: int, unit_ms: float | None = None,
                     windows: int = WINDOWS, seconds: float = WINDOW_SECONDS, warmup: int = 10,
                     min_runs: int = 10) -> list[Timing]:
    """Latency of every ``(session, feeds)`` (run at ``threads``) in ``windows`` rounds,
    round-robin over the items, each window timed against the yardstick (see
    ``_relative_window``); per item the median over its windows, in milliseconds of
    ``unit_ms`` per yardstick (default: ``reference_ms(threads)``); ``median_ms`` and
    ``iqr_ms`` are the item's median and spread over the yardstick's 20th percentile,
    in the same unit. Each window has at least ``min_runs`` runs. Timings are in the
    order of ``items``."""
    unit_ms = reference_ms(threads) if unit_ms is None else unit_ms
    ref = yardstick(threads)
    for session, feeds in items:
        for _ in range(warmup):
            session.run(None, feeds)
    per_item: list[list[tuple[float, float, float, int]]] = [[] for _ in items]
    for _ in range(windows):
        for i, (session, feeds) in enumerate(items):
            per_item[i].append(_relative_window(session, feeds, ref, seconds, min_runs))
    out = []
    for rows in per_item:
        ratio, median, iqr = (statistics.median(r[j] for r in rows) for j in range(3))
        out.append(Timing(ratio * unit_ms, median * unit_ms, iqr * unit_ms, sum(r[3] for r in rows)))
    return out


_reference_ms: dict[int, float] = {}
TABLES_DIR = Path(__file__).resolve().parent / "tables"  # the committed tables
# Where a machine without a committed table keeps the unit it measured, so that every
# process on it (Ray trials, later runs, a table built with --out elsewhere) shares one.
UNIT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cpu-det-nas" / "reference_ms.json"


def table_header(path: Path) -> dict:
    """The header of the table file at ``path``, or ``{}`` when it cannot be read (such a
    file is never taken as measured here; loading it with ``TableData.load`` says why)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("header", {})
    except (OSError, ValueError):
        return {}


def reference_ms(threads: int) -> float:
    """Milliseconds per yardstick at ``threads`` on this machine, the unit of every
    measurement here: the value recorded in a committed latency table measured on this
    machine (so measurements share the tables' unit); else the one cached in
    ``UNIT_CACHE`` for this machine; else measured now (``measure_reference_ms``) and
    cached there."""
    if threads in _reference_ms:
        return _reference_ms[threads]
    from .fingerprint import machine_fingerprint, mismatches
    from search_spaces.files import write_text_atomic

    for path in sorted(TABLES_DIR.glob("*.json")):
        header = table_header(path)
        ys = header.get("yardstick") or {}
        if ys.get("version") == YARDSTICK_VERSION and not mismatches(header.get("fingerprint", {}), threads):
            _reference_ms[threads] = float(ys["ms"])
            return _reference_ms[threads]
    fp = machine_fingerprint(threads)
    key = f"v{YARDSTICK_VERSION}|{fp['cpu_model']}|{'/'.join(fp['isa'])}|{fp['logical_cores']}|" \
          f"{fp['runtime_version']}|{threads}t"
    try:
        cache = json.loads(UNIT_CACHE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache.get(key), (int, float)):
        cache[key] = round(measure_reference_ms(threads), 5)
        try:
            write_text_atomic(UNIT_CACHE, json.dumps(cache, indent=1))
        except OSError:  # a read-only home: the unit holds for this process only
            pass
    _reference_ms[threads] = float(cache[key])
    return _reference_ms[threads]


def measure_reference_ms(threads: int, windows: int = 10, seconds: float = 0.2) -> float:
    """The yardstick's latency at this machine's fastest (the lowest of ``windows``
    windows' statistic, a second apart): the unit a new table records. Inside a
    measurement the yardstick runs right after the item's runs, with their data in the
    caches, so it reads a little slower there than back to back and a network in these
    units reads a few percent faster than its best wall-clock timing; tables and
    measurements share the method, so they agree with each other."""
    session, feeds = yardstick(threads)
    best = math.inf
    for w in range(windows):
        if w:
            time.sleep(1.0)
        best = min(best, time_session(session, feeds, warmup=3, min_runs=10, min_seconds=seconds).ms)
    return best


def random_feeds(session, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs of the session's (static) input shapes."""
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in session.get_inputs()}
