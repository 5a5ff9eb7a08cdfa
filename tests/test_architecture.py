"""Architecture encoding: JSON and compact-string round trips, stable ids, clear errors."""
import json
import random

import pytest
from hypothesis import given, settings, strategies as st

from search_spaces import Architecture, ArchitectureError, get_space, parse_architecture

SPACE = get_space("cpu_detector")


@settings(max_examples=1000, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_sampled_architectures_round_trip(seed):
    arch = SPACE.sample(random.Random(seed))
    assert Architecture.from_json(arch.to_json()) == arch
    assert Architecture.from_json(arch.to_json()).id == arch.id
    text = SPACE.to_string(arch)
    assert SPACE.from_string(text) == arch
    assert parse_architecture(text) == arch


def test_id_is_stable_and_canonical():
    arch = Architecture("cpu_detector", {"b": 1, "a": "x"})
    assert arch.to_json() == '{"sample":{"a":"x","b":1},"schema":1,"space":"cpu_detector"}'
    assert arch.id == Architecture("cpu_detector", {"a": "x", "b": 1}).id
    assert len(arch.id) == 12


def test_reference_architectures_are_valid_and_distinct():
    refs = SPACE.reference_architectures()
    assert {n.rsplit("_w", 1)[0] for n in refs} == {"pp_lcnet_like", "mobilenetv2_like", "shufflenetv2_like", "ghostnet_like"}
    assert len({a.id for a in refs.values()}) == 8
    for arch in refs.values():
        SPACE.validate(arch)


def _valid():
    return SPACE.sample(random.Random(1))


@pytest.mark.parametrize("mutate, expected", [
    (lambda a: a.replace(**{"s1.depth": "2"}), "field 'sample.s1.depth' has value '2' (str); allowed values: [1, 2]"),
    (lambda a: a.replace(**{"s1.b0.kind": "resnet"}), "field 'sample.s1.b0.kind' has value 'resnet'"),
    (lambda a: Architecture(a.space, {k: v for k, v in a.sample.items() if k != "neck.channels"}), "missing field 'sample.neck.channels'"),
    (lambda a: a.replace(**{"neck.channels": 1000}), "allowed values: [48, 64, 96]"),
    (lambda a: a.replace(**{"s9.depth": 1}), "unknown field 'sample.s9.depth'"),
    (lambda a: a.replace(**{"s1.b0.se": 1}), "field 'sample.s1.b0.se' has value 1 (int); allowed values: [False, True]"),
])
def test_malformed_architectures_name_the_field(mutate, expected):
    with pytest.raises(ArchitectureError) as err:
        SPACE.validate(mutate(_valid()))
    assert expected in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ("[1, 2]", "must be a JSON object"),
    ('{"space": "cpu_detector"}', "missing field 'sample'"),
    ('{"space": "cpu_detector", "sample": {}, "extra": 1}', "unknown field(s) ['extra']"),
    ('{"schema": 9, "space": "cpu_detector", "sample": {}}', "field 'schema' is 9"),
    ('{"space": "cpu_detector", "sample": {"a": [1]}}', "field 'sample.a' must be a number"),
    ("{not json", "not valid JSON"),
])
def test_malformed_json(text, expected):
    with pytest.raises(ArchitectureError) as err:
        Architecture.from_json(text)
    assert expected in str(err.value)


def test_unknown_space_and_bad_compact_string():
    with pytest.raises(ArchitectureError, match="unknown search space 'nope'"):
        parse_architecture('{"space": "nope", "sample": {}}')
    good = SPACE.to_string(_valid())
    with pytest.raises(ArchitectureError, match="unknown token 'q7'"):
        SPACE.from_string(good.replace("_k", "_q7_k", 1))
    with pytest.raises(ArchitectureError, match="field 's1.b0.kind' has value 'resnet'"):
        SPACE.from_string(good.replace("s1x0.5:", "s1x0.5:resnet_k3+", 1).replace("s1x0.75:", "s1x0.75:resnet_k3+", 1).replace("s1x1.0:", "s1x1.0:resnet_k3+", 1))


