"""A small, seeded CPU trainer and mAP evaluation for any detector of the space.

Images are letterboxed once to the input size and kept in memory as uint8 (a 256 px
image is 192 KB; 1,000 images are under 200 MB), because rendering or decoding per step
would cost as much as the step itself on two cores.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .boxes import postprocess
from .datasets import DetectionDataset
from .detection_loss import detection_loss
from .metrics import coco_map


class TrainingFailure(RuntimeError):
    """Training diverged (NaN/inf loss); the message names the step."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300                 # optimiser steps (the budget), unless time runs out first
    time_budget_s: float | None = None  # stop early after this many seconds
    batch_size: int = 16
    lr: float = 4e-3                 # AdamW peak learning rate, after linear warm-up
    weight_decay: float = 0.05
    warmup_steps: int = 30
    hflip: bool = True               # light augmentation: horizontal flip ...
    brightness: float = 0.2          # ... and a random brightness scale in [1-b, 1+b]
    seed: int = 0
    grad_clip: float = 10.0


@dataclass
class PreparedData:
    """Letterboxed images (N, S, S, 3) uint8 and per-image boxes/labels in those pixels."""
    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    image_ids: list[int]
    num_classes: int
    size: int

    def __len__(self) -> int:
        return len(self.images)

    def ground_truth(self):
        return [(b, l, self.size, self.size, i) for b, l, i in zip(self.boxes, self.labels, self.image_ids)]


def letterbox(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize keeping aspect ratio, pad to ``size`` x ``size`` (top-left), scale boxes."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = size / max(h, w)
    if scale != 1.0 or h != w:
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
        out = np.full((size, size, 3), 114, dtype=np.uint8)
        out[:nh, :nw] = resized
        image = out
    return image, (boxes * scale).astype(np.float32)


_PREPARED: dict[tuple, PreparedData] = {}


def prepare(dataset: DetectionDataset, size: int, limit: int | None = None) -> PreparedData:
    """Letterbox a dataset once per process (cached by dataset identity and size)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    key = (repr(dataset), getattr(dataset, "root", ""), dataset.split, n, size)
    if key in _PREPARED:
        return _PREPARED[key]
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    boxes, labels, ids = [], [], []
    for i in range(n):
        sample = dataset[i]
        images[i], b = letterbox(sample.image, sample.boxes, size)
        boxes.append(b)
        labels.append(sample.labels.astype(np.int64))
        ids.append(int(sample.image_id))
    data = PreparedData(images, boxes, labels, ids, dataset.num_classes, size)
    _PREPARED[key] = data
    return data


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return float(sum(tail) / len(tail)) if tail else float("nan")


def _batch(data: PreparedData, idx: np.ndarray, cfg: TrainConfig, rng: np.random.Generator):
    images = data.images[idx].copy()
    targets = []
    for j, i in enumerate(idx):
        b = data.boxes[i].copy()
        if cfg.hflip and rng.random() < 0.5:
            images[j] = images[j, :, ::-1]
            b[:, [0, 2]] = data.size - b[:, [2, 0]]
        targets.append({"boxes": torch.from_numpy(b), "labels": torch.from_numpy(data.labels[i])})
    x = to_tensor(images)
    if cfg.brightness:
        x = (x * torch.from_numpy(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness, (len(idx), 1, 1, 1))).float()).clamp_(0, 1)
    return x, targets


def train(model: torch.nn.Module, data: PreparedData, cfg: TrainConfig = TrainConfig(), progress: bool = False,
          loss_fn=None) -> TrainResult:
    """Train in place. Deterministic for a given seed, data and thread count.

    ``loss_fn(model, images, targets) -> dict(loss=...)`` replaces the detection loss
    (distillation passes add terms); raises :class:`TrainingFailure` on a NaN/inf loss.
    """
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    loss_fn = loss_fn or supervised_loss
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps))
                                              * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / max(1, cfg.steps))))
    result = TrainResult(0, 0.0)
    start = time.monotonic()
    order = rng.permutation(len(data))
    cursor = 0
    bar = tqdm(range(cfg.steps), desc="train", unit="step", disable=not progress, leave=False)
    for step in bar:
        if cursor + cfg.batch_size > len(order):
            order, cursor = rng.permutation(len(data)), 0
        idx = order[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        images, targets = _batch(data, idx, cfg, rng)
        losses = loss_fn(model, images, targets)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise TrainingFailure(f"loss became {loss.item()} at step {step} (lr {sched.get_last_lr()[0]:.2e})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        result.losses.append(loss.item())
        result.steps = step + 1
        bar.set_postfix(loss=f"{result.losses[-1]:.3f}")
        if cfg.time_budget_s is not None and time.monotonic() - start > cfg.time_budget_s:
            break
    result.seconds = time.monotonic() - start
    model.eval()
    return result


def supervised_loss(model, images: torch.Tensor, targets: list[dict]) -> dict:
    """The detection loss of a :class:`search_spaces.cpu_detector.CpuDetector`."""
    return dense_loss(model, *dense_outputs(model, images), targets)


def dense_outputs(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits ``[B, N, C]`` and decoded boxes ``[B, N, 4]`` over all points, as the
    loss sees them (before any score threshold or NMS)."""
    return split_dense(model, model.decode.flatten(*model.forward_levels(images)))


def split_dense(model, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The head outputs flattened over all points (``model.decode.flatten``) as class
    logits and decoded boxes."""
    nc = model.num_classes
    return dense[..., :nc], model.decode.boxes(dense[..., nc:])


def dense_loss(model, cls_logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict]) -> dict:
    """The detection loss of outputs already computed by ``model`` (class logits and
    decoded boxes over all points), for losses that reuse one forward pass."""
    return detection_loss(cls_logits, boxes, model.decode.centres, model.decode.point_strides[:, 0], targets)


@torch.no_grad()
def predict_dense(model, images: torch.Tensor):
    model.eval()
    scores, boxes = model(images)
    return scores.numpy(), boxes.numpy()


def evaluate(model, data: PreparedData, batch_size: int = 32, predict=None) -> dict[str, float]:
    """mAP@[.5:.95] and mAP@.5 (pycocotools) on prepared data.

    ``predict(images uint8 NHWC) -> (scores, boxes)`` replaces the torch forward, so the
    same evaluation runs on an onnxruntime session (finishing passes re-measure that way).
    """
    preds = []
    for start in range(0, len(data), batch_size):
        chunk = data.images[start:start + batch_size]
        scores, boxes = predict(chunk) if predict else predict_dense(model, to_tensor(chunk))
        for j in range(len(chunk)):
            det = postprocess(scores[j], boxes[j])
            preds.append({**det, "image_id": data.image_ids[start + j]})
    return coco_map(data.ground_truth(), preds, num_classes=data.num_classes)
