"""The search-space contract and the op spec that latency tables measure.

A space owns its decisions and everything derived from them: sampling, mutation,
canonical form, the compact string, the torch model and the list of ops (``ops()``)
that the latency table measures. Strategies see only ``decisions()`` and flat samples.
"""
from __future__ import annotations

import functools
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .architecture import Architecture, ArchitectureError, Choice
from .errors import InputError


def is_choice(value: Choice, choices: Sequence[Choice]) -> bool:
    """Whether ``value`` is one of ``choices``, type included: bool is an int subclass,
    so True must not pass for 1 (nor 1 for 1.0's decision, where the types differ)."""
    return any(value == c and type(value) is type(c) for c in choices)


def check_assignments(assignments: Mapping[str, Choice], decisions: Mapping[str, Sequence[Choice]], where: str,
                      space_name: str, examples: str) -> None:
    """InputError, prefixed by ``where`` (e.g. ``"hold"``), for the first name in
    ``assignments`` that is not one of ``decisions`` (``examples`` suggests some) or whose
    value is not one of that decision's choices (:func:`is_choice`)."""
    for name, value in assignments.items():
        if name not in decisions:
            raise InputError(f"{where}: {name!r} is not a decision of {space_name} (e.g. {examples})")
        if not is_choice(value, decisions[name]):
            raise InputError(f"{where}: {name} = {value!r} ({type(value).__name__}) is not one of its values "
                             f"{list(decisions[name])}")


@dataclass(frozen=True)
class OpSpec:
    """One op of a built network, the unit a latency table measures.

    ``kind`` names an entry of the op registry (:mod:`search_spaces.ops`); ``params``
    holds every parameter that changes the op's cost; ``input_shapes`` the NCHW shapes
    it is called with. ``role`` says where in the network it sits (not part of the key:
    the same op at two places costs the same).
    """

    kind: str
    params: tuple[tuple[str, Choice], ...]
    input_shapes: tuple[tuple[int, ...], ...]
    role: str = ""

    @classmethod
    def make(cls, kind: str, input_shapes: Sequence[Sequence[int]], role: str = "", **params: Choice) -> "OpSpec":
        return cls(kind, tuple(sorted(params.items())), tuple(tuple(int(d) for d in s) for s in input_shapes), role)

    @property
    def param_dict(self) -> dict[str, Choice]:
        return dict(self.params)

    @property
    def key(self) -> str:
        """Stable table key, e.g. ``ir|act=hswish,cout=40,...|1x24x64x64``."""
        return _op_key(self.kind, self.params, self.input_shapes)


@functools.lru_cache(maxsize=65536)
def _op_key(kind: str, params: tuple, input_shapes: tuple) -> str:
    # Cached: the predictor builds the same few thousand keys millions of times.
    joined = ",".join(f"{k}={v}" for k, v in params)
    shapes = ";".join("x".join(str(d) for d in s) for s in input_shapes)
    return f"{kind}|{joined}|{shapes}"


