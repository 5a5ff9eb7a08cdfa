"""The built-in detection dataset: generated on the fly, no download, deterministic.

Six classes (:data:`SYNTHETIC_CLASSES`) that differ in shape; each also prefers one
fill texture (solid / striped / checkered / noisy) but only about half of the time, so
texture alone cannot name the class and a detector has to learn shape. Objects span
12 px to 45 % of the image, aspect ratios 0.5-2, 1-8 per image, may leave the frame
(the box covers the part inside) and may overlap (boxes are of the full object; every object
keeps at least :data:`MIN_VISIBLE` of its pixels visible). Backgrounds are gradients,
low-frequency colour noise, soft blobs and lines; clutter is small shapes, arcs, bars
and lines coloured like the objects, which are not objects.

Every image is a pure function of ``(seed, split, index)``: the same seed always gives
identical pixels, and ``train`` and ``val`` never share an image. Boxes come from the
rasterised object masks, so they are tight to the pixel: ``(x1, y1, x2, y2)`` with
pixel column ``j`` spanning ``[j, j+1)``, around the whole object (occluded parts
included) as far as it lies inside the image.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .datasets import DetectionDataset, DetectionSample, PathLike

SYNTHETIC_CLASSES = ("circle", "square", "triangle", "ring", "cross", "star")
TEXTURES = ("solid", "striped", "checkered", "noisy")
# Each class's favourite fill: drawn with probability PREFERRED_TEXTURE_P, otherwise any
# of the other three, so texture is a hint, never the answer.
PREFERRED_TEXTURE = {"circle": "solid", "square": "checkered", "triangle": "striped",
                     "ring": "noisy", "cross": "striped", "star": "checkered"}
PREFERRED_TEXTURE_P = 0.55

MIN_OBJECT_PX = 12           # smallest long side of an object
MAX_OBJECT_FRACTION = 0.45   # largest long side, as a fraction of the image side
ASPECT_RANGE = (0.5, 2.0)    # width / height
MAX_OBJECTS = 8
MIN_VISIBLE = 0.45           # fraction of an object's in-image pixels left unoccluded
MIN_IN_FRAME = 0.6           # fraction of an object's pixels inside the image
MIN_IMAGE_SIZE = 32
_PLACEMENT_TRIES = 25


# --------------------------------------------------------------------------- seeding


def _image_rngs(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent generators for one image: layout (boxes) and paint (pixels).

    Keeping them apart lets :meth:`SyntheticDataset.annotations` compute boxes without
    painting, and crc32 (unlike ``hash``) is stable across processes.
    """
    ss = np.random.SeedSequence([int(seed) % 2**63, zlib.crc32(split.encode("utf-8")), int(index)])
    layout, paint = ss.spawn(2)
    return np.random.default_rng(layout), np.random.default_rng(paint)


# --------------------------------------------------------------------------- shapes


