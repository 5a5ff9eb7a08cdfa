"""Box ops, NMS, post-processing, GIoU loss and COCO mAP."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluators.boxes import (
    batched_nms, box_iou, box_iou_torch, giou_loss_torch, nms, postprocess,
)
from evaluators.metrics import coco_map
from evaluators.synthetic import make_synthetic


def _boxes(n: int, seed: int = 0, size: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


# --------------------------------------------------------------------------- IoU


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])


def test_box_iou_empty_and_degenerate():
    assert box_iou(np.zeros((0, 4)), _boxes(3)).shape == (0, 3)
    point = np.array([[5, 5, 5, 5]], dtype=np.float32)
    assert box_iou(point, point)[0, 0] == 0.0  # empty union: 0, not NaN


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(0, 10_000))
def test_box_iou_torch_matches_numpy(n, m, seed):
    a, b = _boxes(n, seed), _boxes(m, seed + 1)
    expected = box_iou(a, b)
    got = box_iou_torch(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert ((expected >= 0) & (expected <= 1)).all()


# --------------------------------------------------------------------------- NMS


def test_nms_removes_duplicates_keeps_disjoint():
    boxes = np.array([
        [0, 0, 10, 10],      # best of cluster A
        [1, 1, 11, 11],      # duplicate of A (IoU ~0.68)
        [50, 50, 60, 60],    # disjoint B
        [0.5, 0, 10.5, 10],  # duplicate of A (IoU ~0.9)
        [100, 0, 110, 10],   # disjoint C, lowest score
    ], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.1], dtype=np.float32)
    keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.dtype == np.int64
    assert keep.tolist() == [3, 2, 4]  # by score; 0 and 1 overlap box 3 too much


def test_nms_threshold_is_strict_and_handles_empty():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=np.float32)  # IoU = 1/3
    assert nms(boxes, np.array([0.9, 0.8]), iou_threshold=1 / 3 + 1e-6).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8]), iou_threshold=0.3).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_equals_greedy_suppression_over_the_full_iou_matrix():
    """The loop's in-place, division-free IoU test against the textbook definition:
    walk the boxes by score (ties in input order) and drop each whose IoU with a kept one
    exceeds the threshold. Random boxes with tied scores, empty and inverted boxes."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 60, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 25, (300, 2))], 1)
    boxes[::17, 2] = boxes[::17, 0]  # empty boxes: union 0 with each other, IoU 0
    boxes[5::23, 3] = boxes[5::23, 1] - 5  # inverted boxes (y2 < y1) count as empty too
    scores = rng.integers(0, 40, 300) / 40.0  # many ties
    iou = box_iou(boxes, boxes)
    expected: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou[i, k] <= 0.45 for k in expected):
            expected.append(int(i))
    assert len(expected) > 50
    assert nms(boxes, scores, 0.45).tolist() == expected
    assert nms(boxes, scores, 0.45, max_keep=20).tolist() == expected[:20]


def test_batched_nms_is_per_class():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [-20, -20, -5, -5]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([0, 1, 0, 1])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 1, 3]
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).tolist() == []


def test_nms_max_keep_is_a_prefix_of_the_full_result():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (500, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (500, 2))], 1)
    scores, labels = rng.random(500), rng.integers(0, 3, 500)
    full = batched_nms(boxes, scores, labels, 0.5)
    assert len(full) > 40
    assert batched_nms(boxes, scores, labels, 0.5, max_keep=40).tolist() == full[:40].tolist()


def test_postprocess_multiclass_nms_and_limits():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [40, 40, 60, 60]], dtype=np.float32)
    scores = np.array([
        [0.9, 0.6, 0.01],   # class 0 and class 1 both above threshold: reported twice
        [0.8, 0.02, 0.01],  # class-0 duplicate of box 0: suppressed
        [0.03, 0.04, 0.7],  # class 2
    ], dtype=np.float32)
    out = postprocess(scores, boxes, score_threshold=0.05, iou_threshold=0.6)
    assert out["boxes"].dtype == np.float32 and out["labels"].dtype == np.int64
    assert out["labels"].tolist() == [0, 2, 1]
    np.testing.assert_allclose(out["scores"], [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(out["boxes"][0], boxes[0])
    assert len(postprocess(scores, boxes, max_detections=2)["scores"]) == 2
    empty = postprocess(np.zeros((0, 3)), np.zeros((0, 4)))
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_postprocess_pre_nms_top_k_and_torch_input():
    rng = np.random.default_rng(0)
    boxes = _boxes(3000, 1, size=1000)
    scores = rng.uniform(0.1, 1.0, (3000, 2)).astype(np.float32)
    out = postprocess(torch.from_numpy(scores), torch.from_numpy(boxes), iou_threshold=1.0, max_detections=5000)
    assert len(out["scores"]) == 1000  # IoU threshold 1 suppresses nothing: the top-k cap is what limits
    assert out["scores"].min() >= np.sort(scores.ravel())[-1000]


# --------------------------------------------------------------------------- GIoU


def test_giou_loss_identical_disjoint_and_gradient():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 8.0, 20.0]])
    assert torch.allclose(giou_loss_torch(a, a), torch.zeros(2), atol=1e-6)
    far = torch.tensor([[100.0, 100.0, 110.0, 110.0], [5.0, 5.0, 8.0, 20.0]])
    loss = giou_loss_torch(a, far)
    assert 1.0 < loss[0] < 2.0 and abs(loss[1]) < 1e-6
    half = torch.tensor([[5.0, 0.0, 15.0, 10.0]], requires_grad=True)
    value = giou_loss_torch(half, a[:1])  # IoU 1/3, enclosure 150, union 150: GIoU = 1/3
    assert torch.allclose(value, torch.tensor([2 / 3]), atol=1e-5)
    value.sum().backward()
    assert torch.isfinite(half.grad).all() and half.grad.abs().sum() > 0
    degenerate = torch.zeros(1, 4, requires_grad=True)
    giou_loss_torch(degenerate, a[:1]).sum().backward()
    assert torch.isfinite(degenerate.grad).all()


