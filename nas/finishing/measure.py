"""Measuring a deployed artifact: mAP through onnxruntime, latency, size, params, FLOPs.

Every number in the finishing table comes from here, and the accuracy is that of the
ONNX file itself (run by onnxruntime through :func:`evaluators.trainer.evaluate`), so a
difference introduced by export or quantisation shows up in the table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from latency_tables.runtime import ort_session, random_feeds, time_interleaved

from .config import MeasureOptions


def images_to_input(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [0, 1], exactly as :func:`evaluators.trainer.to_tensor`."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255.0)


def onnx_predictor(model: str | Path | bytes, threads: int = 1) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``predict(images uint8 NHWC) -> (scores [B,N,C], boxes [B,N,4])`` over an onnxruntime session.

    Exported detectors have a fixed batch of 1 (the latency tables measure batch 1), so
    a batch is run one image at a time.
    """
    session = ort_session(model, threads)
    name = session.get_inputs()[0].name

    def predict(images: np.ndarray):
        outs = [session.run(None, {name: images_to_input(images[i:i + 1])}) for i in range(len(images))]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    return predict


def measure_onnx(path: Path, val_data, options: MeasureOptions) -> dict[str, float]:
    """``map``, ``map50`` of the ONNX model on ``val_data``, ``latency_ms@<t>t`` per thread
    count (20th percentile of the timed runs against the yardstick network, in this
    machine's reference milliseconds: :func:`latency_tables.runtime.time_interleaved`)
    and ``size_mb``."""
    from evaluators.trainer import evaluate

    row = dict(evaluate(None, val_data, predict=onnx_predictor(path, options.eval_threads)))
    for threads in options.threads:
        session = ort_session(path, threads)
        timing = time_interleaved([(session, random_feeds(session))], threads, windows=1, seconds=options.min_seconds,
                                  warmup=options.warmup, min_runs=options.min_runs)[0]
        row[f"latency_ms@{threads}t"] = timing.ms
    row["size_mb"] = Path(path).stat().st_size / 1e6
    return row


def retime_stages(out: Path, rows: list[dict], threads: tuple[int, ...], windows: int = 5,
                  window_seconds: float = 0.3, warmup: int = 10) -> list[dict]:
    """Time every stage's ONNX file (``out / row["onnx"]``) again, all stages round-robin
    in ``windows`` windows of ``window_seconds`` per thread count, each against the
    yardstick network (median over windows), and put the results in ``latency_ms@<t>t``
    (the per-stage measurement moves to ``first_latency_ms@<t>t``).

    Why: each stage was timed when it was made, minutes apart; the yardstick cancels a
    machine that is uniformly slower, but at 2 threads this machine's spells do not
    cancel (BENCHMARKS.md, "How latency is timed here"); timed together, the stages'
    speed-ups compare like with like. Returns ``rows`` (updated in place).
    """
    for t in threads:
        sessions = [ort_session(str(Path(out) / row["onnx"]), t) for row in rows]
        timings = time_interleaved([(s, random_feeds(s)) for s in sessions], t, windows=windows,
                                   seconds=window_seconds, warmup=warmup)
        for row, timing in zip(rows, timings):
            row.setdefault(f"first_latency_ms@{t}t", row[f"latency_ms@{t}t"])
            row[f"latency_ms@{t}t"] = timing.ms
    return rows


def count_model(model: torch.nn.Module, input_hw: tuple[int, int]) -> dict[str, float]:
    """``params`` and ``flops`` (torch's FLOP counter, batch 1) of a torch model."""
    from search_spaces.stats import count_flops, count_params

    return {"params": float(count_params(model)), "flops": float(count_flops(model, input_hw))}