def _normalised_polygon(points: np.ndarray, w: int, h: int) -> list[tuple[float, float]]:
    """Stretch a polygon so its extent is exactly the ``w x h`` box (tight by design)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    scaled = (points - lo) / np.maximum(hi - lo, 1e-9) * np.array([w - 1, h - 1])
    return [(float(x), float(y)) for x, y in scaled]


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _star_points(inner: float, angle: float) -> np.ndarray:
    k = np.arange(10)
    radius = np.where(k % 2 == 0, 1.0, inner)
    theta = angle + k * np.pi / 5
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)


def _cross_points(t: float) -> np.ndarray:
    """A plus sign of arm half-thickness ``t`` (arm length 1)."""
    return np.array([(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1),
                     (-t, t), (-1, t), (-1, -t), (-t, -t)], dtype=np.float64)


def _shape_mask(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``(h, w)`` mask of one object whose extent is the whole ``w x h`` box."""
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    if kind == "circle":
        draw.ellipse([0, 0, w - 1, h - 1], fill=1)
    elif kind == "square":
        draw.rectangle([0, 0, w - 1, h - 1], fill=1)
    elif kind == "ring":
        draw.ellipse([0, 0, w - 1, h - 1], fill=1)
        r = rng.uniform(0.45, 0.68)  # hole size: the ring must stay a ring at 12 px
        dx, dy = (w - 1) * (1 - r) / 2, (h - 1) * (1 - r) / 2
        draw.ellipse([dx, dy, w - 1 - dx, h - 1 - dy], fill=0)
    elif kind == "triangle":
        angles = np.deg2rad(90 + np.array([0, 120, 240]) + rng.uniform(-12, 12, 3)) + rng.uniform(0, 2 * np.pi)
        pts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        draw.polygon(_normalised_polygon(pts, w, h), fill=1)
    elif kind == "cross":
        pts = _rotate(_cross_points(rng.uniform(0.26, 0.4)), rng.uniform(-0.3, 0.3))
        draw.polygon(_normalised_polygon(pts, w, h), fill=1)
    elif kind == "star":
        pts = _star_points(rng.uniform(0.38, 0.55), rng.uniform(0, 2 * np.pi))
        draw.polygon(_normalised_polygon(pts, w, h), fill=1)
    else:
        raise ValueError(f"unknown synthetic shape {kind!r}; known: {SYNTHETIC_CLASSES}")
    return np.asarray(im, dtype=bool)


# --------------------------------------------------------------------------- layout


@dataclass
class _Object:
    label: int
    x0: int                 # image column of the mask's left edge (may be negative)
    y0: int
    mask: np.ndarray        # (h, w) bool, the full object
    texture: str
    color: np.ndarray       # (3,) float, main fill colour 0..255
    color2: np.ndarray      # (3,) float, second colour of stripes / checks / speckle
    box: tuple[float, float, float, float]  # tight xyxy of the object's in-image pixels


def _random_color(rng: np.random.Generator, s_range=(0.35, 1.0), v_range=(0.3, 1.0)) -> np.ndarray:
    """A random RGB colour (0..255 floats) from an HSV draw."""
    h, s, v = rng.random(), rng.uniform(*s_range), rng.uniform(*v_range)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32) * np.float32(255.0)


def _second_color(color: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A contrasting colour: the same hue darker/lighter, or an unrelated colour."""
    if rng.random() < 0.5:
        factor = rng.uniform(0.3, 0.6) if color.mean() > 110 else rng.uniform(1.6, 2.4)
        return np.clip(color * factor + (0 if factor < 1 else 30), 0, 255)
    return _random_color(rng)


def _object_size(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    """``(w, h)``: long side log-uniform in [12 px, 45 % of the image], aspect 0.5-2."""
    long_max = max(MIN_OBJECT_PX, MAX_OBJECT_FRACTION * image_size)
    long_side = np.exp(rng.uniform(np.log(MIN_OBJECT_PX), np.log(long_max)))
    aspect = np.exp(rng.uniform(np.log(ASPECT_RANGE[0]), np.log(ASPECT_RANGE[1])))
    if aspect >= 1:
        w, h = long_side, long_side / aspect
    else:
        w, h = long_side * aspect, long_side
    return max(int(round(w)), 6), max(int(round(h)), 6)


def _full_mask(mask: np.ndarray, x0: int, y0: int, size: int) -> np.ndarray:
    """The object's mask pasted into a ``size x size`` image (clipped at the borders)."""
    out = np.zeros((size, size), dtype=bool)
    h, w = mask.shape
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, size), min(y0 + h, size)
    if xa < xb and ya < yb:
        out[ya:yb, xa:xb] = mask[ya - y0:yb - y0, xa - x0:xb - x0]
    return out