# --------------------------------------------------------------------------- mAP


def _gt_list():
    return [
        (np.array([[10, 10, 50, 60], [60, 20, 90, 40]], np.float32), np.array([0, 2]), 100, 80, 1),
        (np.array([[5, 5, 30, 30]], np.float32), np.array([1]), 64, 48, 7),
        (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 32, 32, 9),
    ]


def _as_predictions(gt, shift: float = 0.0):
    return [{"boxes": boxes + shift, "scores": np.ones(len(boxes)), "labels": labels, "image_id": image_id}
            for boxes, labels, _, _, image_id in gt]


def test_map_of_ground_truth_is_one_and_shifted_lower():
    gt = _gt_list()
    perfect = coco_map(gt, _as_predictions(gt), num_classes=3)
    assert perfect == pytest.approx({"map": 1.0, "map50": 1.0})
    shifted = coco_map(gt, _as_predictions(gt, shift=4.0), num_classes=3)
    assert shifted["map"] < 0.9 and shifted["map50"] <= 1.0
    far = coco_map(gt, _as_predictions(gt, shift=40.0), num_classes=3)
    assert far["map"] == 0.0 and far["map50"] == 0.0


def test_map_empty_predictions_and_wrong_label_are_handled():
    gt = _gt_list()
    assert coco_map(gt, []) == {"map": 0.0, "map50": 0.0}
    no_dets = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0), "image_id": 1}]
    assert coco_map(gt, no_dets, num_classes=3) == {"map": 0.0, "map50": 0.0}
    wrong = _as_predictions(gt)
    wrong[0]["labels"] = np.array([1, 1])
    assert coco_map(gt, wrong, num_classes=3)["map"] < 1.0
    with pytest.raises(ValueError, match="image_id 123"):
        coco_map(gt, [{**_as_predictions(gt)[0], "image_id": 123}], num_classes=3)
    with pytest.raises(ValueError, match="no boxes"):
        coco_map([gt[2]], [], num_classes=3)


def test_map_silent_and_accepts_a_dataset(capsys):
    ds = make_synthetic(4, image_size=64, seed=3, split="val")
    preds = []
    for i in range(len(ds)):
        boxes, labels, _, _, image_id, _ = ds.annotations(i)
        preds.append({"boxes": boxes, "scores": np.linspace(1, 0.5, len(boxes)), "labels": labels, "image_id": image_id})
    assert coco_map(ds, preds) == pytest.approx({"map": 1.0, "map50": 1.0})
    assert capsys.readouterr().out == ""  # pycocotools prints nothing through us


def test_map_reads_the_same_figures_as_cocoeval_summarize():
    """The narrowed evaluation (area 'all', 100 detections) must print what COCOeval's own
    full evaluation and summarize() print, on noisy predictions of every kind: shifted,
    missed, extra, wrong-class, more than 100 of a class in an image, a class never in the
    ground truth and an image without boxes."""
    rng = np.random.default_rng(0)
    gt, preds = [], []
    for image_id in range(12):
        n = int(rng.integers(1, 8))
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(4, 120, (n, 2))], 1).astype(np.float32)  # small to large
        labels = rng.integers(0, 4, n)
        gt.append((boxes, labels, 320, 320, image_id))
        keep = rng.random(n) < 0.8
        noisy = boxes[keep] + rng.normal(0, 6, (int(keep.sum()), 4)).astype(np.float32)
        extra_xy = rng.uniform(0, 250, (130, 2))
        extra = np.concatenate([extra_xy, extra_xy + rng.uniform(4, 60, (130, 2))], 1).astype(np.float32)
        preds.append({"boxes": np.concatenate([noisy, extra]),
                      "scores": np.concatenate([rng.uniform(0.3, 1.0, len(noisy)), rng.uniform(0.0, 0.6, 130)]),
                      "labels": np.concatenate([np.where(rng.random(len(noisy)) < 0.9, labels[keep], 3), rng.integers(0, 4, 130)]),
                      "image_id": image_id})
    # More than COCOeval's 100 detections of one class in one image, an image without a
    # box, and a class (4) that is predicted but never in the ground truth.
    gt.append((np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 320, 320, 99))
    crowd_xy = rng.uniform(0, 250, (150, 2))
    preds[0] = {"boxes": np.concatenate([preds[0]["boxes"], np.concatenate([crowd_xy, crowd_xy + 30], 1)]),
                "scores": np.concatenate([preds[0]["scores"], rng.uniform(0, 1, 150)]),
                "labels": np.concatenate([preds[0]["labels"], np.full(150, int(gt[0][1][0]))]), "image_id": 0}
    preds.append({"boxes": np.array([[5, 5, 40, 40], [10, 10, 50, 60]], np.float32), "scores": np.array([0.9, 0.4]),
                  "labels": np.array([4, 1]), "image_id": 99})
    fast = coco_map(gt, preds, num_classes=5)
    full = coco_map(gt, preds, num_classes=5, full_summary=True)
    assert 0.05 < full["map"] < full["map50"] < 0.95  # a case where the figures mean something
    assert fast == pytest.approx(full, abs=1e-12)
