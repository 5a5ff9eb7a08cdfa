"""Loading and saving the models the finishing passes produce.

Two checkpoint formats, both read by :func:`load_model`:

* an architecture checkpoint (:func:`nas.export.save_checkpoint`): weights plus the
  architecture, rebuilt through the space. Used while a model still *is* an
  architecture of its space (input, teacher, train, distill).
* a module checkpoint (:data:`MODULE_FORMAT`): ``torch.save`` of the whole module, plus
  the architecture it was derived from. A pruned model has internal widths no
  architecture of the space describes, so only the module itself can carry them.
  Loading it unpickles code, so read only files you wrote.

Exported stages carry extra ONNX metadata beside :func:`nas.export.export_onnx`'s:
``nas.stage`` and, when known, ``nas.class_names`` (read back by ``nas predict``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nas.export import CHECKPOINT_FORMAT, ExportError, export_onnx, read_torch_file, save_checkpoint
from search_spaces import Architecture, SearchSpace, get_space
from search_spaces.files import atomic_write, write_bytes_atomic

MODULE_FORMAT = "nas-module-1"


def same_structure(model: torch.nn.Module, arch: Architecture, space: SearchSpace) -> bool:
    """True when ``model``'s parameter shapes are exactly those of ``space.build(arch)``."""
    reference = space.build(arch).state_dict()
    state = model.state_dict()
    return state.keys() == reference.keys() and all(state[k].shape == reference[k].shape for k in state)


def save_model(path: str | Path, model: torch.nn.Module, arch: Architecture, space: SearchSpace, **extra) -> str:
    """Save ``model`` in the smallest format that can rebuild it; returns the format used."""
    if same_structure(model, arch, space):
        save_checkpoint(path, model, arch, space, **extra)
        return "architecture"
    payload = {"format": MODULE_FORMAT, "module": model, "arch": arch.to_dict(), "settings": space.settings(), **extra}
    atomic_write(path, lambda f: torch.save(payload, f))
    return "module"


def load_model(path: str | Path) -> tuple[torch.nn.Module, Architecture, SearchSpace]:
    """(model in eval mode, the architecture it is or derives from, its space) from either format."""
    path = Path(path)
    payload = read_torch_file(path)
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (CHECKPOINT_FORMAT, MODULE_FORMAT):
        raise ExportError(f"{path} is neither an architecture checkpoint (format {CHECKPOINT_FORMAT}) "
                          f"nor a module checkpoint ({MODULE_FORMAT})")
    arch = Architecture.from_dict(payload["arch"])
    space = get_space(arch.space, **payload["settings"])
    if fmt == MODULE_FORMAT:
        return payload["module"].eval(), arch, space
    model = space.build(arch)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ExportError(f"checkpoint {path}: weights do not fit the architecture: {str(exc)[:300]}") from None
    return model.eval(), arch, space


def add_metadata(data: bytes, meta: dict[str, str]) -> bytes:
    """ONNX bytes with ``meta`` added to (or replacing) the model's metadata properties."""
    import onnx

    proto = onnx.load_from_string(data)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    for key, value in kept + list(meta.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def export_stage(model: torch.nn.Module, arch: Architecture, space: SearchSpace, path: Path, stage: str,
                 class_names: list[str] | None) -> Path:
    """Export ``model`` to ``path`` with the stage name and class names in the metadata."""
    meta = {"nas.stage": stage}
    if class_names:
        meta["nas.class_names"] = json.dumps(list(class_names))
    write_bytes_atomic(path, add_metadata(export_onnx(model, arch, space), meta))
    return path


def class_names_of(data_cfg) -> list[str]:
    """Class names of a :class:`evaluators.data.DataConfig`'s dataset (index = label)."""
    if data_cfg.source == "synthetic":
        from evaluators.synthetic import SYNTHETIC_CLASSES

        return list(SYNTHETIC_CLASSES)
    from evaluators.datasets import load_dataset

    return list(load_dataset(data_cfg.source, data_cfg.train_split, data_cfg.format).class_names)