def _tight_box(placed: np.ndarray) -> tuple[float, float, float, float]:
    """Tight xyxy of an object's in-image pixels (``placed``: its full mask in the image).

    Amodal for occlusion (other objects hiding it do not shrink the box) but not for
    the frame: a part outside the image cannot be seen, so like a human annotator the
    box hugs what is inside, which is tighter than clipping the out-of-frame extent.
    """
    rows, cols = np.nonzero(placed.any(axis=1))[0], np.nonzero(placed.any(axis=0))[0]
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _try_place(
    mask: np.ndarray, size: int, owner: np.ndarray, full_area: list[int], rng: np.random.Generator, inside: bool,
) -> tuple[int, int, np.ndarray] | None:
    """A position for ``mask`` that keeps it mostly in frame and every object visible.

    ``owner`` maps each pixel to the index of the topmost object (-1: none);
    ``full_area[k]`` is object k's in-image pixel count. Returns ``(x0, y0, placed mask)``
    or None if this random position breaks a constraint.
    """
    h, w = mask.shape
    if inside:
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    else:  # up to a quarter of the object may leave the frame on any side
        x0 = int(rng.integers(-w // 4, size - (3 * w) // 4 + 1))
        y0 = int(rng.integers(-h // 4, size - (3 * h) // 4 + 1))
    placed = _full_mask(mask, x0, y0, size)
    in_frame = int(placed.sum())
    if in_frame < MIN_IN_FRAME * mask.sum() or in_frame < 16:
        return None
    covered = np.bincount(owner[placed] + 1, minlength=len(full_area) + 1)[1:]
    visible = np.bincount(owner.ravel() + 1, minlength=len(full_area) + 1)[1:]
    if any(visible[k] - covered[k] < MIN_VISIBLE * full_area[k] for k in range(len(full_area))):
        return None
    return x0, y0, placed


def _layout(rng: np.random.Generator, size: int) -> list[_Object]:
    """Draw the objects of one image (classes, geometry, fills), bottom to top."""
    n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    owner = np.full((size, size), -1, dtype=np.int16)
    objects: list[_Object] = []
    full_area: list[int] = []
    for _ in range(n_objects):
        label = int(rng.integers(len(SYNTHETIC_CLASSES)))
        kind = SYNTHETIC_CLASSES[label]
        w, h = _object_size(rng, size)
        mask = _shape_mask(kind, w, h, rng)
        preferred = PREFERRED_TEXTURE[kind]
        others = [t for t in TEXTURES if t != preferred]
        texture = preferred if rng.random() < PREFERRED_TEXTURE_P else others[int(rng.integers(len(others)))]
        color = _random_color(rng)
        color2 = _second_color(color, rng)
        placement = None
        for attempt in range(_PLACEMENT_TRIES):
            # The first object must exist: its last tries are fully inside an empty image.
            inside = not objects and attempt >= _PLACEMENT_TRIES // 2
            placement = _try_place(mask, size, owner, full_area, rng, inside)
            if placement is not None:
                break
        if placement is None:
            continue  # the image is too crowded for this one: fewer objects, not a broken one
        x0, y0, placed = placement
        owner[placed] = len(objects)
        full_area.append(int(placed.sum()))
        objects.append(_Object(label, x0, y0, mask, texture, color, color2, _tight_box(placed)))
    return objects


# --------------------------------------------------------------------------- painting


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w]
    return xs.astype(np.float32), ys.astype(np.float32)


def _texture(kind: str, h: int, w: int, c1: np.ndarray, c2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(h, w, 3)`` float fill of one texture kind in colours ``c1`` / ``c2``."""
    xs, ys = _coords(h, w)
    theta = rng.uniform(0, np.pi)
    u = xs * np.cos(theta) + ys * np.sin(theta)
    if kind == "solid":
        # Gentle shading so a solid object is not a flat, perfectly separable patch.
        ramp = (u - u.min()) / max(float(np.ptp(u)), 1.0) - 0.5
        return c1[None, None, :] * (1 + rng.uniform(0.1, 0.3) * ramp[..., None])
    if kind == "striped":
        period = rng.uniform(3, 9)
        on = (u / period) % 1.0 < 0.5
        return np.where(on[..., None], c1, c2)
    if kind == "checkered":
        cell = rng.uniform(3, 8)
        if rng.random() < 0.4:  # rotated checks
            a, b = u, -xs * np.sin(theta) + ys * np.cos(theta)
        else:
            a, b = xs, ys
        on = (np.floor(a / cell) + np.floor(b / cell)) % 2 == 0
        return np.where(on[..., None], c1, c2)
    if kind == "noisy":
        base = c1[None, None, :] + rng.normal(0, 28, (h, w, 1)) + rng.normal(0, 10, (h, w, 3))
        speckle = rng.random((h, w)) < 0.2
        return np.where(speckle[..., None], c2, base)
    raise ValueError(f"unknown texture {kind!r}; known: {TEXTURES}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient + low-frequency colour noise + soft blobs + faint lines, ``(S, S, 3)`` float."""
    xs, ys = _coords(size, size)
    phi = rng.uniform(0, 2 * np.pi)
    t = (xs * np.cos(phi) + ys * np.sin(phi)) / size
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    ca, cb = _random_color(rng, (0.0, 0.7), (0.2, 0.95)), _random_color(rng, (0.0, 0.7), (0.2, 0.95))
    img = ca * (1 - t[..., None]) + cb * t[..., None]
    grid = int(rng.integers(3, 9))
    low = rng.normal(0, rng.uniform(8, 30), (grid, grid, 3)).astype(np.float32)
    img += np.stack([np.asarray(Image.fromarray(low[..., c]).resize((size, size), Image.BILINEAR)) for c in range(3)], -1)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(2, 7))):  # soft blobs
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.05, 0.3, 2) * size
        alpha, blur = int(rng.uniform(60, 160)), rng.uniform(2, 8)
        color = tuple(int(c) for c in _random_color(rng, (0.0, 0.8)))
        # Drawn and blurred on its own patch (blur margin included), not the whole image.
        margin = int(3 * blur) + 1
        left, top = int(cx - rx) - margin, int(cy - ry) - margin
        patch = Image.new("L", (int(2 * rx) + 2 * margin + 2, int(2 * ry) + 2 * margin + 2), 0)
        ImageDraw.Draw(patch).ellipse([cx - rx - left, cy - ry - top, cx + rx - left, cy + ry - top], fill=alpha)
        patch = patch.filter(ImageFilter.GaussianBlur(blur))
        canvas.paste(Image.new("RGB", patch.size, color), (left, top), patch)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 6))):  # long faint lines, like edges of a scene
        pts = [tuple(rng.uniform(-0.1, 1.1, 2) * size) for _ in range(2)]
        draw.line(pts, fill=tuple(int(c) for c in _random_color(rng, (0.0, 0.6))), width=int(rng.integers(1, 4)))
    return np.asarray(canvas, dtype=np.float32)


