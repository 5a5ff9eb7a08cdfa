"""Checkpoints and ONNX export of built detectors.

An exported model has one input ``images`` (float32 NCHW, RGB scaled to [0, 1]) and two
outputs, ``scores`` [B, N, C] (sigmoid) and ``boxes`` [B, N, 4] (xyxy, input pixels):
decoding is inside the graph; NMS is applied beside it by
:func:`evaluators.boxes.postprocess`. The metadata holds the architecture JSON, the
space settings and the input size, so the file describes itself.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from latency_tables.runtime import to_onnx_bytes
from search_spaces import Architecture, InputError, SearchSpace, get_space
from search_spaces.files import atomic_write, write_bytes_atomic

CHECKPOINT_FORMAT = 1


class ExportError(InputError):
    """A checkpoint or model file that cannot be used; the message names the file."""


def save_checkpoint(path: str | Path, model: torch.nn.Module, arch: Architecture, space: SearchSpace, **extra) -> None:
    """Weights plus everything needed to rebuild the model (architecture, space settings)."""
    payload = {"format": CHECKPOINT_FORMAT, "arch": arch.to_dict(), "settings": space.settings(),
               "state_dict": model.state_dict(), **extra}
    atomic_write(path, lambda f: torch.save(payload, f))  # a crash never leaves half a checkpoint


def read_torch_file(path: str | Path):
    """``torch.load`` with the errors a user can act on (missing or unreadable file)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ExportError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); is it a file written by this tool?") from None


def load_checkpoint(path: str | Path) -> dict:
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or "state_dict" not in payload:
        raise ExportError(f"checkpoint {path} is not a checkpoint of format {CHECKPOINT_FORMAT} (keys: format, arch, settings, state_dict)")
    payload["arch"] = Architecture.from_dict(payload["arch"])
    return payload


def model_from_checkpoint(path: str | Path):
    """(model in eval mode, arch, space) rebuilt from a checkpoint."""
    ckpt = load_checkpoint(path)
    space = get_space(ckpt["arch"].space, **ckpt["settings"])
    model = space.build(ckpt["arch"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ExportError(f"checkpoint {path}: weights do not fit the architecture: {str(exc)[:300]}") from None
    return model.eval(), ckpt["arch"], space


def export_onnx(model: torch.nn.Module, arch: Architecture, space: SearchSpace, out: str | Path | None = None,
                input_hw: tuple[int, int] | None = None) -> bytes:
    """Export ``model`` (decoded outputs) to ONNX; write it to ``out`` if given; return the bytes."""
    import onnx

    h, w = input_hw or (space.settings()["input_size"],) * 2
    data = to_onnx_bytes(model, [torch.zeros(1, 3, h, w)], ["images"], ["scores", "boxes"])
    proto = onnx.load_from_string(data)
    meta = {"nas.architecture": arch.to_json(), "nas.settings": json.dumps(space.settings(), sort_keys=True),
            "nas.input_hw": json.dumps([h, w]), "nas.outputs": "scores[B,N,C] sigmoid; boxes[B,N,4] xyxy pixels"}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    if out is not None:
        write_bytes_atomic(out, data)
    return data


def read_metadata(path: str | Path) -> dict:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    return {p.key: p.value for p in proto.metadata_props}
