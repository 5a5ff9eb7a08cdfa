"""Detection datasets: one sample format, three on-disk layouts (COCO, YOLO, VOC).

Every loader produces the same thing: a :class:`DetectionDataset` whose items are
:class:`DetectionSample` (RGB uint8 image, xyxy pixel boxes, contiguous class ids
``0..C-1``). Annotations are read eagerly (they are small); images are decoded lazily
in ``__getitem__``, so building a dataset never decodes a pixel.

Problems in the data are collected as :class:`Problem` records (what, where, what to
do). :func:`load_dataset` raises one :class:`DatasetError` listing them (or, with
``strict=False``, drops the bad boxes/images and keeps the list on the dataset);
:func:`check_dataset` never raises for bad data: it reports every problem of every
split, including images that cannot be decoded.

Box conventions: xyxy, continuous pixel coordinates (pixel ``j`` spans ``[j, j+1)``),
so a full-image box is ``(0, 0, W, H)``. A box may poke out of the image by up to
:data:`BOX_TOLERANCE` pixels (rounding in annotation tools); it is clipped. Further out
is a problem.
"""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union, overload

import numpy as np
from PIL import Image

from search_spaces.errors import InputError

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("coco", "yolo", "voc")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
BOX_TOLERANCE = 1.0  # pixels a box may lie outside the image before it is a problem
_MAX_LISTED_PROBLEMS = 10  # problems spelled out in a DatasetError message


# --------------------------------------------------------------------------- records


@dataclass
class DetectionSample:
    """One image and its boxes.

    ``image`` is ``H x W x 3`` uint8 RGB; ``boxes`` ``(N, 4)`` float32 xyxy pixels;
    ``labels`` ``(N,)`` int64 in ``0..C-1``; ``file`` a path or a synthetic name.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int
    file: str


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    ``kind`` is one of :data:`PROBLEM_KINDS`; ``where`` names the file and the line or
    field; ``message`` says what is wrong and what to do about it.
    """

    kind: str
    where: str
    message: str
    split: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


PROBLEM_KINDS = (
    "bad_layout",         # the folder layout or a config file (data.yaml) is unusable
    "missing_split",      # a split's annotation file or image folder is absent
    "empty_split",        # a split with no images, or with images but no boxes at all
    "missing_image",      # an annotated image file does not exist
    "unreadable_image",   # an image file exists but cannot be opened / decoded
    "size_mismatch",      # decoded image size differs from the annotated size
    "bad_annotation",     # malformed JSON / XML / label line / field
    "unknown_class",      # a class id or name not among the dataset's classes
    "box_outside_image",  # a box beyond the image by more than BOX_TOLERANCE px
    "degenerate_box",     # a box of zero or negative width or height
)


class DatasetError(InputError):
    """A dataset that cannot be used as it is.

    The message says what is wrong, where (file and line or field) and what to do;
    ``problems`` holds the individual :class:`Problem` records behind it.
    """

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass
class ImageRecord:
    """Annotations of one image, everything but its pixels."""

    file: str
    width: int
    height: int
    image_id: int
    boxes: np.ndarray   # (N, 4) float32 xyxy pixels
    labels: np.ndarray  # (N,) int64


@dataclass
class _SplitData:
    """What a format reader returns for one split."""

    records: list[ImageRecord]
    class_names: list[str]
    problems: list[Problem]


# --------------------------------------------------------------------------- dataset


class DetectionDataset(Sequence[DetectionSample]):
    """A split of a detection dataset: annotations in memory, images decoded on demand.

    ``class_names[i]`` names class id ``i``; ``format`` is ``"coco"``, ``"yolo"``,
    ``"voc"`` or ``"synthetic"``; ``problems`` lists what a non-strict load dropped.
    Items are :class:`DetectionSample`; ``annotations(i)`` gives the same boxes without
    decoding the image.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        split: str,
        format: str,
        root: str,
        problems: Sequence[Problem] = (),
    ) -> None:
        self._records = list(records)
        self.class_names = list(class_names)
        self.split = split
        self.format = format
        self.root = str(root)
        self.problems = list(problems)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self._records)

    def _index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be integers, not {type(index).__name__}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        return i

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray, int, int, int, str]:
        """``(boxes, labels, width, height, image_id, file)`` of one image, no decoding."""
        r = self._records[self._index(index)]
        return r.boxes.copy(), r.labels.copy(), r.width, r.height, r.image_id, r.file

    @overload
    def __getitem__(self, index: int) -> DetectionSample: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[DetectionSample]: ...

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        boxes, labels, width, height, image_id, file = self.annotations(index)
        image = _decode_image(file)
        if image.shape[1] != width or image.shape[0] != height:
            raise DatasetError(
                f"{file}: image is {image.shape[1]}x{image.shape[0]} but its annotation says "
                f"{width}x{height}; the boxes would be wrong. Fix the annotated size or the image "
                f"(check_dataset() lists every such image)."
            )
        return DetectionSample(image=image, boxes=boxes, labels=labels, image_id=image_id, file=file)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(format={self.format!r}, split={self.split!r}, images={len(self)}, "
            f"classes={self.num_classes}, root={self.root!r})"
        )


def _decode_image(file: str) -> np.ndarray:
    """Decode an image file to ``H x W x 3`` uint8 RGB; DatasetError if it cannot."""
    try:
        with Image.open(file) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"{file}: image file does not exist; restore it or remove it from the annotations") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{file}: cannot decode image ({e}); re-save or remove it") from None


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header only (no pixel decoding)."""
    with Image.open(path) as im:
        return im.size


