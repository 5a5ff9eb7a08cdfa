"""``nas sweep``: a grid of searches in sub-folders, resumable, with a side-by-side
summary (in process here; on Ray in test_ray_runner.py and test_darts.py)."""
import json

import pytest

from nas.cli import main
from nas.engine import RunFolder
from nas.sweep import Sweep, Variant, grid
from search_spaces import InputError

BASE = {"space": {"name": "toy"}, "strategy": {"name": "evolution", "options": {"population_size": 4, "sample_size": 2}},
        "budget": 6, "imports": ["nas.testing.fake_evaluators"], "evaluators": ["toy_latency", "toy_accuracy"],
        "objective": {"mode": "constrained", "target_ms": 10.0}}


def test_grid_names_and_overrides():
    names = [v.name for v in grid([2.5, 4.0], [0, 1])]
    assert names == ["t2.5-s0", "t2.5-s1", "t4-s0", "t4-s1"]
    assert grid([3.0])[0].overrides == {"objective.target_ms": 3.0, "seed": None}


def test_local_sweep_runs_every_variant_and_resumes(tmp_path):
    sw = Sweep.new(tmp_path / "sw", BASE, grid([15.0, 25.0], [0]))
    rows = sw.run("local", progress=False)
    assert [r["variant"] for r in rows] == ["t15-s0", "t25-s0"] and all(r["status"] == "done" for r in rows)
    for row, target in zip(rows, (15.0, 25.0)):
        cfg = RunFolder(tmp_path / "sw" / row["variant"]).config()
        assert cfg.objective["target_ms"] == target and row["trials"] == 6
        assert row["latency_ms"] <= target             # constrained: the best respects its own target
    assert "| t15-s0 | 15 | done |" in (tmp_path / "sw" / "sweep.md").read_text()
    # Resuming a finished sweep re-runs nothing.
    before = (tmp_path / "sw" / "t15-s0" / "trials.jsonl").read_text()
    Sweep.resume(tmp_path / "sw").run("local", progress=False)
    assert (tmp_path / "sw" / "t15-s0" / "trials.jsonl").read_text() == before


def test_interrupted_variant_is_completed_on_resume(tmp_path):
    sw = Sweep.new(tmp_path / "sw", BASE, grid([6.0], [0, 1]))
    from nas.sweep import run_variant

    # Variant s0 ran partly (budget 3 of 6), s1 never started.
    run_variant({**BASE, "budget": 3}, sw.variants[0].overrides, tmp_path / "sw" / "t6-s0")
    cfg_path = tmp_path / "sw" / "t6-s0" / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("budget: 3", "budget: 6"))
    (tmp_path / "sw" / "t6-s0" / "report.md").unlink()  # it had not finished
    first = (tmp_path / "sw" / "t6-s0" / "trials.jsonl").read_text().splitlines()
    rows = Sweep.resume(tmp_path / "sw").run("local", progress=False)
    assert [r["trials"] for r in rows] == [6, 6]
    after = (tmp_path / "sw" / "t6-s0" / "trials.jsonl").read_text().splitlines()
    assert after[:len(first)] == first                # the finished trials were kept, not re-run


def test_failed_variant_is_reported_and_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    from nas.engine import Engine

    real_run = Engine.run

    def run(self, *args, **kwargs):
        if self.folder.path.name == "t15-s0":
            raise RuntimeError("worker ran out of memory")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "run", run)
    rows = Sweep.new(tmp_path / "sw", BASE, grid([15.0, 25.0], [0])).run("local", progress=False)
    assert rows[0]["status"] == "failed: RuntimeError: worker ran out of memory" and rows[1]["status"] == "done"
    assert "variant t15-s0 failed" in capsys.readouterr().err
    assert "| t15-s0 | 15 | failed: RuntimeError: worker ran out of memory |" in (tmp_path / "sw" / "sweep.md").read_text()
    monkeypatch.setattr(Engine, "run", real_run)  # the cause is gone: a resume completes it and clears the error
    rows = Sweep.resume(tmp_path / "sw").run("local", progress=False)
    assert [r["status"] for r in rows] == ["done", "done"] and not (tmp_path / "sw" / "t15-s0" / "error.txt").exists()


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--out", "X"], "give --targets"),
    (["sweep", "--targets", "2,x", "--out", "X"], "--targets expects comma-separated numbers"),
    (["sweep", "--targets", "2"], "--out is required"),
    (["sweep", "--resume", "nowhere"], "not a sweep folder"),
    (["sweep", "--targets", "2", "--out", "X", "--max-concurrent", "0"], "--max-concurrent must be a whole number >= 1"),
    (["sweep", "--targets", "2", "--out", "X", "--cpus-per-trial", "0"], "--cpus-per-trial must be a number > 0"),
    (["sweep", "--targets", "2", "--out", "X", "--cpus-per-trial", "inf"], "--cpus-per-trial must be a number > 0"),
])
def test_sweep_usage_errors_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "X").exists()  # refused before the sweep folder is made


