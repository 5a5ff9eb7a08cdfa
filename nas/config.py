"""The search configuration: frozen dataclasses with commented defaults.

YAML in (``configs/default.yaml`` is the commented reference), overrides from the CLI,
and the resolved config written into the run folder, so a run can always be resumed or
reproduced from its own folder. Unknown fields are errors that name the file and field.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.errors import InputError, is_number

from .objectives import Objective


class ConfigError(InputError):
    """A config file or field that is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class SpaceConfig:
    name: str = "cpu_detector"
    settings: dict = field(default_factory=dict)        # e.g. {num_classes: 6, input_size: 256}


@dataclass(frozen=True)
class StrategyConfig:
    name: str = "evolution"                             # random | evolution | rl | tpe | darts | plugins
    options: dict = field(default_factory=dict)         # keyword arguments of the strategy


@dataclass(frozen=True)
class EvaluatorConfig:
    name: str = "train_proxy"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunnerConfig:
    name: str = "local"                                 # local (in process) | ray
    address: str | None = None                          # ray: join this cluster; None starts a local one
    max_concurrent: int = 2                             # ray: trials in flight
    cpus_per_trial: float = 1.0                         # ray: resources per trial
    max_failures: int = 1                               # ray: retries of a trial whose worker died


# What Ray accepts for the runner's numbers; 0 concurrent trials would mean "no limit" to
# Ray Tune and an error deep inside its limiter here, so it is refused up front.
RUNNER_CHECKS = {
    "max_concurrent": (lambda v: is_number(v, int) and v >= 1, "a whole number >= 1"),
    "cpus_per_trial": (lambda v: is_number(v) and 0 < v < math.inf, "a number > 0"),
    "max_failures": (lambda v: is_number(v, int) and v >= 0, "a whole number >= 0 (0: no retries)"),
}


@dataclass(frozen=True)
class SearchConfig:
    space: SpaceConfig = field(default_factory=SpaceConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    objective: dict = field(default_factory=lambda: {"mode": "constrained", "target_ms": 10.0})
    evaluators: tuple = (EvaluatorConfig("latency_table"), EvaluatorConfig("params_flops"), EvaluatorConfig("train_proxy"))
    budget: int = 20                                    # trials evaluated (duplicates not counted)
    time_budget_s: float | None = None                  # also stop asking after this much search wall-clock (summed over resumes)
    seed: int = 0
    references: tuple = ()                              # reference architectures evaluated too, for the report
    imports: tuple = ()                                 # plugin modules imported first (also in Ray workers)
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def make_objective(self) -> Objective:
        try:
            return Objective(**self.objective)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"field 'objective': {exc}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_NESTED = {"space": SpaceConfig, "strategy": StrategyConfig, "runner": RunnerConfig}


def build_dataclass(cls, data: Any, where: str, base=None):
    """``cls`` from a mapping, on top of ``base``; unknown fields and bad values name ``where``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(names)}")
    # YAML lists arrive as lists; the frozen configs hold tuples (hashable, immutable).
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return dataclasses.replace(base, **data) if base is not None else cls(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


_build = build_dataclass


def config_from_dict(data: dict, where: str = "config") -> SearchConfig:
    data = dict(data or {})
    for key, cls in _NESTED.items():
        if key in data:
            data[key] = _build(cls, data[key], f"{where}: field '{key}'")
    if "evaluators" in data:
        evs = data["evaluators"]
        if not isinstance(evs, (list, tuple)) or not evs:
            raise ConfigError(f"{where}: field 'evaluators' must be a non-empty list")
        data["evaluators"] = tuple(
            _build(EvaluatorConfig, e if isinstance(e, dict) else {"name": e}, f"{where}: field 'evaluators[{i}]'")
            for i, e in enumerate(evs))
    for key in ("references", "imports"):
        if key in data:
            data[key] = tuple(data[key] or ())
    cfg = _build(SearchConfig, data, where)
    if not isinstance(cfg.budget, int) or cfg.budget < 1:
        raise ConfigError(f"{where}: field 'budget' must be a positive integer, got {cfg.budget!r}")
    for name, (ok, wanted) in RUNNER_CHECKS.items():
        value = getattr(cfg.runner, name)
        if not ok(value):
            raise ConfigError(f"{where}: field 'runner.{name}' must be {wanted}, got {value!r}")
    try:
        cfg.make_objective()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return cfg


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file; missing file, bad YAML or a non-mapping are ConfigErrors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (see configs/default.yaml for a commented example)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None, overrides: dict | None = None) -> SearchConfig:
    """Read YAML (or start from defaults), apply ``overrides`` (dotted keys allowed)."""
    data: dict = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides), str(path) if path is not None else "defaults")


def apply_overrides(data: dict, overrides: dict | None) -> dict:
    """A copy of the config mapping ``data`` with ``{"dotted.key": value}`` set (None skipped)."""
    import copy

    data = copy.deepcopy(data)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


def save_config(cfg: SearchConfig, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False), encoding="utf-8")


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