# --------------------------------------------------------------------------- box checks


def _check_box(
    x1: float, y1: float, x2: float, y2: float, width: int, height: int,
    where: str, split: str, problems: list[Problem], hint: str = "",
) -> tuple[float, float, float, float] | None:
    """Validate one xyxy pixel box against its image; clip it, or record a problem.

    Returns the clipped box, or None (and appends a Problem) when the box is not
    finite, has zero/negative size, or lies more than BOX_TOLERANCE px outside.
    """
    coords = (x1, y1, x2, y2)
    shown = "(" + ", ".join(f"{c:.2f}" for c in coords) + ")"
    if not all(np.isfinite(c) for c in coords):
        problems.append(Problem("bad_annotation", where, f"box {shown} has a non-finite coordinate; fix or remove it", split))
        return None
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        problems.append(Problem(
            "degenerate_box", where,
            f"box {shown} (xyxy px) has zero or negative width/height; remove it or fix its size{hint}", split))
        return None
    t = BOX_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        problems.append(Problem(
            "box_outside_image", where,
            f"box {shown} (xyxy px) lies outside the {width}x{height} image by more than {t:g} px; "
            f"fix the coordinates{hint}", split))
        return None
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 - x1 <= 0 or y2 - y1 <= 0:  # only possible for a sliver hugging the border
        problems.append(Problem("degenerate_box", where, f"box {shown} has no area inside the image; remove it", split))
        return None
    return x1, y1, x2, y2


def _box_arrays(boxes: list[tuple[float, float, float, float]], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64).reshape(-1))


def _id_from_names(files: Sequence[Path]) -> list[int]:
    """Image ids: the integer in each file stem if it is all digits, else the index.

    If that would give two images the same id (``5.jpg`` and the 6th non-numeric file),
    every image gets its index instead: ids must be unique for COCO evaluation.
    """
    ids = [int(f.stem) if f.stem.isdigit() else i for i, f in enumerate(files)]
    return ids if len(set(ids)) == len(ids) else list(range(len(files)))


def _empty_split_problems(records: list[ImageRecord], split: str, where: str, fix: str) -> list[Problem]:
    """An ``empty_split`` problem if the split has no images or no boxes at all."""
    if not records:
        return [Problem("empty_split", where, f"split '{split}' has no images; {fix}", split)]
    if sum(len(r.boxes) for r in records) == 0:
        return [Problem("empty_split", where,
                        f"split '{split}' has {len(records)} images but not one box; check that the labels are "
                        f"where the loader looks for them. {fix}", split)]
    return []


# --------------------------------------------------------------------------- COCO


def _coco_splits(root: Path) -> dict[str, Path]:
    """``{split: annotations/instances_<split>*.json}``.

    A trailing year is dropped from the split name (``instances_train2017.json`` is
    split ``train``) unless two files would then share a name.
    """
    files = sorted((root / "annotations").glob("instances_*.json"))
    full = {f: f.stem[len("instances_"):] for f in files}
    short = {f: (re.sub(r"\d+$", "", s) or s) for f, s in full.items()}
    counts = Counter(short.values())
    return {(short[f] if counts[short[f]] == 1 else full[f]): f for f in files}


def _coco_image_dir(root: Path, split: str, ann_file: Path, first_file: str | None) -> Path | None:
    """The folder holding a COCO split's images: ``images/<split>*/`` or ``<split>*/``.

    Among existing candidates, the first one that holds the split's first image wins,
    so ``images/train2017`` is found for split ``train``.
    """
    full = ann_file.stem[len("instances_"):]
    candidates = [root / "images" / full, root / full, root / "images" / split, root / split]
    candidates += sorted(p for p in (root / "images").glob(f"{split}*") if p.is_dir())
    candidates += sorted(p for p in root.glob(f"{split}*") if p.is_dir())
    candidates.append(root / "images")
    existing = [c for c in dict.fromkeys(candidates) if c.is_dir()]
    if first_file is not None:
        for c in existing:
            if (c / first_file).is_file():
                return c
    return existing[0] if existing else None