def _distractor_mask(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int, int] | None:
    """Mask of one piece of clutter, not one of the six object shapes: ``(mask, x0, y0)``.

    The mask is cropped to the clutter's extent, ``(x0, y0)`` is its top-left pixel;
    None if it fell outside the image.

    Lines, dots smaller than any object, irregular blobs, open arcs and thin bars
    (aspect 4-8, beyond any object's 0.5-2).
    """
    im = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(im)
    kind = int(rng.integers(5))
    cx, cy = rng.uniform(0, size, 2)
    if kind == 0:
        length, angle = rng.uniform(10, 0.35 * size), rng.uniform(0, 2 * np.pi)
        end = (cx + length * np.cos(angle), cy + length * np.sin(angle))
        draw.line([(cx, cy), end], fill=1, width=int(rng.integers(1, 4)))
    elif kind == 1:
        r = rng.uniform(1.5, 4)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif kind == 2:
        k = int(rng.integers(7, 12))
        theta = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(3, 8) * rng.uniform(0.6, 1.0, k)
        draw.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for a, r in zip(theta, radius)], fill=1)
    elif kind == 3:
        r = rng.uniform(6, 0.15 * size)
        start = rng.uniform(0, 360)
        draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(60, 200), fill=1,
                 width=int(rng.integers(2, 4)))
    else:
        thick = rng.uniform(2.5, 5)
        length = thick * rng.uniform(4, 8)
        pts = _rotate(np.array([(-length, -thick), (length, -thick), (length, thick), (-length, thick)]) / 2,
                      rng.uniform(0, np.pi)) + np.array([cx, cy])
        draw.polygon([tuple(p) for p in pts], fill=1)
    bbox = im.getbbox()
    if bbox is None:
        return None
    return np.asarray(im.crop(bbox), dtype=bool), bbox[0], bbox[1]


