"""The generated dataset: determinism, box correctness, variety, and the YOLO round trip."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluators.datasets import DetectionDataset, check_dataset, load_dataset
from evaluators.synthetic import (
    ASPECT_RANGE, MAX_OBJECT_FRACTION, MAX_OBJECTS, MIN_OBJECT_PX, MIN_VISIBLE, PREFERRED_TEXTURE,
    SYNTHETIC_CLASSES, TEXTURES, _full_mask, _image_rngs, _layout, make_synthetic, preview_grid, write_synthetic,
)

REPO = Path(__file__).resolve().parents[1]


def test_same_seed_same_pixels_other_seed_or_split_differs():
    a, b = make_synthetic(3, 96, seed=5), make_synthetic(3, 96, seed=5)
    for i in range(3):
        sa, sb = a[i], b[i]
        np.testing.assert_array_equal(sa.image, sb.image)
        np.testing.assert_array_equal(sa.boxes, sb.boxes)
        np.testing.assert_array_equal(sa.labels, sb.labels)
    other = make_synthetic(3, 96, seed=6)
    val = make_synthetic(3, 96, seed=5, split="val")
    for i in range(3):
        assert not np.array_equal(a[i].image, other[i].image)
        assert not np.array_equal(a[i].image, val[i].image)
    # access order does not matter: each image has its own seed
    np.testing.assert_array_equal(make_synthetic(3, 96, seed=5)[2].image, a[2].image)


def test_identical_in_another_process():
    """No salted hash() in the seeding: a fresh interpreter draws the same image."""
    code = ("import numpy as np; from evaluators.synthetic import make_synthetic; "
            "s = make_synthetic(2, 64, seed=11, split='val')[1]; "
            "print(int(s.image.astype(np.int64).sum()), s.boxes.round(3).tolist())")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    s = make_synthetic(2, 64, seed=11, split="val")[1]
    assert out.stdout.strip() == f"{int(s.image.astype(np.int64).sum())} {s.boxes.round(3).tolist()}"


def test_is_a_detection_dataset():
    ds = make_synthetic(4, 64, seed=0, split="val")
    assert isinstance(ds, DetectionDataset)
    assert ds.format == "synthetic" and ds.split == "val" and len(ds) == 4
    assert ds.class_names == list(SYNTHETIC_CLASSES) and len(SYNTHETIC_CLASSES) == 6
    sample = ds[-1]
    assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
    assert sample.boxes.dtype == np.float32 and sample.labels.dtype == np.int64 and sample.image_id == 3
    boxes, labels, width, height, image_id, file = ds.annotations(3)
    np.testing.assert_array_equal(boxes, sample.boxes)  # no rendering needed for the boxes
    np.testing.assert_array_equal(labels, sample.labels)
    assert (width, height, image_id, file) == (64, 64, 3, sample.file)
    assert len(list(ds)) == 4 and len(ds[1:3]) == 2
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic(2, image_size=16)


def _layouts(n: int, size: int, seed: int = 0):
    return [_layout(_image_rngs(seed, "train", i)[0], size) for i in range(n)]


def test_boxes_are_tight_clipped_and_objects_visible():
    size = 128
    for objects in _layouts(40, size, seed=1):
        assert 1 <= len(objects) <= MAX_OBJECTS
        owner = np.full((size, size), -1)
        full = []
        for k, obj in enumerate(objects):
            placed = _full_mask(obj.mask, obj.x0, obj.y0, size)
            ys, xs = np.nonzero(placed)
            # tight: the clipped box is exactly the in-image extent of the full object
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert 0 <= obj.box[0] < obj.box[2] <= size and 0 <= obj.box[1] < obj.box[3] <= size
            owner[placed] = k
            full.append(placed.sum())
        for k in range(len(objects)):  # occlusion is partial: every object stays mostly visible
            assert (owner == k).sum() >= MIN_VISIBLE * full[k] - 1e-9


def test_scales_aspects_classes_and_textures_vary():
    size = 256
    objects = [o for layout in _layouts(150, size, seed=2) for o in layout]
    h_w = np.array([o.mask.shape for o in objects])
    long_side = h_w.max(axis=1)
    assert long_side.min() >= MIN_OBJECT_PX - 1 and long_side.max() <= MAX_OBJECT_FRACTION * size + 1
    assert long_side.min() < 16 and long_side.max() > 0.35 * size  # the whole range is used
    aspect = h_w[:, 1] / h_w[:, 0]
    assert aspect.min() >= ASPECT_RANGE[0] * 0.9 and aspect.max() <= ASPECT_RANGE[1] * 1.1
    assert aspect.min() < 0.6 and aspect.max() > 1.7
    counts = Counter(len(layout) for layout in _layouts(60, size, seed=3))
    assert min(counts) == 1 and max(counts) >= 7
    assert set(Counter(o.label for o in objects)) == set(range(6))
    for label, kind in enumerate(SYNTHETIC_CLASSES):
        textures = Counter(o.texture for o in objects if o.label == label)
        share = textures[PREFERRED_TEXTURE[kind]] / sum(textures.values())
        assert 0.4 < share < 0.9, (kind, textures)  # texture is a hint, not the answer
        assert len(textures) >= 3  # other fills do occur
    assert set(PREFERRED_TEXTURE.values()) == set(TEXTURES)


def test_images_are_not_trivial():
    ds = make_synthetic(6, 128, seed=4)
    for i in range(len(ds)):
        s = ds[i]
        outside = np.ones(s.image.shape[:2], dtype=bool)
        for x1, y1, x2, y2 in s.boxes.astype(int):
            outside[y1:y2, x1:x2] = False
        background = s.image[outside].astype(np.float64)
        assert background.std(axis=0).mean() > 8  # gradients, blobs, clutter: not a flat field
        assert len(np.unique(s.image.reshape(-1, 3), axis=0)) > 1000


def test_generation_is_fast_enough():
    ds = make_synthetic(10, 256, seed=0)
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    assert (time.perf_counter() - start) / len(ds) < 0.25  # ~20-40 ms on one core; generous for a shared CI box


def test_write_synthetic_round_trips_through_yolo_loader(tmp_path):
    yaml_path = write_synthetic(tmp_path / "synth", n_train=3, n_val=2, image_size=64, seed=9)
    assert yaml_path == tmp_path / "synth" / "data.yaml"
    loaded = load_dataset(tmp_path / "synth", "train")
    assert loaded.format == "yolo" and loaded.class_names == list(SYNTHETIC_CLASSES)
    generated = make_synthetic(3, 64, seed=9)
    for i in range(3):
        got, want = loaded[i], generated[i]
        np.testing.assert_array_equal(got.image, want.image)  # PNG is lossless
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-6 * 64 + 1e-4)
        np.testing.assert_array_equal(got.labels, want.labels)
        assert got.image_id == i
    report = check_dataset(tmp_path / "synth")
    assert report.ok, report.summary()
    assert report.splits["val"].images == 2


def test_preview_grid(tmp_path):
    grid = preview_grid(make_synthetic(3, 64, seed=0), range(3), columns=2)
    assert grid.size == (128, 128)
    grid.save(tmp_path / "preview.png")
    assert Image.open(tmp_path / "preview.png").size == (128, 128)
