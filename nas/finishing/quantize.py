"""Static post-training int8 quantisation with onnxruntime (QDQ format).

The fp32 model is first run through ``quant_pre_process`` (shape inference and graph
cleanup, as onnxruntime recommends), then calibrated on real training images with one
of :data:`CALIBRATION_METHODS` and quantised with per-channel int8 weights and uint8
activations (U8S8, the fast path of VNNI CPUs). The decode at the end of the graph
(sigmoid, softplus, box arithmetic) stays in float by default: 8 bits over a 256 px
box range is a pixel of error, and near-zero scores decide what NMS keeps.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from .measure import images_to_input
from search_spaces.files import write_bytes_atomic

from .models import add_metadata

# name -> (onnxruntime CalibrationMethod attribute, extra_options for quantize_static).
# Percentile's default symmetric collector histograms |x| with np.histogram on float32,
# which raises "Too many bins for data range" on near-constant tensors (a freshly
# initialised head, a saturated hard-swish); the asymmetric collector bins over
# [-max|x|, max|x|] and does not.
CALIBRATION_METHODS: dict[str, tuple[str, dict]] = {
    "minmax": ("MinMax", {}),
    "entropy": ("Entropy", {}),
    "percentile": ("Percentile", {"CalibTensorRangeSymmetric": False}),
}
DECODE_PREFIX = "/decode/"  # node-name scope of the Decode module in exported graphs


@dataclass(frozen=True)
class QuantSettings:
    per_channel: bool = True
    op_types: tuple[str, ...] | None = None      # None: every op type onnxruntime can quantise
    exclude_decode: bool = True
    extra_options: dict = field(default_factory=dict)


class CalibrationImages(CalibrationDataReader):
    """onnxruntime CalibrationDataReader over uint8 NHWC images, one image per call
    (exported models have batch 1)."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._items = iter([{input_name: images_to_input(images[i:i + 1])} for i in range(len(images))])

    def get_next(self):
        return next(self._items, None)


def preprocess(fp32_path: Path, out_path: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path))
    return out_path


def quantize(pre_path: Path, out_path: Path, calibration_images: np.ndarray, method: str,
             settings: QuantSettings = QuantSettings(), metadata: dict[str, str] | None = None) -> Path:
    """Quantise the pre-processed model at ``pre_path`` into ``out_path`` (QDQ).

    ``calibration_images`` are uint8 NHWC at the model's input size; ``method`` a key of
    :data:`CALIBRATION_METHODS`. The input model's metadata is kept, ``metadata`` added.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {sorted(CALIBRATION_METHODS)}")
    calib_name, extra = CALIBRATION_METHODS[method]
    proto = onnx.load(str(pre_path))
    exclude = [n.name for n in proto.graph.node if n.name.startswith(DECODE_PREFIX)] if settings.exclude_decode else []
    reader = CalibrationImages(calibration_images, proto.graph.input[0].name)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The calibrators print progress to stdout; keep the CLI's output to our own table.
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(pre_path), str(out_path), reader, quant_format=QuantFormat.QDQ,
                        per_channel=settings.per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, calib_name),
                        op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
                        nodes_to_exclude=exclude, extra_options={**extra, **settings.extra_options})
    meta = {p.key: p.value for p in proto.metadata_props if p.key != "onnx.quant.pre_process"}
    write_bytes_atomic(out_path, add_metadata(out_path.read_bytes(), {**meta, **(metadata or {})}))
    return out_path
