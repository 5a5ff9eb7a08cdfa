"""The latency table: a JSON file with a schema version, the hardware fingerprint and
one entry per op key, plus the calibration fitted on whole-network measurements.

File layout (schema 2; schema 1 tables were timed without the yardstick and must be rebuilt)::

    {"schema": 2,
     "header": {"space": ..., "settings": {...}, "fingerprint": {...}, "opset": 17,
                "dtype": "float32", "batch": 1, "input_size": 256, "statistic": "...",
                "yardstick": {"version": 1, "ms": ...}},   # the unit: see latency_tables.runtime
     "ops": {"<op key>": {"kind": ..., "params": {...}, "input_shapes": [[...]],
                           "ms": ..., "median_ms": ..., "iqr_ms": ..., "runs": ...}},
     "calibration": {"features": [...], "coef": [...], "n_models": ..., ...} | null}

Writes are atomic (temp file + rename), so an interrupted build never corrupts a table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from search_spaces.errors import InputError
from search_spaces.files import write_text_atomic

SCHEMA_VERSION = 2


class TableError(InputError):
    """A table file that is missing, corrupt or of another schema; names the file."""


class MissingOpError(TableError):
    """An op the table has no measurement for: names the op key and the command to fill it."""


def build_command(header: dict, out: str | Path | None = None) -> str:
    settings = header.get("settings", {})
    parts = ["nas latency build", f"--space {header.get('space', 'cpu_detector')}",
             f"--threads {header.get('fingerprint', {}).get('threads', 1)}",
             f"--input-size {settings.get('input_size', header.get('input_size', 256))}"]
    if "num_classes" in settings:
        parts.append(f"--num-classes {settings['num_classes']}")
    parts.append(f"--out {out or 'TABLE.json'}")
    return " ".join(parts)


@dataclass
class TableData:
    header: dict
    ops: dict[str, dict] = field(default_factory=dict)
    calibration: dict | None = None
    path: Path | None = None

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA_VERSION, "header": self.header, "ops": self.ops,
                           "calibration": self.calibration}, indent=1, sort_keys=True)

    @property
    def unit_ms(self) -> float:
        """Milliseconds per yardstick, the unit of every latency in this table (checked by
        ``load``; see ``latency_tables.runtime``)."""
        return float(self.header["yardstick"]["ms"])

    def save(self, path: str | Path | None = None) -> None:
        path = Path(path or self.path)
        write_text_atomic(path, self.to_json())
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> "TableData":
        path = Path(path)
        if not path.is_file():
            raise TableError(f"latency table {path} does not exist; build one with 'nas latency build ... --out {path}'")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TableError(f"latency table {path} is corrupt (not valid JSON: {exc}); delete it and rebuild") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            header = data.get("header", {}) if isinstance(data, dict) else {}
            raise TableError(f"latency table {path} has schema {found!r}; this version reads schema {SCHEMA_VERSION}: "
                             f"delete it, then rebuild with '{build_command(header, path)}'")
        for name, kind in (("header", dict), ("ops", dict)):
            if not isinstance(data.get(name), kind):
                raise TableError(f"latency table {path}: field '{name}' is missing or not an object")
        for key, entry in data["ops"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("ms"), (int, float)):
                raise TableError(f"latency table {path}: entry 'ops.{key}' has no numeric 'ms'")
        from .runtime import YARDSTICK_VERSION

        ys = data["header"].get("yardstick")
        if not isinstance(ys, dict) or ys.get("version") != YARDSTICK_VERSION or not isinstance(ys.get("ms"), (int, float)):
            raise TableError(f"latency table {path}: 'header.yardstick' is {ys!r}, not the unit of yardstick version "
                             f"{YARDSTICK_VERSION}; delete it, then rebuild with '{build_command(data['header'], path)}'")
        return cls(data["header"], data["ops"], data.get("calibration"), path)