def test_sweep_cli_writes_summary(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(BASE))  # JSON is YAML
    assert main(["sweep", "--config", str(config), "--targets", "15,25", "--out", str(tmp_path / "sw"),
                 "--runner", "local", "--no-progress"]) in (0, None)
    out = capsys.readouterr().out
    assert "| t25 | 25 | done |" in out and (tmp_path / "sw" / "t15" / "best" / "arch.json").exists()
    # The same command with another target adds that search; another config is refused (exit 2).
    before = (tmp_path / "sw" / "t15" / "trials.jsonl").read_text()
    assert main(["sweep", "--config", str(config), "--targets", "15,35", "--out", str(tmp_path / "sw"),
                 "--runner", "local", "--no-progress"]) in (0, None)
    out = capsys.readouterr().out
    assert "| t35 | 35 | done |" in out and "| t25 |" not in out
    assert (tmp_path / "sw" / "t15" / "trials.jsonl").read_text() == before
    assert main(["sweep", "--config", str(config), "--budget", "3", "--targets", "15", "--out", str(tmp_path / "sw"),
                 "--runner", "local", "--no-progress"]) == 2
    assert "another base config (differs in budget)" in capsys.readouterr().err


def test_bad_strategy_option_fails_before_the_sweep_folder_is_written(tmp_path):
    """Every variant's strategy options are checked up front, as `nas search` checks
    its one config: no sweep folder, and the message names the variant and option."""
    from search_spaces.errors import InputError

    base = {**BASE, "strategy": {"name": "evolution", "options": {"population_size": 0}}}
    with pytest.raises(InputError, match=r"sweep variant t15-s0: evolution option 'population_size': 0 is not"):
        Sweep.new(tmp_path / "sw", base, grid([15.0], [0]))
    assert not (tmp_path / "sw").exists()


def test_open_extends_a_sweep_with_new_variants_and_refuses_other_settings(tmp_path):
    out = tmp_path / "sw"
    Sweep.open(out, BASE, grid([15.0], [0])).run("local", progress=False)
    before = (out / "t15-s0" / "trials.jsonl").read_text()
    # More seeds on the same folder: the new one runs, the finished one is kept as it is.
    rows = Sweep.open(out, BASE, grid([15.0], [0, 1])).run("local", progress=False)
    assert [r["variant"] for r in rows] == ["t15-s0", "t15-s1"] and all(r["status"] == "done" for r in rows)
    assert (out / "t15-s0" / "trials.jsonl").read_text() == before
    assert [v.name for v in Sweep.resume(out).variants] == ["t15-s0", "t15-s1"]
    # Fewer variants: only those are run and summarised; sweep.json keeps both.
    assert [r["variant"] for r in Sweep.open(out, BASE, grid([15.0], [1])).run("local", progress=False)] == ["t15-s1"]
    assert len(json.loads((out / "sweep.json").read_text())["variants"]) == 2
    # Other settings would mix searches that are not the ones asked for: refused, nothing written.
    stored = (out / "sweep.json").read_text()
    with pytest.raises(InputError, match="another base config.*budget"):
        Sweep.open(out, {**BASE, "budget": 7}, grid([15.0], [0, 2]))
    with pytest.raises(InputError, match="t15-s0 was started with"):
        Sweep.open(out, BASE, [Variant("t15-s0", {"objective.target_ms": 16.0, "seed": 0})])
    with pytest.raises(InputError, match="sweep variant t15-s2"):  # a bad new variant, before writing
        Sweep.open(out, BASE, [Variant("t15-s2", {"objective.mode": "nonsense"})])
    assert (out / "sweep.json").read_text() == stored
    with pytest.raises(InputError, match="must differ"):
        Sweep.open(out, BASE, grid([15.0], [1, 1]))
    # A variant without a seed (None) survives sweep.json's round trip: reopened, not refused.
    Sweep.open(tmp_path / "sw2", BASE, grid([15.0]))
    assert [v.overrides for v in Sweep.open(tmp_path / "sw2", BASE, grid([15.0])).variants] == [
        {"objective.target_ms": 15.0, "seed": None}]