def test_architecture_file(tmp_path):
    arch = _valid()
    path = tmp_path / "arch.json"
    path.write_text(arch.to_json(indent=2))
    assert parse_architecture(str(path)) == arch
    path.write_text(json.dumps({"space": "cpu_detector", "sample": {"s1.depth": 7}}))
    with pytest.raises(ArchitectureError, match=str(path)):
        parse_architecture(str(path))


def test_mutate_changes_one_active_decision():
    rng = random.Random(3)
    for _ in range(200):
        arch = SPACE.sample(rng)
        child = SPACE.mutate(arch, rng)
        # Decisions that become (in)active with the change are reset by canonicalisation;
        # among those active before and after, exactly one differs.
        both = set(SPACE.active_decisions(arch)) & set(SPACE.active_decisions(child))
        changed = [k for k in both if arch.sample[k] != child.sample[k]]
        assert len(changed) == 1, changed


def test_space_conformance():
    from nas.testing.space_conformance import check_space

    check_space(get_space("cpu_detector", num_classes=2, input_size=64), n=10)


HOLD = {"neck.channels": 64, "neck.depth": 1, "neck.kernel": 3, "neck.pan": True, "head.depth": 2, "head.kernel": 3}


def test_a_held_space_enumerates_the_whole_spaces_ops():
    """Its op list (latency tables, supernet layouts) is the whole space's: walking the
    held space itself would build architectures it refuses."""
    held = get_space("cpu_detector", input_size=64, hold=HOLD)
    whole = get_space("cpu_detector", input_size=64)
    assert [s.key for s in held.enumerate_ops()] == [s.key for s in whole.enumerate_ops()]


def test_held_decisions_stay_put_and_build_no_other_network():
    """``hold`` narrows decisions to one value: samples, mutations and the references all
    carry it, a string with another value is refused naming the field, and the space's
    settings (what tables and supernets are matched on) are the whole space's."""
    held = get_space("cpu_detector", hold=HOLD)
    rng = random.Random(0)
    archs = [held.sample(rng) for _ in range(20)]
    archs += [held.mutate(a, rng) for a in archs]
    archs += list(held.reference_architectures().values())
    assert all(a.sample[k] == v for a in archs for k, v in HOLD.items())
    assert len({held.to_string(a) for a in held.reference_architectures().values()}) == 8
    assert len({held.to_string(a) for a in archs[:20]}) == 20  # the backbones still vary
    assert held.settings() == SPACE.settings() and held.unrestricted().decisions() == SPACE.decisions()
    assert SPACE.unrestricted() is SPACE
    free = SPACE.from_string("cpu_detector|s1x1.0:dsconv_k3_hs|s2x1.0:dsconv_k3_hs|s3x1.0:dsconv_k3_hs|"
                             "s4x1.0:dsconv_k3_hs|s5x1.0:dsconv_k3_hs|neck:c96_d2_k5|head:d1_k5")
    with pytest.raises(ArchitectureError, match=r"field 'sample\.(neck|head)\.\w+' has value \d+ \(int\); allowed values: \[\d+\]"):
        held.validate(free)


@pytest.mark.parametrize("hold, message", [
    ({"nek.depth": 1}, "'nek.depth' is not a decision of cpu_detector"),
    ({"neck.depth": 5}, "neck.depth = 5 (int) is not one of its values [0, 1, 2]"),
    ({"neck.pan": 1}, "neck.pan = 1 (int) is not one of its values [False, True]"),
    ("neck.depth", "is not a mapping of decisions to values"),
])
def test_a_bad_hold_names_the_decision(hold, message, tmp_path, capsys):
    """An InputError naming the space and the decision; from a config, exit 2 without a
    traceback and without a run folder."""
    from search_spaces import InputError
    from nas.cli import main

    with pytest.raises(InputError) as err:
        get_space("cpu_detector", hold=hold)
    assert message in str(err.value) and "space 'cpu_detector' settings: hold" in str(err.value)
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"space": {"name": "cpu_detector", "settings": {"hold": hold}}}))
    assert main(["search", "--config", str(config), "--budget", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "run").exists()