def _read_coco(root: Path, split: str, ann_file: Path) -> _SplitData:
    """Read one COCO split. Crowd boxes are left out; images without boxes are kept."""
    problems: list[Problem] = []
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        problems.append(Problem("bad_annotation", f"{ann_file} line {e.lineno}",
                                f"not valid JSON ({e.msg}); re-export or fix the file", split))
        return _SplitData([], [], problems)
    except OSError as e:
        problems.append(Problem("missing_split", str(ann_file), f"cannot read the file ({e})", split))
        return _SplitData([], [], problems)
    if not isinstance(data, dict):
        problems.append(Problem("bad_annotation", str(ann_file),
                                "top level is not a JSON object; a COCO instances file is "
                                "{'images': [...], 'annotations': [...], 'categories': [...]}", split))
        return _SplitData([], [], problems)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problems.append(Problem("bad_annotation", f"{ann_file} field '{key}'",
                                    "missing or not a list; a COCO instances file needs "
                                    "'images', 'annotations' and 'categories'", split))
    if problems:
        return _SplitData([], [], problems)

    cat_to_label, class_names = _coco_categories(data["categories"], ann_file, split, problems)
    images = _coco_images(data["images"], ann_file, split, problems)
    first_file = next(iter(images.values()))["file_name"] if images else None
    image_dir = _coco_image_dir(root, split, ann_file, first_file)
    per_image: dict[int, tuple[list, list]] = {image_id: ([], []) for image_id in images}
    for i, ann in enumerate(data["annotations"]):
        _coco_annotation(ann, i, ann_file, split, images, cat_to_label, per_image, problems)

    if image_dir is None:
        problems.append(Problem("missing_split", str(ann_file),
                                f"no image folder for split '{split}': looked for {root / 'images'}/{split}*/ "
                                f"and {root}/{split}*/; put the images there", split))
        return _SplitData([], class_names, problems)
    records: list[ImageRecord] = []
    for image_id, img in images.items():
        path = image_dir / img["file_name"]
        if not path.is_file():
            problems.append(Problem("missing_image", f"{ann_file} images[{img['_index']}] (id {image_id}) field 'file_name'",
                                    f"image file {path} does not exist; put the image there or remove the entry", split))
            continue
        boxes, labels = _box_arrays(*per_image[image_id])
        records.append(ImageRecord(str(path), img["width"], img["height"], image_id, boxes, labels))
    problems += _empty_split_problems(records, split, str(ann_file), f"add images and annotations to {ann_file}")
    return _SplitData(records, class_names, problems)


def _coco_categories(cats: list, ann_file: Path, split: str, problems: list[Problem]) -> tuple[dict[int, int], list[str]]:
    """COCO category ids -> contiguous labels in sorted-id order, and the class names."""
    by_id: dict[int, str] = {}
    for i, cat in enumerate(cats):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            problems.append(Problem("bad_annotation", f"{ann_file} categories[{i}]",
                                    "a category needs an integer 'id' and a 'name'; fix the entry", split))
            continue
        by_id[cat["id"]] = str(cat["name"])
    ids = sorted(by_id)
    return {cid: label for label, cid in enumerate(ids)}, [by_id[cid] for cid in ids]


def _coco_images(imgs: list, ann_file: Path, split: str, problems: list[Problem]) -> dict[int, dict]:
    """``{image id: image entry}`` of the well-formed entries, in file order."""
    images: dict[int, dict] = {}
    for i, img in enumerate(imgs):
        ok = (isinstance(img, dict) and isinstance(img.get("id"), int) and isinstance(img.get("file_name"), str)
              and isinstance(img.get("width"), int) and isinstance(img.get("height"), int)
              and img["width"] > 0 and img["height"] > 0)
        if not ok:
            problems.append(Problem("bad_annotation", f"{ann_file} images[{i}]",
                                    "an image entry needs integer 'id', 'width' > 0, 'height' > 0 and a "
                                    "'file_name'; fix the entry", split))
            continue
        if img["id"] in images:
            problems.append(Problem("bad_annotation", f"{ann_file} images[{i}] field 'id'",
                                    f"image id {img['id']} is used twice; ids must be unique", split))
            continue
        images[img["id"]] = {**img, "_index": i}
    return images


