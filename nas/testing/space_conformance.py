"""Conformance checks for search-space plugins.

A plugin author runs these against their space (see ``tests/test_plugin.py``)::

    from nas.testing.space_conformance import check_space
    check_space(MySpace())

Each check raises ``AssertionError`` with a message naming the space and the problem.
Networks are built and run only when the space implements ``build``.
"""
from __future__ import annotations

import json
import random

from search_spaces import Architecture, ArchitectureError, SearchSpace


def check_decisions(space: SearchSpace) -> None:
    d = space.decisions()
    assert d, f"{space.name}: decisions() is empty"
    for key, choices in d.items():
        assert isinstance(key, str) and choices, f"{space.name}: decision {key!r} has no choices"
        assert len({(type(c), c) for c in choices}) == len(choices), f"{space.name}: decision {key!r} repeats a choice"


def check_sampling(space: SearchSpace, n: int = 20, seed: int = 0) -> list[Architecture]:
    a = [space.sample(random.Random(seed)) for _ in range(2)]
    assert a[0] == a[1], f"{space.name}: sample() is not deterministic for a seeded rng"
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(n)]
    for arch in archs:
        space.validate(arch)
        assert space.canonicalize(arch) == arch, f"{space.name}: sample() returned a non-canonical architecture"
    return archs


def check_round_trips(space: SearchSpace, archs: list[Architecture]) -> None:
    for arch in archs:
        back = Architecture.from_json(arch.to_json())
        assert back == arch and back.id == arch.id, f"{space.name}: JSON round-trip changed {arch.to_json()}"
        text = space.to_string(arch)
        assert space.from_string(text) == arch, f"{space.name}: compact string {text!r} does not round-trip"


def check_mutation(space: SearchSpace, archs: list[Architecture], seed: int = 0) -> None:
    rng = random.Random(seed)
    for arch in archs:
        child = space.mutate(arch, rng)
        space.validate(child)
        changed = [k for k in space.active_decisions(arch) if child.sample[k] != arch.sample[k]]
        assert changed, f"{space.name}: mutate() returned the parent unchanged"


def check_validation_errors(space: SearchSpace, arch: Architecture) -> None:
    key = next(iter(space.decisions()))
    bad_cases = {
        "unknown field": arch.replace(**{"no_such_decision": 1}),
        "missing field": Architecture(space.name, {k: v for k, v in arch.sample.items() if k != key}),
        "out-of-range value": arch.replace(**{key: "__not_a_choice__"}),
    }
    for what, bad in bad_cases.items():
        try:
            space.validate(bad)
        except ArchitectureError as exc:
            assert "sample." in str(exc), f"{space.name}: the {what} error does not name the field: {exc}"
        else:
            raise AssertionError(f"{space.name}: validate() accepted an architecture with an {what}")
    json.loads(arch.to_json())


def check_networks(space: SearchSpace, archs: list[Architecture]) -> None:
    import torch

    try:
        model = space.build(archs[0])
    except NotImplementedError:
        return
    size = space.settings().get("input_size", 64)
    for arch in archs[:3]:
        model = space.build(arch).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, size, size))
        assert out is not None, f"{space.name}: forward returned None"
        ops = space.ops(arch)
        assert ops and all(op.key for op in ops), f"{space.name}: ops() is empty"


def check_space(space: SearchSpace, n: int = 20, seed: int = 0) -> None:
    """Run every check above."""
    check_decisions(space)
    archs = check_sampling(space, n, seed)
    check_round_trips(space, archs)
    check_mutation(space, archs, seed)
    check_validation_errors(space, archs[0])
    check_networks(space, archs)
