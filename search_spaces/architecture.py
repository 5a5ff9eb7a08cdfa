"""The architecture type: pure data, no torch.

An :class:`Architecture` is the name of a registered search space plus a flat
``sample``: one choice per named decision (``{"s1.depth": 2, "s1.b0.kind": "ir", ...}``).
Strategies only ever see and produce this flat dict; the space turns it into a model.

Canonical JSON (sorted keys, a schema version) is the on-disk form, and the stable
``id`` is a hash of it, so the same architecture always has the same id on every
machine and in every run.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from .errors import InputError

Choice = Union[int, float, str, bool]
Sample = dict  # {decision name: Choice}

SCHEMA_VERSION = 1


class ArchitectureError(InputError):
    """A malformed architecture: the message names the field and what is allowed."""


@dataclass(frozen=True)
class Architecture:
    """One point of a search space.

    ``space`` is a registered space name; ``sample`` maps every decision of that space
    to one of its choices. Instances are immutable and hashable by their canonical JSON.
    """

    space: str
    sample: Mapping[str, Choice] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.space, str) or not self.space:
            raise ArchitectureError(f"field 'space' must be a non-empty string, got {self.space!r}")
        if not isinstance(self.sample, Mapping):
            raise ArchitectureError(f"field 'sample' must be an object of decision -> choice, got {type(self.sample).__name__}")
        for key, value in self.sample.items():
            if not isinstance(key, str):
                raise ArchitectureError(f"decision names must be strings, got {key!r}")
            if not isinstance(value, (int, float, str, bool)):
                raise ArchitectureError(
                    f"field 'sample.{key}' must be a number, string or boolean, got {type(value).__name__}")
        # A private sorted copy: callers cannot mutate it afterwards.
        object.__setattr__(self, "sample", dict(sorted(self.sample.items())))

    # ----- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "space": self.space, "sample": dict(self.sample)}

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON: sorted keys, no whitespace unless ``indent`` is given."""
        if indent is None:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "Architecture":
        if not isinstance(data, Mapping):
            raise ArchitectureError(f"an architecture must be a JSON object, got {type(data).__name__}")
        schema = data.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise ArchitectureError(
                f"field 'schema' is {schema!r}; this version reads schema {SCHEMA_VERSION}")
        for name in ("space", "sample"):
            if name not in data:
                raise ArchitectureError(f"missing field '{name}' (an architecture needs 'space' and 'sample')")
        unknown = sorted(set(data) - {"schema", "space", "sample"})
        if unknown:
            raise ArchitectureError(f"unknown field(s) {unknown}; allowed: 'schema', 'space', 'sample'")
        return cls(space=data["space"], sample=data["sample"])

    @classmethod
    def from_json(cls, text: str) -> "Architecture":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @property
    def id(self) -> str:
        """Stable 12-hex-digit id: a hash of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def replace(self, **changes: Choice) -> "Architecture":
        """A copy with some decisions changed."""
        return Architecture(self.space, {**self.sample, **changes})

    def __hash__(self) -> int:  # dict fields are not hashable by default
        return hash(self.to_json())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Architecture) and self.to_json() == other.to_json()