def _preview(values: Sequence[Any], n: int = 10) -> str:
    """``1, 2, 3`` or ``1, 2, ..., 90``: short enough for an error message."""
    shown = [str(v) for v in values]
    return ", ".join(shown) if len(shown) <= n else ", ".join(shown[:n - 1]) + f", ..., {shown[-1]}"


def _coco_annotation(
    ann: Any, i: int, ann_file: Path, split: str, images: dict[int, dict],
    cat_to_label: dict[int, int], per_image: dict[int, tuple[list, list]], problems: list[Problem],
) -> None:
    """Validate one COCO annotation and add its box to ``per_image`` (crowd: skipped)."""
    where = f"{ann_file} annotations[{i}]" + (f" (id {ann.get('id')})" if isinstance(ann, dict) else "")
    if not isinstance(ann, dict):
        problems.append(Problem("bad_annotation", where, "not a JSON object; fix the entry", split))
        return
    if ann.get("iscrowd", 0):
        return  # crowd regions are not instances: COCO eval ignores them, so training does too
    img = images.get(ann.get("image_id"))
    if img is None:
        problems.append(Problem("bad_annotation", f"{where} field 'image_id'",
                                f"image_id {ann.get('image_id')!r} is not in 'images'; fix the id or add the image", split))
        return
    label = cat_to_label.get(ann.get("category_id"))
    if label is None:
        problems.append(Problem("unknown_class", f"{where} field 'category_id'",
                                f"category_id {ann.get('category_id')!r} is not in 'categories' "
                                f"(ids {_preview(sorted(cat_to_label))}); fix the id or add the category", split))
        return
    bbox = ann.get("bbox")
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        problems.append(Problem("bad_annotation", f"{where} field 'bbox'",
                                f"bbox {bbox!r} is not 4 numbers [x, y, width, height]; fix it", split))
        return
    x, y, w, h = (float(v) for v in bbox)
    box = _check_box(x, y, x + w, y + h, img["width"], img["height"], f"{where} field 'bbox'", split, problems,
                     hint=" (COCO bbox is [x, y, width, height] in pixels)")
    if box is not None:
        per_image[img["id"]][0].append(box)
        per_image[img["id"]][1].append(label)


# --------------------------------------------------------------------------- YOLO


def _yolo_yaml(root: Path) -> Path:
    for name in ("data.yaml", "data.yml"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: no data.yaml; a YOLO dataset needs ROOT/data.yaml with 'train', 'val' and 'names'",
                       [Problem("bad_layout", str(root), "no data.yaml")])


def _yolo_config(root: Path) -> tuple[dict, Path, list[str], Path]:
    """Parse data.yaml -> ``(config, yaml path, class names, base folder)``.

    ``path`` in data.yaml is the base of the split folders, relative to the dataset
    root; when it does not exist (a data.yaml copied from elsewhere, e.g.
    ``../datasets/coco128``) the root itself is the base.
    """
    import yaml

    yaml_path = _yolo_yaml(root)
    try:
        cfg = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{yaml_path} line {mark.line + 1}" if mark is not None else str(yaml_path)
        raise DatasetError(f"{where}: not valid YAML ({e}); fix the file",
                           [Problem("bad_layout", where, f"not valid YAML ({e})")]) from None
    if not isinstance(cfg, dict):
        raise DatasetError(f"{yaml_path}: expected a mapping with 'train', 'val' and 'names'",
                           [Problem("bad_layout", str(yaml_path), "not a mapping")])
    names = _yolo_names(cfg.get("names"), yaml_path)
    base = root
    if cfg.get("path"):
        candidate = Path(str(cfg["path"]))
        candidate = candidate if candidate.is_absolute() else root / candidate
        base = candidate if candidate.is_dir() else root
    return cfg, yaml_path, names, base


def _yolo_names(names: Any, yaml_path: Path) -> list[str]:
    """Class names from data.yaml ``names``: a list, or a dict ``{0: name, 1: ...}``."""
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    if isinstance(names, dict) and names:
        keys = sorted(names)
        if keys != list(range(len(keys))):
            msg = (f"'names' keys must be the class ids 0..{len(keys) - 1} without gaps, got {keys[:10]}; "
                   f"renumber the classes")
            raise DatasetError(f"{yaml_path} field 'names': {msg}", [Problem("bad_layout", f"{yaml_path} field 'names'", msg)])
        return [str(names[k]) for k in keys]
    msg = "missing or empty; list the class names, e.g. names: {0: person, 1: car}"
    raise DatasetError(f"{yaml_path} field 'names': {msg}", [Problem("bad_layout", f"{yaml_path} field 'names'", msg)])