def _paint_distractors(img: np.ndarray, n: int, palette: Sequence[np.ndarray], rng: np.random.Generator) -> None:
    """Paint ``n`` clutter items in place, coloured like the objects (``palette``)."""
    size = img.shape[0]
    for _ in range(n):
        drawn = _distractor_mask(rng, size)
        if drawn is None:
            continue
        mask, x0, y0 = drawn
        region = img[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        if rng.random() < 0.75 and palette:
            color = np.clip(palette[int(rng.integers(len(palette)))] + rng.normal(0, 18, 3), 0, 255)
        else:
            color = _random_color(rng)
        if rng.random() < 0.3:  # textured clutter, so texture is no giveaway either
            kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
            fill = _texture(kind, mask.shape[0], mask.shape[1], color, _second_color(color, rng), rng)
            region[mask] = fill[mask]
        else:
            region[mask] = color


def _paint_object(img: np.ndarray, obj: _Object, rng: np.random.Generator) -> None:
    """Paint one object in place over whatever is below it."""
    size = img.shape[0]
    h, w = obj.mask.shape
    fill = _texture(obj.texture, h, w, obj.color, obj.color2, rng)
    xa, ya, xb, yb = max(obj.x0, 0), max(obj.y0, 0), min(obj.x0 + w, size), min(obj.y0 + h, size)
    local = obj.mask[ya - obj.y0:yb - obj.y0, xa - obj.x0:xb - obj.x0]
    region = img[ya:yb, xa:xb]
    region[local] = fill[ya - obj.y0:yb - obj.y0, xa - obj.x0:xb - obj.x0][local]


def _render(objects: list[_Object], size: int, rng: np.random.Generator) -> np.ndarray:
    """Pixels of one image: background, clutter below, objects, clutter on top, noise."""
    img = _background(rng, size)
    palette = [o.color for o in objects] + [o.color2 for o in objects]
    n_clutter = int(rng.integers(3, 14))
    n_top = int(rng.binomial(n_clutter, 0.3))
    _paint_distractors(img, n_clutter - n_top, palette, rng)
    for obj in objects:
        _paint_object(img, obj, rng)
    _paint_distractors(img, n_top, palette, rng)
    contrast, brightness = rng.uniform(0.75, 1.15), rng.uniform(-20, 20)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(2, 9)
    img = (img - 128) * contrast + 128 + brightness + noise
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:  # mild blur: camera-like edges, and fine stripes get harder
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.9)))
    return np.asarray(out, dtype=np.uint8)


# --------------------------------------------------------------------------- dataset