class SearchSpace(ABC):
    """A family of architectures described by named, discrete decisions.

    Contract:
      * ``decisions()`` is fixed for the lifetime of the instance; choices are
        ``int``/``float``/``str``/``bool`` and the first choice of each is its default.
      * ``sample``/``mutate`` return *canonical* architectures (see ``canonicalize``);
        they draw randomness only from the ``rng`` passed in, so they are deterministic
        for a seeded ``random.Random``.
      * ``validate`` raises :class:`ArchitectureError` naming the field and the allowed
        values; every other method may assume a valid architecture.
      * ``build`` and ``ops`` are only required of spaces whose models are real networks
        (a tabular benchmark space implements neither).
    Instances are cheap and stateless apart from their settings; they are safe to share
    between threads.
    """

    name: str = ""

    # ----- decisions ---------------------------------------------------------------------
    @abstractmethod
    def decisions(self) -> dict[str, list[Choice]]:
        """Ordered ``{decision name: [choices...]}``."""

    def settings(self) -> dict[str, Any]:
        """Constructor settings that change the built model (input size, classes...)."""
        return {}

    def unrestricted(self) -> "SearchSpace":
        """The whole space this one's architectures are drawn from: itself, unless the
        space narrows some decisions (``cpu_detector``'s ``hold``). A supernet is built
        over the whole space, so it serves every narrowed one."""
        return self

    def active_decisions(self, arch: Architecture) -> list[str]:
        """Decisions that change the network for this architecture (default: all)."""
        return list(self.decisions())

    def canonicalize(self, arch: Architecture) -> Architecture:
        """Set every inactive decision to its default, so equal networks compare equal."""
        self.validate(arch)
        active = set(self.active_decisions(arch))
        decisions = self.decisions()
        sample = {k: (v if k in active else decisions[k][0]) for k, v in arch.sample.items()}
        return Architecture(self.name, sample)

    # ----- validation ------------------------------------------------------------------
    def _allowed(self) -> tuple[frozenset, int]:
        """(every allowed ``(decision, type, choice)``, the number of decisions), built
        once: validation is on every hot path (each latency prediction). The type is
        there because bool is an int subclass: True must not pass for 1. One tuple, so
        a thread never sees half of it."""
        cached = self.__dict__.get("_allowed_cache")
        if cached is None:
            decisions = self.decisions()
            cached = (frozenset((k, type(c), c) for k, v in decisions.items() for c in v), len(decisions))
            self.__dict__["_allowed_cache"] = cached
        return cached

    def validate(self, arch: Architecture) -> None:
        if arch.space != self.name:
            raise ArchitectureError(f"field 'space' is {arch.space!r} but this space is {self.name!r}")
        allowed, n_decisions = self._allowed()
        sample = arch.sample
        if len(sample) == n_decisions and allowed.issuperset([(k, type(v), v) for k, v in sample.items()]):
            return  # the common case, checked in one pass; the slow path below explains errors
        decisions = self.decisions()
        missing = [k for k in decisions if k not in arch.sample]
        if missing:
            raise ArchitectureError(
                f"missing field 'sample.{missing[0]}'" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + f"; allowed values: {decisions[missing[0]]}")
        for key, value in arch.sample.items():
            if key not in decisions:
                raise ArchitectureError(
                    f"unknown field 'sample.{key}' for space {self.name!r}; its decisions are e.g. {list(decisions)[:5]}")
            allowed = decisions[key]
            if not is_choice(value, allowed):
                raise ArchitectureError(
                    f"field 'sample.{key}' has value {value!r} ({type(value).__name__}); allowed values: {allowed}")

    # ----- random moves ----------------------------------------------------------------
    def sample(self, rng: random.Random) -> Architecture:
        """Uniform choice per decision, then canonicalised."""
        sample = {k: rng.choice(choices) for k, choices in self.decisions().items()}
        return self.canonicalize(Architecture(self.name, sample))

    def mutate(self, arch: Architecture, rng: random.Random) -> Architecture:
        """Change exactly one active decision to another of its choices."""
        decisions = self.decisions()
        candidates = [k for k in self.active_decisions(arch) if len(decisions[k]) > 1]
        if not candidates:
            return arch
        key = rng.choice(candidates)
        new_value = rng.choice([c for c in decisions[key] if not is_choice(c, [arch.sample[key]])])
        return self.canonicalize(arch.replace(**{key: new_value}))

    def from_sample(self, sample: Mapping[str, Choice]) -> Architecture:
        """Validated, canonical architecture from a flat dict (what a strategy produced)."""
        return self.canonicalize(Architecture(self.name, dict(sample)))

    def size(self) -> int:
        """Number of points in the (uncanonicalised) product of decisions."""
        n = 1
        for choices in self.decisions().values():
            n *= len(choices)
        return n

    # ----- compact string ----------------------------------------------------------------
    def to_string(self, arch: Architecture) -> str:
        """Compact human-readable form; default ``space:key=value,...``."""
        self.validate(arch)
        return f"{self.name}:" + ",".join(f"{k}={v}" for k, v in arch.sample.items())

    def from_string(self, text: str) -> Architecture:
        prefix = f"{self.name}:"
        if not text.startswith(prefix):
            raise ArchitectureError(f"compact string must start with {prefix!r}, got {text[:40]!r}")
        decisions = self.decisions()
        sample: dict[str, Choice] = {}
        for item in filter(None, text[len(prefix):].split(",")):
            if "=" not in item:
                raise ArchitectureError(f"compact string item {item!r} is not 'decision=value'")
            key, raw = item.split("=", 1)
            if key not in decisions:
                raise ArchitectureError(f"unknown field 'sample.{key}' in compact string")
            sample[key] = _parse_choice(raw, decisions[key], key)
        arch = Architecture(self.name, sample)
        self.validate(arch)
        return arch

    # ----- networks ------------------------------------------------------------------------
    def build(self, arch: Architecture):
        """``torch.nn.Module`` for this architecture."""
        raise NotImplementedError(f"space {self.name!r} does not build networks")

    def ops(self, arch: Architecture, input_hw: tuple[int, int] | None = None) -> list[OpSpec]:
        """Every op of the built network with its input shapes, in execution order."""
        raise NotImplementedError(f"space {self.name!r} has no op list")

    def op_groups(self, arch: Architecture, input_hw: tuple[int, int] | None = None):
        """``ops()`` as ``[(key, make_specs)]`` groups, where ``key`` (hashable) determines
        the specs ``make_specs()`` returns. Predictors cache per key. Default: one group."""
        return [((self.name, arch.to_json(), input_hw), lambda: self.ops(arch, input_hw))]

    def enumerate_ops(self, input_hw: tuple[int, int] | None = None, per_role: bool = False) -> list[OpSpec]:
        """Every distinct op any architecture of the space can produce (for tables);
        ``per_role``: listed once per role that can hold it (for weight-sharing supernets)."""
        raise NotImplementedError(f"space {self.name!r} cannot enumerate its ops")

    def reference_architectures(self) -> dict[str, Architecture]:
        """Hand-designed baselines expressed in this space."""
        return {}


def _parse_choice(raw: str, allowed: Sequence[Choice], key: str) -> Choice:
    for choice in allowed:
        if str(choice) == raw:
            return choice
    raise ArchitectureError(f"field 'sample.{key}' has value {raw!r}; allowed values: {list(allowed)}")