def _yolo_splits(root: Path) -> dict[str, Any]:
    cfg, _, _, _ = _yolo_config(root)
    return {k: cfg[k] for k in ("train", "val", "test") if cfg.get(k)}


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _yolo_image_files(base: Path, spec: Any, yaml_path: Path, split: str, problems: list[Problem]) -> list[Path]:
    """Image files of a split: ``spec`` is a folder, a .txt list of images, or a list of those."""
    files: list[Path] = []
    for entry in spec if isinstance(spec, list) else [spec]:
        path = Path(str(entry))
        path = path if path.is_absolute() else base / path
        if path.is_dir():
            files += _list_images(path)
        elif path.is_file() and path.suffix == ".txt":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    p = Path(line.strip())
                    files.append(p if p.is_absolute() else base / p)
        else:
            problems.append(Problem("missing_split", f"{yaml_path} field '{split}'",
                                    f"{path} does not exist; point '{split}' at the split's image folder "
                                    f"(relative to 'path' / the dataset root)", split))
    return files


def _yolo_label_path(image: Path) -> Path:
    """``.../images/x/0001.jpg`` -> ``.../labels/x/0001.txt`` (last ``/images/`` only)."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        s = sb.join(s.rsplit(sa, 1))
    return Path(s).with_suffix(".txt")


def _read_yolo_labels(
    label_file: Path, width: int, height: int, num_classes: int, yaml_path: Path, split: str, problems: list[Problem],
) -> tuple[list, list]:
    """Parse one YOLO label file (``class cx cy w h`` normalised) into pixel xyxy boxes."""
    boxes: list = []
    labels: list = []
    if not label_file.is_file():
        return boxes, labels  # no label file: a background image, as in YOLO tooling
    for lineno, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{label_file} line {lineno}"
        if len(parts) != 5:
            problems.append(Problem("bad_annotation", where,
                                    f"expected 5 values 'class cx cy w h', got {len(parts)}; fix the line", split))
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            problems.append(Problem("bad_annotation", where, f"{line.strip()!r} is not 5 numbers; fix the line", split))
            continue
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            problems.append(Problem("unknown_class", where,
                                    f"class id {parts[0]} is not one of the {num_classes} classes in "
                                    f"{yaml_path} 'names' (0..{num_classes - 1}); fix the id or add the class", split))
            continue
        cx, cy, w, h = values[1:]
        box = _check_box((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height,
                         width, height, where, split, problems, hint=" (YOLO values are cx cy w h normalised to 0..1)")
        if box is not None:
            boxes.append(box)
            labels.append(int(cls))
    return boxes, labels


def _read_yolo(root: Path, split: str, spec: Any) -> _SplitData:
    """Read one YOLO split; image sizes come from the image headers."""
    problems: list[Problem] = []
    _, yaml_path, names, base = _yolo_config(root)
    files = _yolo_image_files(base, spec, yaml_path, split, problems)
    ids = _id_from_names(files)
    records: list[ImageRecord] = []
    for path, image_id in zip(files, ids):
        if not path.is_file():
            problems.append(Problem("missing_image", str(path), "image file listed for the split does not exist; "
                                    "restore it or remove it from the list", split))
            continue
        try:
            width, height = _image_size(path)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            problems.append(Problem("unreadable_image", str(path), f"cannot read the image header ({e}); "
                                    "re-save or remove the image", split))
            continue
        label_file = _yolo_label_path(path)
        boxes, labels = _read_yolo_labels(label_file, width, height, len(names), yaml_path, split, problems)
        records.append(ImageRecord(str(path), width, height, image_id, *_box_arrays(boxes, labels)))
    if not any(p.kind == "missing_split" for p in problems):  # a missing folder is already reported
        where = f"{yaml_path} field '{split}'"
        problems += _empty_split_problems(records, split, where, f"put images in the folder named by '{split}' and "
                                          "their labels in the matching labels/ folder")
    return _SplitData(records, names, problems)


def _yolo_orphan_labels(root: Path, split: str, spec: Any, records: Sequence[ImageRecord]) -> list[Problem]:
    """``missing_image`` problems for label files in a split's labels/ folder with no image.

    Only :func:`check_dataset` looks for these: they change no loaded sample (loading
    is driven by the image files), but they usually mean images were lost.
    """
    _, yaml_path, _, base = _yolo_config(root)
    used = {Path(_yolo_label_path(Path(r.file))) for r in records}
    problems: list[Problem] = []
    for entry in spec if isinstance(spec, list) else [spec]:
        folder = Path(str(entry))
        folder = folder if folder.is_absolute() else base / folder
        label_dir = _yolo_label_path(folder / "x").parent
        if not folder.is_dir() or label_dir == folder or not label_dir.is_dir():
            continue
        for label_file in sorted(label_dir.rglob("*.txt")):
            if label_file in used:
                continue
            n = sum(1 for line in label_file.read_text(encoding="utf-8").splitlines() if line.split())
            image_dir = folder / label_file.parent.relative_to(label_dir)
            problems.append(Problem("missing_image", str(label_file),
                                    f"label file with {n} box(es) but no image {label_file.stem}.* in {image_dir}; "
                                    f"restore the image or delete the label file", split))
    return problems


# --------------------------------------------------------------------------- VOC


def _voc_splits(root: Path) -> dict[str, Path | None]:
    """``{split: ImageSets/Main/<split>.txt}``; ``{"train": None}`` (every XML) without them.

    Per-class files (``aeroplane_train.txt``) are not splits: split names have no ``_``.
    """
    main = root / "ImageSets" / "Main"
    files = sorted(p for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
    return {p.stem: p for p in files} if files else {"train": None}


@dataclass
class _VocImage:
    xml: Path
    filename: str
    width: int
    height: int
    objects: list[tuple[str, float, float, float, float]]  # name, xmin, ymin, xmax, ymax (1-based)


def _parse_voc_xml(xml: Path, split: str, problems: list[Problem]) -> _VocImage | None:
    """Parse one VOC annotation; None (and a problem) if the XML is unusable."""
    try:
        tree = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as e:
        problems.append(Problem("bad_annotation", str(xml), f"not valid XML ({e}); fix or re-export the file", split))
        return None

    def number(node: ET.Element | None, tag: str) -> float | None:
        text = node.findtext(tag) if node is not None else None
        try:
            return float(text) if text is not None else None
        except ValueError:
            return None

    size = tree.find("size")
    width, height = number(size, "width"), number(size, "height")
    objects = []
    for k, obj in enumerate(tree.findall("object")):
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        coords = [number(bnd, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        if not name or any(c is None for c in coords):
            problems.append(Problem("bad_annotation", f"{xml} object {k} field 'bndbox'",
                                    "an object needs a <name> and numeric <bndbox> xmin/ymin/xmax/ymax; fix it", split))
            continue
        objects.append((name, *coords))  # type: ignore[arg-type]
    filename = (tree.findtext("filename") or "").strip()
    return _VocImage(xml, filename, int(width or 0), int(height or 0), objects)


def _voc_class_names(root: Path, parsed: Iterable[_VocImage]) -> tuple[list[str], Path | None]:
    """Class names from ``ROOT/classes.txt`` (one a line) or sorted from all objects."""
    classes_txt = root / "classes.txt"
    if classes_txt.is_file():
        names = [ln.strip() for ln in classes_txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return names, classes_txt
    return sorted({obj[0] for img in parsed for obj in img.objects}), None


def _voc_image_file(root: Path, img: _VocImage) -> Path:
    """``JPEGImages/<filename>``, or ``JPEGImages/<xml stem>.<ext>`` if that is absent."""
    folder = root / "JPEGImages"
    if img.filename and (folder / img.filename).is_file():
        return folder / img.filename
    for ext in IMAGE_EXTENSIONS:
        if (folder / (img.xml.stem + ext)).is_file():
            return folder / (img.xml.stem + ext)
    return folder / (img.filename or img.xml.stem + ".jpg")


def _read_voc(root: Path, split: str, split_file: Path | None) -> _SplitData:
    """Read one VOC split. Coordinates are 1-based: 1 is subtracted from xmin/ymin."""
    problems: list[Problem] = []
    ann_dir = root / "Annotations"
    all_xml = sorted(ann_dir.glob("*.xml"))
    # Class ids must not depend on the split, so names come from every XML; but only the
    # split's own XMLs report their parse problems.
    parse_problems: dict[str, list[Problem]] = {}
    parsed_all: dict[str, _VocImage] = {}
    for xml in all_xml:
        parse_problems[xml.stem] = []
        img = _parse_voc_xml(xml, split, parse_problems[xml.stem])
        if img is not None:
            parsed_all[xml.stem] = img
    names, classes_txt = _voc_class_names(root, parsed_all.values())
    stems: list[str] = []
    if split_file is None:
        stems = [x.stem for x in all_xml]
    else:
        for lineno, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.split():
                continue
            stem = line.split()[0]
            if stem in parse_problems:
                stems.append(stem)
            else:
                problems.append(Problem("bad_annotation", f"{split_file} line {lineno}",
                                        f"no annotation {ann_dir / (stem + '.xml')} for image '{stem}'; add it or "
                                        f"remove the line", split))
    for stem in stems:
        problems += parse_problems[stem]
    chosen = [parsed_all[stem] for stem in stems if stem in parsed_all]
    label_of = {n: i for i, n in enumerate(names)}
    source = f"{classes_txt}" if classes_txt else "the XML files"
    ids = _id_from_names([img.xml for img in chosen])
    records: list[ImageRecord] = []
    for img, image_id in zip(chosen, ids):
        path = _voc_image_file(root, img)
        if not path.is_file():
            problems.append(Problem("missing_image", f"{img.xml} field 'filename'",
                                    f"image file {path} does not exist; put it in {root / 'JPEGImages'}", split))
            continue
        width, height = img.width, img.height
        if width <= 0 or height <= 0:
            try:  # <size> missing or zero: fall back to the image header
                width, height = _image_size(path)
            except (OSError, ValueError) as e:
                problems.append(Problem("unreadable_image", str(path), f"cannot read the image header ({e})", split))
                continue
        boxes, labels = [], []
        for k, (name, xmin, ymin, xmax, ymax) in enumerate(img.objects):
            where = f"{img.xml} object {k} ('{name}')"
            if name not in label_of:
                problems.append(Problem("unknown_class", f"{where} field 'name'",
                                        f"class '{name}' is not in {source}; add it there or fix the name", split))
                continue
            box = _check_box(xmin - 1, ymin - 1, xmax, ymax, width, height, f"{where} field 'bndbox'", split, problems,
                             hint=" (VOC bndbox is 1-based xmin ymin xmax ymax in pixels)")
            if box is not None:
                boxes.append(box)
                labels.append(label_of[name])
        records.append(ImageRecord(str(path), width, height, image_id, *_box_arrays(boxes, labels)))
    where = str(split_file) if split_file else str(ann_dir)
    problems += _empty_split_problems(records, split, where, f"add annotated images to {where}")
    return _SplitData(records, names, problems)


# --------------------------------------------------------------------------- public API

_SPLITS: dict[str, Callable[[Path], dict[str, Any]]] = {"coco": _coco_splits, "yolo": _yolo_splits, "voc": _voc_splits}
_READERS: dict[str, Callable[[Path, str, Any], _SplitData]] = {"coco": _read_coco, "yolo": _read_yolo, "voc": _read_voc}


def detect_format(root: PathLike) -> str:
    """The layout of the dataset folder ``root``: ``"coco"``, ``"yolo"`` or ``"voc"``.

    ``data.yaml`` means YOLO, ``annotations/instances_*.json`` COCO, ``Annotations/*.xml``
    VOC. A folder with several layouts (coco128 has YOLO labels for every split and a
    COCO json for train only) is YOLO first, then COCO: pass ``format=`` to choose.
    Raises DatasetError when the folder is missing or matches none of them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; check the path",
                           [Problem("bad_layout", str(root), "folder does not exist")])
    if (root / "data.yaml").is_file() or (root / "data.yml").is_file():
        return "yolo"
    if any((root / "annotations").glob("instances_*.json")):
        return "coco"
    if any((root / "Annotations").glob("*.xml")):
        return "voc"
    found = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]) or "nothing"
    msg = (f"cannot tell the dataset layout of {root} (found: {found}); expected data.yaml (YOLO), "
           f"annotations/instances_<split>.json (COCO) or Annotations/*.xml (VOC). Fix the layout or pass format=")
    raise DatasetError(msg, [Problem("bad_layout", str(root), msg)])


def _resolve_format(root: Path, format: str | None) -> str:
    if format is None:
        return detect_format(root)
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; use one of {', '.join(FORMATS)} (or None to detect)")
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; check the path")
    return format


def _pick_split(root: Path, fmt: str, split: str) -> tuple[str, Any]:
    """``(split name, reader spec)``; ``train2017`` also finds ``train`` and vice versa."""
    splits = _SPLITS[fmt](root)
    for name in (split, re.sub(r"\d+$", "", split)):
        if name in splits:
            return name, splits[name]
    hint = {"coco": f"expected {root / 'annotations'}/instances_{split}*.json",
            "yolo": f"add '{split}: <image folder>' to {root / 'data.yaml'}",
            "voc": f"expected {root / 'ImageSets' / 'Main' / (split + '.txt')}"}[fmt]
    available = ", ".join(splits) or "none"
    msg = f"split '{split}' not found in {root} ({fmt} layout; available: {available}); {hint}"
    raise DatasetError(msg, [Problem("missing_split", str(root), msg, split)])


def _format_problems(problems: Sequence[Problem], header: str) -> str:
    lines = [f"  - {p}" for p in problems[:_MAX_LISTED_PROBLEMS]]
    if len(problems) > _MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED_PROBLEMS} more; run check_dataset() for the full list")
    return header + "\n" + "\n".join(lines)


def load_dataset(root: PathLike, split: str = "train", format: str | None = None, strict: bool = True) -> DetectionDataset:
    """Load one split of the dataset at ``root`` (layout detected unless ``format`` given).

    With ``strict`` (the default) any problem raises a DatasetError listing them all
    (the first few spelled out). With ``strict=False`` bad boxes and missing images are
    dropped and the problems are kept on ``dataset.problems``.
    """
    root = Path(root)
    fmt = _resolve_format(root, format)
    name, spec = _pick_split(root, fmt, split)
    data = _READERS[fmt](root, name, spec)
    if data.problems and strict:
        header = f"{len(data.problems)} problem(s) in split '{name}' of {root} ({fmt} layout):"
        raise DatasetError(_format_problems(data.problems, header), data.problems)
    return DetectionDataset(data.records, data.class_names, name, fmt, str(root), data.problems)


@dataclass
class SplitReport:
    """Counts for one split: images, boxes, boxes per class name, images without boxes."""

    split: str
    images: int
    boxes: int
    boxes_per_class: dict[str, int]
    images_without_boxes: int


@dataclass
class CheckReport:
    """Everything :func:`check_dataset` found: per-split counts and every problem."""

    root: str
    format: str
    class_names: list[str] = field(default_factory=list)
    splits: dict[str, SplitReport] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def summary(self) -> str:
        """Human-readable report: one line per split, then every problem."""
        lines = [f"{self.root} ({self.format} layout, {len(self.class_names)} classes)"]
        for s in self.splits.values():
            lines.append(f"  {s.split}: {s.images} images, {s.boxes} boxes, "
                         f"{sum(1 for v in s.boxes_per_class.values() if v)} classes present, "
                         f"{s.images_without_boxes} images without boxes")
        lines.append(f"  {len(self.problems)} problem(s)" + (":" if self.problems else ""))
        lines += [f"    [{p.kind}] {p}" for p in self.problems]
        return "\n".join(lines)


def _verify_pixels(record: ImageRecord, split: str) -> Problem | None:
    """A problem if the image cannot be fully decoded or its size is not the annotated one."""
    try:
        with Image.open(record.file) as im:
            im.load()  # a full decode: truncated files pass a header-only open
            size = im.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return Problem("unreadable_image", record.file, f"cannot decode the image ({e}); re-save or remove it", split)
    if size != (record.width, record.height):
        return Problem("size_mismatch", record.file,
                       f"image is {size[0]}x{size[1]} but annotated as {record.width}x{record.height}; "
                       f"fix the annotated size", split)
    return None


def check_dataset(root: PathLike, format: str | None = None, decode_images: bool = True) -> CheckReport:
    """Check every split of the dataset at ``root``; never stops at the first problem.

    Reports images, boxes and boxes per class for each split, and every problem found:
    missing or unreadable (``decode_images``: fully decoded) images, boxes outside the
    image (beyond 1 px) or of zero/negative size, unknown class ids, empty splits,
    malformed files. Raises nothing for bad data: a hopeless layout is a problem too.
    """
    root = Path(root)
    try:
        fmt = _resolve_format(root, format)
        splits = _SPLITS[fmt](root)
    except DatasetError as e:
        problems = e.problems or [Problem("bad_layout", str(root), str(e))]
        return CheckReport(str(root), format or "unknown", problems=problems)
    report = CheckReport(str(root), fmt)
    if not splits:
        report.problems.append(Problem("empty_split", str(root), "no split found; add at least a 'train' split"))
    for name, spec in splits.items():
        data = _READERS[fmt](root, name, spec)
        report.class_names = report.class_names or data.class_names
        report.problems += data.problems
        if fmt == "yolo":
            report.problems += _yolo_orphan_labels(root, name, spec, data.records)
        if decode_images:
            report.problems += [p for r in data.records if (p := _verify_pixels(r, name)) is not None]
        counts = Counter(int(label) for r in data.records for label in r.labels)
        report.splits[name] = SplitReport(
            split=name,
            images=len(data.records),
            boxes=sum(len(r.boxes) for r in data.records),
            boxes_per_class={n: counts.get(i, 0) for i, n in enumerate(data.class_names)},
            images_without_boxes=sum(1 for r in data.records if len(r.boxes) == 0),
        )
    return report
