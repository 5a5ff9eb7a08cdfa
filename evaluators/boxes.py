"""Box operations written by hand: IoU, NMS, per-image post-processing, GIoU loss.

Every box is ``xyxy`` in pixels, continuous coordinates: pixel column ``j`` spans
``[j, j + 1)``, so the area of a box is ``(x2 - x1) * (y2 - y1)`` with no ``+ 1``.
The numpy functions serve evaluation and inference; the ``*_torch`` functions serve a
training loss and keep gradients. torch is imported inside them so that code that only
loads data or computes mAP does not pay for importing torch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

# Pre-NMS cap on candidate (box, class) pairs per image, as in mmdet / NanoDet: NMS is
# quadratic, and candidates beyond the best 1000 almost never survive to the top 100.
PRE_NMS_TOP_K = 1000

_EPS = 1e-9


def _to_numpy(x: Any, dtype: Any = np.float32) -> np.ndarray:
    """``x`` as a numpy array of ``dtype``; accepts torch tensors (detached, on CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(N, 4)`` xyxy boxes; degenerate boxes (x2 < x1) count as 0."""
    boxes = _to_numpy(boxes, np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)`` float64.

    A pair whose union is empty (two zero-area boxes) has IoU 0.
    """
    a = _to_numpy(a, np.float64).reshape(-1, 4)
    b = _to_numpy(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, _EPS), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression.

    Returns the int64 indices of the kept boxes, highest score first. A box is dropped
    when its IoU with an already kept, higher-scored box is *greater than*
    ``iou_threshold`` (the torchvision convention). Ties in score keep input order.
    ``max_keep`` stops after that many boxes: the result is the full one's prefix, and
    an untrained network's thousand overlapping boxes no longer take a thousand rounds.
    Boxes must be finite: a NaN box fails every IoU test, so it is suppressed by any box
    kept before it and, if kept itself, suppresses every box after it.
    """
    boxes = _to_numpy(boxes, np.float64).reshape(-1, 4)
    scores = _to_numpy(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    # One contiguous array per coordinate, in score order, and in-place arithmetic: the
    # loop runs once per kept box (up to 100 per image in evaluation), so its cost is
    # mostly numpy's per-call overhead and temporary arrays (BENCHMARKS.md, session 20).
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[order, k]) for k in range(4))
    areas = box_area(boxes)[order]
    alive = np.arange(len(order))  # positions (in score order) not yet kept or suppressed
    kept_positions: list[int] = []
    while alive.size and (max_keep is None or len(kept_positions) < max_keep):
        i, rest = alive[0], alive[1:]
        kept_positions.append(i)
        width = np.minimum(x2[i], x2[rest])
        width -= np.maximum(x1[i], x1[rest])
        np.maximum(width, 0, out=width)
        height = np.minimum(y2[i], y2[rest])
        height -= np.maximum(y1[i], y1[rest])
        np.maximum(height, 0, out=height)
        inter = np.multiply(width, height, out=width)
        # IoU <= threshold, without dividing: a pair of empty boxes (union 0) is kept.
        alive = rest[inter <= iou_threshold * (areas[i] + areas[rest] - inter)]
    return order[np.asarray(kept_positions, dtype=np.int64)]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                max_keep: int | None = None) -> np.ndarray:
    """NMS done independently per label, in one pass.

    Each label's boxes are shifted by ``label * span`` so boxes of different labels can
    never overlap (the offset trick); ``span`` covers the full coordinate range, so
    it stays correct for negative coordinates too. Returns kept indices, best first.
    """
    boxes = _to_numpy(boxes, np.float64).reshape(-1, 4)
    labels = _to_numpy(labels, np.int64).reshape(-1)
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted = boxes + (labels.astype(np.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold, max_keep)


def postprocess(
    scores: np.ndarray,
    boxes: np.ndarray,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.6,
    max_detections: int = 100,
    pre_nms_top_k: int = PRE_NMS_TOP_K,
) -> dict[str, np.ndarray]:
    """Dense outputs of ONE image -> final detections (multi-class NMS).

    ``scores`` is ``(N, C)`` per-class probabilities (already sigmoided), ``boxes`` is
    ``(N, 4)`` xyxy pixels shared by all classes of an anchor/point. Every (box, class)
    pair scoring above ``score_threshold`` is a candidate, so one box may be reported
    for several classes (mmdet / NanoDet multiclass NMS). The best ``pre_nms_top_k``
    candidates go through per-class NMS and the best ``max_detections`` survive.

    Returns ``{"boxes": (K, 4) float32, "scores": (K,) float32, "labels": (K,) int64}``,
    sorted by descending score. Accepts numpy arrays or torch tensors.
    """
    scores = _to_numpy(scores, np.float32)
    boxes = _to_numpy(boxes, np.float32).reshape(-1, 4)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"postprocess: {scores.shape[0]} score rows but {boxes.shape[0]} boxes")
    anchor_idx, label_idx = np.nonzero(scores > score_threshold)
    cand_scores = scores[anchor_idx, label_idx]
    if cand_scores.size > pre_nms_top_k:
        top = np.argsort(-cand_scores, kind="stable")[:pre_nms_top_k]
        anchor_idx, label_idx, cand_scores = anchor_idx[top], label_idx[top], cand_scores[top]
    cand_boxes = boxes[anchor_idx]
    keep = batched_nms(cand_boxes, cand_scores, label_idx, iou_threshold, max_keep=max_detections)
    return {
        "boxes": cand_boxes[keep].astype(np.float32).reshape(-1, 4),
        "scores": cand_scores[keep].astype(np.float32),
        "labels": label_idx[keep].astype(np.int64),
    }


def box_iou_torch(a: "torch.Tensor", b: "torch.Tensor", eps: float = 1e-7) -> "torch.Tensor":
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy tensors -> ``(N, M)``; differentiable."""
    import torch

    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    return inter / (area_a[:, None] + area_b[None, :] - inter + eps)


def giou_loss_torch(pred: "torch.Tensor", target: "torch.Tensor", eps: float = 1e-7) -> "torch.Tensor":
    """Elementwise ``1 - GIoU`` of matching xyxy boxes ``(..., 4)`` -> ``(...)``.

    0 for identical boxes, up to 2 for distant ones. ``eps`` keeps the gradient finite
    for degenerate boxes (a freshly initialised regressor can emit x2 == x1).
    """
    import torch

    area_p = (pred[..., 2] - pred[..., 0]).clamp(min=0) * (pred[..., 3] - pred[..., 1]).clamp(min=0)
    area_t = (target[..., 2] - target[..., 0]).clamp(min=0) * (target[..., 3] - target[..., 1]).clamp(min=0)
    lt = torch.maximum(pred[..., :2], target[..., :2])
    rb = torch.minimum(pred[..., 2:], target[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_p + area_t - inter + eps
    iou = inter / union
    # Smallest box enclosing both: GIoU penalises the empty part of it.
    enc_wh = (torch.maximum(pred[..., 2:], target[..., 2:]) - torch.minimum(pred[..., :2], target[..., :2])).clamp(min=0)
    enclosure = enc_wh[..., 0] * enc_wh[..., 1] + eps
    giou = iou - (enclosure - union) / enclosure
    return 1.0 - giou
