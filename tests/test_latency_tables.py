"""Latency tables on a tiny space: format round trip, stable keys, clear errors,
resumable builds, and a predictor close to whole-model measurement."""
import json

import pytest

import toy_conv_space  # noqa: F401  (registers "toy_conv")
from latency_tables import profiler
from latency_tables.predictor import LatencyTable
from latency_tables.table import MissingOpError, TableData, TableError
from search_spaces import OpSpec, get_space


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("tables") / "toy.json"
    space = get_space("toy_conv")
    table = profiler.build_table(space, threads=1, out=path, calibration_models=6, progress=False)
    return space, path, table


def test_table_round_trips_and_records_fingerprint(built):
    space, path, table = built
    loaded = TableData.load(path)
    assert loaded.ops == table.ops and loaded.header == table.header
    assert set(loaded.ops) == {op.key for op in space.enumerate_ops()}
    fp = loaded.header["fingerprint"]
    assert fp["threads"] == 1 and fp["runtime"] == "onnxruntime" and fp["cpu_model"]
    entry = next(iter(loaded.ops.values()))
    assert entry["ms"] > 0 and entry["iqr_ms"] >= 0 and entry["runs"] >= 30
    assert loaded.calibration["n_models"] >= 6 and len(loaded.calibration["coef"]) == len(loaded.calibration["features"])


def test_op_keys_are_stable():
    a = OpSpec.make("conv", [(1, 3, 16, 16)], "x", cout=8, kernel=3, stride=1, act="relu")
    b = OpSpec.make("conv", [(1, 3, 16, 16)], "y", act="relu", stride=1, kernel=3, cout=8)
    assert a.key == b.key == "conv|act=relu,cout=8,kernel=3,stride=1|1x3x16x16"


