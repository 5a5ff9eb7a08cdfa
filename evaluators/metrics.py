"""COCO-style mAP with pycocotools, built in memory (no JSON files on disk).

Ground truth is per image ``(boxes, labels, width, height, image_id)`` with xyxy pixel
boxes and contiguous labels; a :class:`~evaluators.datasets.DetectionDataset` gives
exactly that through ``annotations(i)`` (no image decoding). Predictions are per image
``{"boxes", "scores", "labels", "image_id"}`` as produced by
:func:`evaluators.boxes.postprocess` plus the image id.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

GroundTruth = tuple  # (boxes (N,4) xyxy, labels (N,), width, height, image_id)


def _ground_truth(dataset_or_gt: Any) -> tuple[list[GroundTruth], int | None]:
    """Per-image ground truth and, for a dataset, its number of classes."""
    if hasattr(dataset_or_gt, "annotations") and hasattr(dataset_or_gt, "class_names"):
        gt = [tuple(dataset_or_gt.annotations(i)[:5]) for i in range(len(dataset_or_gt))]
        return gt, len(dataset_or_gt.class_names)
    return [tuple(g)[:5] for g in dataset_or_gt], None


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _coco_gt_dict(gt: Sequence[GroundTruth], num_classes: int) -> dict:
    images, annotations = [], []
    for boxes, labels, width, height, image_id in gt:
        images.append({"id": int(image_id), "width": int(width), "height": int(height)})
        for box, label in zip(_xywh(boxes), np.asarray(labels).reshape(-1)):
            annotations.append({
                # ids start at 1: COCOeval marks "unmatched" with id 0.
                "id": len(annotations) + 1, "image_id": int(image_id), "category_id": int(label),
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
            })
    categories = [{"id": c, "name": str(c)} for c in range(num_classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _coco_dt_annotations(predictions: Iterable[Mapping[str, Any]], image_ids: set[int], num_classes: int) -> list[dict]:
    dets = []
    for pred in predictions:
        image_id = int(pred["image_id"])
        if image_id not in image_ids:
            raise ValueError(f"prediction for image_id {image_id}, which is not in the ground truth; "
                             f"predictions must use the dataset's image ids")
        labels = np.asarray(pred["labels"]).reshape(-1)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"prediction for image_id {image_id} has label {int(labels.max())} outside "
                             f"0..{num_classes - 1}")
        xywh = _xywh(pred["boxes"])
        # tolist() gives Python numbers in one call per array rather than a float() per value.
        for box, area, score, label in zip(xywh.tolist(), (xywh[:, 2] * xywh[:, 3]).tolist(),
                                           np.asarray(pred["scores"], dtype=np.float64).reshape(-1).tolist(),
                                           labels.astype(np.int64).tolist()):
            dets.append({"id": len(dets) + 1, "image_id": image_id, "category_id": label,
                         "bbox": box, "score": score, "area": area, "iscrowd": 0})
    return dets


def coco_map(dataset_or_gt: Any, predictions: Sequence[Mapping[str, Any]], num_classes: int | None = None,
             full_summary: bool = False) -> dict[str, float]:
    """COCO bbox mAP: ``{"map": mAP@[.5:.95], "map50": mAP@.5}``.

    ``dataset_or_gt`` is a DetectionDataset or a list of per-image
    ``(boxes, labels, width, height, image_id)``; ``predictions`` a list of per-image
    dicts ``boxes`` (xyxy px), ``scores``, ``labels``, ``image_id``. Images without a
    prediction count as having detected nothing. Categories are ``range(num_classes)``
    (the dataset's classes, else 1 + the largest label seen). No detections at all
    gives 0.0; ground truth without a single box raises ValueError (mAP is undefined).
    pycocotools' printing is silenced. The figures are COCOeval's ``stats[0]`` and
    ``stats[1]``; by default only the area range and detection limit those two use are
    evaluated, which gives the same numbers faster; ``full_summary=True`` runs COCOeval's
    whole default evaluation and ``summarize()`` (so a test can compare the two).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dataset_classes = _ground_truth(dataset_or_gt)
    predictions = list(predictions)
    if num_classes is None:
        num_classes = dataset_classes
    if num_classes is None:
        seen = [np.asarray(g[1]).reshape(-1) for g in gt] + [np.asarray(p["labels"]).reshape(-1) for p in predictions]
        num_classes = int(max((s.max() for s in seen if s.size), default=-1)) + 1
    gt_dict = _coco_gt_dict(gt, num_classes)
    if not gt_dict["annotations"]:
        raise ValueError("the ground truth has no boxes, so mAP is undefined; evaluate on images with objects")
    if len({im["id"] for im in gt_dict["images"]}) != len(gt_dict["images"]):
        raise ValueError("ground-truth image ids are not unique; COCO evaluation needs one id per image")
    dets = _coco_dt_annotations(predictions, {im["id"] for im in gt_dict["images"]}, num_classes)
    if not dets:
        return {"map": 0.0, "map50": 0.0}

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": gt_dict["images"], "categories": gt_dict["categories"], "annotations": dets}
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if not full_summary:
            # The two figures use only the "all" area range at 100 detections. COCOeval
            # matches every (image, class) once per area range and accumulates once per
            # (area range, max detections): the other three ranges and maxDets 1 and 10
            # would be three quarters of the matching, for nothing.
            evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0, 1e5 ** 2]], ["all"]
            evaluator.params.maxDets = [100]
        evaluator.evaluate()
        evaluator.accumulate()
        if full_summary:
            evaluator.summarize()
    if full_summary:  # stats are -1 when undefined (no gt box counts): 0 then, as below
        return {"map": max(float(evaluator.stats[0]), 0.0), "map50": max(float(evaluator.stats[1]), 0.0)}
    return _map_and_map50(evaluator)


def _map_and_map50(evaluator) -> dict[str, float]:
    """mAP@[.5:.95] and mAP@.5 from an accumulated COCOeval, read exactly as its
    ``summarize()`` reads ``stats[0]`` and ``stats[1]`` (area "all", 100 detections, the last maxDets here):
    the mean precision over every cell that is defined (-1 marks an undefined one)."""
    params = evaluator.params
    precision = evaluator.eval["precision"][:, :, :, params.areaRngLbl.index("all"), len(params.maxDets) - 1]
    at_50 = precision[np.isclose(params.iouThrs, 0.5)]

    def mean_defined(p: np.ndarray) -> float:
        defined = p[p > -1]
        # Undefined only when no gt box counts (e.g. every one degenerate, area < 0): 0, as before.
        return float(defined.mean()) if defined.size else 0.0

    return {"map": mean_defined(precision), "map50": mean_defined(at_50)}
