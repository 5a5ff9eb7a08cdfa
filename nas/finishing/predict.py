"""Running an exported detector (fp32 or int8 ONNX) on image files.

Each image is letterboxed to the model's input exactly as in training
(:func:`evaluators.trainer.letterbox`), run through onnxruntime, post-processed with
:func:`evaluators.boxes.postprocess`, and its boxes are mapped back to the original
image's pixels. For ``photo.jpg`` the output folder gets ``photo.json`` (boxes, scores,
labels and class names when the model's metadata has them) and ``photo.jpg`` with the
boxes drawn.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.export import ExportError
from search_spaces.errors import InputError

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


class ImageError(InputError):
    """A file given as an image that Pillow cannot read; the message names it."""


@dataclass
class Detector:
    """An onnxruntime session of an exported detector, with its input size and class names."""
    session: object
    input_name: str
    size: int
    class_names: list[str] | None

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> "Detector":
        from latency_tables.runtime import ort_session

        path = Path(path)
        if not path.is_file():
            raise ExportError(f"model file {path} does not exist")
        try:
            session = ort_session(path, threads)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{path} is not a valid ONNX model ({first[:200]})") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(outputs) != 2 or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] \
                or not isinstance(shape[2], int):
            raise ExportError(f"{path} is not a detector exported by this tool (expected one input [1,3,S,S] and "
                              f"outputs scores and boxes; got inputs {[i.shape for i in inputs]}, "
                              f"{len(outputs)} outputs)")
        meta = session.get_modelmeta().custom_metadata_map
        names = json.loads(meta["nas.class_names"]) if "nas.class_names" in meta else None
        return cls(session, inputs[0].name, int(shape[2]), names)

    def __call__(self, image: np.ndarray, score_threshold: float = 0.3) -> dict:
        """Detections on one RGB uint8 image, in its own pixels: boxes (K,4), scores, labels."""
        from evaluators.boxes import postprocess
        from evaluators.trainer import letterbox

        from .measure import images_to_input

        h, w = image.shape[:2]
        boxed, _ = letterbox(image, np.zeros((0, 4), np.float32), self.size)
        scores, boxes = self.session.run(None, {self.input_name: images_to_input(boxed[None])})
        det = postprocess(scores[0], boxes[0], score_threshold=score_threshold)
        scale = self.size / max(h, w)  # letterbox scales by this and pads right/bottom only
        b = det["boxes"] / scale
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        return {"boxes": b, "scores": det["scores"], "labels": det["labels"]}


def read_image(path: Path, verify_only: bool = False) -> np.ndarray | None:
    """RGB uint8 array of an image file (None with ``verify_only``: header and
    structure checked without decoding), or :class:`ImageError` naming the file."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ImageError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            if verify_only:
                im.verify()
                return None
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # PIL raises SyntaxError for some broken files
        raise ImageError(f"{path} is not a readable image ({type(exc).__name__}: {str(exc)[:120]})") from None


def draw(image: np.ndarray, det: dict, class_names: list[str] | None):
    """A PIL image with the detections drawn (box, class and score)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    pen = ImageDraw.Draw(im)
    width = max(1, round(max(im.size) / 300))
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
        colour = PALETTE[int(label) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in box)
        pen.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        text = f"{class_names[label] if class_names else label} {score:.2f}"
        left, top, right, bottom = pen.textbbox((x1, y1), text)
        ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        pen.rectangle([x1, ty, x1 + (right - left) + 4, ty + (bottom - top) + 2], fill=colour)
        pen.text((x1 + 2, ty), text, fill=(255, 255, 255))
    return im


def predict_files(model: str | Path, images: list[str | Path], out: str | Path, score_threshold: float = 0.3,
                  threads: int = 1) -> list[Path]:
    """Run ``model`` on ``images``; write ``<stem>.json`` and ``<stem>.jpg`` per image into
    ``out``; return the JSON paths. Every image is checked before anything is written."""
    detector = Detector.load(model, threads)
    paths = [Path(p) for p in images]
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise InputError(f"{stems[p.stem]} and {p} would both be written as {p.stem}.json; rename one")
        stems[p.stem] = p
    for p in paths:  # fail on a bad file before writing anything, without holding every image in memory
        read_image(p, verify_only=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for p in paths:
        image = read_image(p)
        det = detector(image, score_threshold)
        names = detector.class_names
        record = {"image": str(p), "width": int(image.shape[1]), "height": int(image.shape[0]), "model": str(model),
                  "score_threshold": score_threshold, "detections": [
                      {"box": [round(float(v), 2) for v in box], "score": round(float(s), 4), "label": int(l),
                       **({"class_name": names[int(l)]} if names else {})}
                      for box, s, l in zip(det["boxes"], det["scores"], det["labels"])]}
        (out / f"{p.stem}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        draw(image, det, names).save(out / f"{p.stem}.jpg", quality=90)
        written.append(out / f"{p.stem}.json")
    return written