def test_missing_op_names_key_and_command(built, tmp_path):
    space, path, _ = built
    data = json.loads(path.read_text())
    victim = sorted(data["ops"])[0]
    del data["ops"][victim]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(data))
    table = LatencyTable.load(partial, space)
    arch = next(a for a in (space.from_sample({"depth": d, "width": w, "kernel": k})
                            for d in (1, 2) for w in (8, 16) for k in (3, 5))
                if victim in {op.key for op in space.ops(a)})
    with pytest.raises(MissingOpError) as err:
        table.predict(arch)
    assert victim in str(err.value) and "nas latency build --space toy_conv" in str(err.value)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is corrupt"),
    ('{"schema": 99, "header": {}, "ops": {}}', "has schema 99"),
    ('{"schema": 2, "header": {}, "ops": {"k": {"kind": "conv"}}}', "entry 'ops.k' has no numeric 'ms'"),
    ('[]', "has schema 'list'"),
    ('{"schema": 2, "header": {}, "ops": {}}', "'header.yardstick' is None"),
])
def test_corrupt_or_wrong_schema_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TableError) as err:
        TableData.load(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_interrupted_build_resumes_without_remeasuring(tmp_path, monkeypatch):
    space = get_space("toy_conv")
    out = tmp_path / "resume.json"
    profiler.build_table(space, 1, out, calibration_models=0, progress=False, max_ops=3)  # "interrupted" after 3 ops
    first = TableData.load(out).ops
    assert len(first) == 3
    measured = []
    real = profiler.measure_op
    monkeypatch.setattr(profiler, "measure_op", lambda spec, threads, unit: measured.append(spec.key) or real(spec, threads, unit))
    profiler.build_table(space, 1, out, calibration_models=0, progress=False)
    final = TableData.load(out).ops
    assert not set(measured) & set(first)                      # nothing measured twice
    assert len(final) == len(space.enumerate_ops())
    assert all(final[k] == v for k, v in first.items())         # earlier results kept as they were


def test_build_refuses_to_mix_settings(built):
    _, path, _ = built
    with pytest.raises(TableError, match="not toy_conv"):
        profiler.open_for_build(get_space("toy_conv", input_size=32), 1, path)
    with pytest.raises(TableError, match="threads"):
        profiler.open_for_build(get_space("toy_conv"), 2, path)


def test_predictor_close_to_measurement(built):
    space, path, _ = built
    table = LatencyTable.load(path, space)
    archs = [space.from_sample({"depth": 2, "width": w, "kernel": k}) for w in (8, 16) for k in (3, 5)]
    for arch in archs:
        predicted = table.predict(arch)
        measured = profiler.measure_model(space, arch, 1).ms
        # Loose: these nets run in tens of microseconds, where timer noise is large.
        assert 0.4 < predicted / measured < 2.5, (arch.sample, predicted, measured)


def test_machine_drift_rescales_predictions(built):
    from latency_tables.validate import machine_drift

    space, path, _ = built
    table = LatencyTable.load(path, space)
    arch = space.from_sample({"depth": 2, "width": 8, "kernel": 3})
    before = table.predict(arch)
    # Pretend the build ran on a machine twice as fast: the re-timed networks now take
    # about twice as long, and the factor says so.
    table.table.calibration["measured_ms"] = {a: ms / 2 for a, ms in table.table.calibration["measured_ms"].items()}
    drift = machine_drift(table, n=4)
    assert len(drift.ratios) == 4 and 1.2 < drift.factor < 4.0, drift
    table.scale = drift.factor
    assert table.predict(arch) == pytest.approx(before * drift.factor)
    assert "calibration networks re-timed" in drift.line()


def test_yardstick_timing_measures_work_as_multiples_of_the_yardstick():
    # Timed against itself the yardstick is one unit; two yardsticks in a row are two.
    # Ratios, not wall-clock, so this holds whatever speed the machine runs at.
    import torch

    from latency_tables import runtime

    one = runtime._Yardstick()

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = one

        def forward(self, x):
            return self.inner(x) + self.inner(x + 1)

    x = torch.rand(1, 3, 256, 256)
    items = [(runtime.ort_session(runtime.to_onnx_bytes(m, [x], ["images"]), 1), {"images": x.numpy()})
             for m in (one, Twice())]
    single, double = runtime.time_interleaved(items, threads=1, unit_ms=1.0, windows=2, seconds=0.1)
    assert 0.8 < single.ms < 1.25, single
    assert 1.6 < double.ms / single.ms < 2.5, (single, double)
    assert single.median_ms >= single.ms and single.runs >= 20


def test_reference_unit_comes_from_a_table_measured_here(tmp_path, monkeypatch, built):
    from latency_tables import runtime

    _, path, table = built
    assert table.header["yardstick"]["version"] == runtime.YARDSTICK_VERSION and table.header["yardstick"]["ms"] > 0
    here = json.loads(path.read_text())
    here["header"]["yardstick"]["ms"] = 1.234
    elsewhere = json.loads(path.read_text())
    elsewhere["header"]["fingerprint"]["cpu_model"] = "another CPU"
    elsewhere["header"]["yardstick"]["ms"] = 9.0
    (tmp_path / "a_elsewhere.json").write_text(json.dumps(elsewhere))
    (tmp_path / "b_here.json").write_text(json.dumps(here))
    monkeypatch.setattr(runtime, "TABLES_DIR", tmp_path)
    monkeypatch.setattr(runtime, "UNIT_CACHE", tmp_path / "cache" / "reference_ms.json")
    monkeypatch.setattr(runtime, "_reference_ms", {})
    assert runtime.reference_ms(1) == 1.234          # the other machine's table is skipped
    monkeypatch.setattr(runtime, "_reference_ms", {})
    (tmp_path / "b_here.json").unlink()
    measured = runtime.reference_ms(1)                # no table from here: measured now ...
    assert measured != 9.0 and 0.05 < measured < 100
    monkeypatch.setattr(runtime, "_reference_ms", {})  # ... and kept for the next process
    monkeypatch.setattr(runtime, "measure_reference_ms", lambda threads: pytest.fail("measured twice"))
    assert runtime.reference_ms(1) == measured


def test_each_machine_finds_its_own_committed_table(tmp_path, monkeypatch, built):
    from latency_tables import predictor
    from latency_tables.fingerprint import machine_tag

    space, path, _ = built
    stem = predictor.table_stem(space, 1)
    elsewhere = json.loads(path.read_text())
    elsewhere["header"]["fingerprint"]["cpu_model"] = "another CPU"
    (tmp_path / f"{stem}.json").write_text(json.dumps(elsewhere))
    (tmp_path / f"{stem}.this-cpu.json").write_text(path.read_text())
    monkeypatch.setattr(predictor, "TABLES_DIR", tmp_path)
    # The file measured on this machine wins over the plain name, and a build goes there.
    assert predictor.default_table_path(space, 1).name == f"{stem}.this-cpu.json"
    assert predictor.build_table_path(space, 1).name == f"{stem}.this-cpu.json"
    (tmp_path / f"{stem}.this-cpu.json").unlink()
    # None from here: the plain name is used (with a warning on load) and never overwritten.
    assert predictor.default_table_path(space, 1).name == f"{stem}.json"
    assert predictor.build_table_path(space, 1).name == f"{stem}.{machine_tag()}.json"
    with pytest.warns(predictor.FingerprintMismatchWarning, match="another CPU"):
        predictor.LatencyTable.default(space, 1)
    assert machine_tag() and machine_tag() == machine_tag().lower() and " " not in machine_tag()