class SyntheticDataset(DetectionDataset):
    """``n_images`` generated images of one split; a :class:`DetectionDataset`.

    Nothing is stored: ``annotations(i)`` recomputes the layout (cheap, no painting)
    and ``self[i]`` renders the pixels, both from the seed of ``(seed, split, i)``.
    """

    def __init__(self, n_images: int, image_size: int = 256, seed: int = 0, split: str = "train") -> None:
        if n_images < 0:
            raise ValueError(f"n_images must be >= 0, got {n_images}")
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE} px (objects are 12 px and up), got {image_size}")
        super().__init__([], SYNTHETIC_CLASSES, split, "synthetic", f"synthetic:seed={seed}")
        self.n_images = int(n_images)
        self.image_size = int(image_size)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.n_images

    def _name(self, i: int) -> str:
        return f"synthetic/{self.split}/{i:06d}.png"

    def _scene(self, index: int) -> tuple[int, list[_Object], np.random.Generator]:
        i = self._index(index)
        layout_rng, paint_rng = _image_rngs(self.seed, self.split, i)
        return i, _layout(layout_rng, self.image_size), paint_rng

    @staticmethod
    def _arrays(objects: list[_Object]) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.asarray([o.box for o in objects], dtype=np.float32).reshape(-1, 4)
        return boxes, np.asarray([o.label for o in objects], dtype=np.int64)

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray, int, int, int, str]:
        i, objects, _ = self._scene(index)
        boxes, labels = self._arrays(objects)
        return boxes, labels, self.image_size, self.image_size, i, self._name(i)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i, objects, paint_rng = self._scene(index)
        boxes, labels = self._arrays(objects)
        image = _render(objects, self.image_size, paint_rng)
        return DetectionSample(image=image, boxes=boxes, labels=labels, image_id=i, file=self._name(i))

    def __repr__(self) -> str:
        return (f"SyntheticDataset(split={self.split!r}, images={self.n_images}, "
                f"image_size={self.image_size}, seed={self.seed})")


def make_synthetic(n_images: int, image_size: int = 256, seed: int = 0, split: str = "train") -> SyntheticDataset:
    """The generated dataset: ``n_images`` images of ``image_size`` px, deterministic by seed."""
    return SyntheticDataset(n_images, image_size, seed, split)


def write_synthetic(out_dir: PathLike, n_train: int, n_val: int, image_size: int = 256, seed: int = 0) -> Path:
    """Write the generated dataset in YOLO layout; returns the path of its data.yaml.

    ``out_dir/images/{train,val}/000000.png``, ``out_dir/labels/{train,val}/000000.txt``
    (``class cx cy w h`` normalised, 6 decimals) and ``out_dir/data.yaml``, so it can be
    looked at and read back with ``load_dataset(out_dir)``.
    """
    import yaml

    out = Path(out_dir)
    for split, n in (("train", n_train), ("val", n_val)):
        image_dir, label_dir = out / "images" / split, out / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        dataset = make_synthetic(n, image_size, seed, split)
        for i in range(n):
            sample = dataset[i]
            Image.fromarray(sample.image).save(image_dir / f"{i:06d}.png")
            lines = []
            for (x1, y1, x2, y2), label in zip(sample.boxes.tolist(), sample.labels.tolist()):
                cx, cy = (x1 + x2) / 2 / image_size, (y1 + y2) / 2 / image_size
                w, h = (x2 - x1) / image_size, (y2 - y1) / image_size
                lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
            (label_dir / f"{i:06d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {"path": ".", "train": "images/train", "val": "images/val",
              "names": {i: name for i, name in enumerate(SYNTHETIC_CLASSES)}}
    yaml_path = out / "data.yaml"
    header = f"# Synthetic detection dataset, seed {seed}, {image_size} px (evaluators.synthetic.write_synthetic)\n"
    yaml_path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return yaml_path


def preview_grid(dataset: DetectionDataset, indices: Sequence[int], columns: int = 4, draw_boxes: bool = True) -> Image.Image:
    """A grid of ``dataset[i]`` images, optionally with boxes and class names drawn on."""
    samples = [dataset[i] for i in indices]
    if not samples:
        raise ValueError("preview_grid needs at least one index")
    cell = max(max(s.image.shape[:2]) for s in samples)
    rows = (len(samples) + columns - 1) // columns
    grid = Image.new("RGB", (columns * cell, rows * cell), (0, 0, 0))
    for k, s in enumerate(samples):
        tile = Image.fromarray(s.image)
        if draw_boxes:
            draw = ImageDraw.Draw(tile)
            for (x1, y1, x2, y2), label in zip(s.boxes.tolist(), s.labels.tolist()):
                draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(255, 255, 0))
                draw.text((x1 + 1, y1 + 1), dataset.class_names[label], fill=(255, 255, 0))
        grid.paste(tile, ((k % columns) * cell, (k // columns) * cell))
    return grid
