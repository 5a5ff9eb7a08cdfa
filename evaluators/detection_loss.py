"""The head's training loss: FCOS-style assignment, quality focal loss and GIoU.

Assignment (per image): a point is positive for a ground-truth box when the point lies
inside the box, within ``CENTRE_RADIUS`` strides of the box centre, and the box's size
fits the point's pyramid level (FCOS scale ranges). A point claimed by several boxes
takes the smallest. A box too small to claim any point claims its nearest point on the
finest level, so every object is learned.

Classification: quality focal loss (Generalized Focal Loss, Li et al. 2020): the target
of a positive point's class is the IoU of its predicted box with its ground truth, so
the score ranks boxes by localisation quality, which is what mAP rewards.
Regression: GIoU loss on positives, weighted by that same quality.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .boxes import box_iou_torch, giou_loss_torch

CENTRE_RADIUS = 2.5
# Largest ltrb distance a level regresses (FCOS): P3 < 64, 64 <= P4 < 128, P5 >= 128.
SCALE_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, float("inf")))
BOX_WEIGHT = 2.0
QFL_BETA = 2.0


def assign(centres: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """Index of the assigned ground-truth box per point, -1 for background.

    ``centres`` (N, 2), ``strides`` (N,), ``gt_boxes`` (G, 4) xyxy.
    """
    n = centres.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((n,), -1, dtype=torch.long)
    x, y = centres[:, 0:1], centres[:, 1:2]
    l, t = x - gt_boxes[:, 0], y - gt_boxes[:, 1]
    r, b = gt_boxes[:, 2] - x, gt_boxes[:, 3] - y
    ltrb = torch.stack([l, t, r, b], -1)                          # (N, G, 4)
    inside = ltrb.min(-1).values > 0
    cx, cy = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2, (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2
    radius = CENTRE_RADIUS * strides[:, None]
    near_centre = ((x - cx).abs() < radius) & ((y - cy).abs() < radius)
    reach = ltrb.max(-1).values
    lo = torch.tensor([r[0] for r in SCALE_RANGES])
    hi = torch.tensor([r[1] for r in SCALE_RANGES])
    level = torch.bucketize(strides, torch.tensor([8.0, 16.0, 32.0]))  # stride -> level index
    fits = (reach >= lo[level][:, None]) & (reach < hi[level][:, None])
    ok = inside & near_centre & fits
    area = ((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]))[None].expand(n, -1)
    area = torch.where(ok, area, torch.full_like(area, float("inf")))
    best_area, best = area.min(1)
    assigned = torch.where(torch.isfinite(best_area), best, torch.full_like(best, -1))
    # Boxes that claimed nothing take their nearest finest-level point (if still free).
    claimed = torch.zeros(gt_boxes.shape[0], dtype=torch.bool)
    claimed[assigned[assigned >= 0]] = True
    finest = strides == strides.min()
    for g in torch.nonzero(~claimed).flatten().tolist():
        d = (x[:, 0] - cx[g]) ** 2 + (y[:, 0] - cy[g]) ** 2
        d = torch.where(finest & (assigned < 0), d, torch.full_like(d, float("inf")))
        if torch.isfinite(d.min()):
            assigned[d.argmin()] = g
    return assigned


def detection_loss(cls_logits: torch.Tensor, pred_boxes: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor,
                   targets: list[dict]) -> dict[str, torch.Tensor]:
    """Loss for a batch.

    ``cls_logits`` (B, N, C) raw; ``pred_boxes`` (B, N, 4) decoded xyxy pixels;
    ``targets[i]`` has ``boxes`` (G, 4) float tensor and ``labels`` (G,) long tensor.
    Returns ``{"loss", "cls", "box"}``; normalised by the number of positives.
    """
    b, n, c = cls_logits.shape
    quality = torch.zeros_like(cls_logits)
    box_losses, weights = [], []
    num_pos = 0
    for i, tgt in enumerate(targets):
        assigned = assign(centres, strides, tgt["boxes"])
        pos = torch.nonzero(assigned >= 0).flatten()
        if pos.numel() == 0:
            continue
        gt = tgt["boxes"][assigned[pos]]
        pb = pred_boxes[i, pos]
        iou = box_iou_torch(pb.detach(), gt).diagonal().clamp(min=0.0) if pb.numel() else pb.new_zeros(0)
        quality[i, pos, tgt["labels"][assigned[pos]]] = iou
        w = cls_logits[i, pos].detach().sigmoid().max(1).values.clamp(min=0.1)  # NanoDet-style weighting
        box_losses.append(giou_loss_torch(pb, gt) * w)
        weights.append(w)
        num_pos += pos.numel()
    scores = cls_logits.sigmoid()
    # Quality focal loss: BCE to the soft target, modulated by |score - target|^beta.
    bce = F.binary_cross_entropy_with_logits(cls_logits, quality, reduction="none")
    qfl = (bce * (scores - quality).abs().pow(QFL_BETA)).sum() / max(num_pos, 1)
    if box_losses:
        box = torch.cat(box_losses).sum() / torch.cat(weights).sum().clamp(min=1e-6)
    else:
        box = cls_logits.sum() * 0.0
    return {"loss": qfl + BOX_WEIGHT * box, "cls": qfl.detach(), "box": box.detach()}
