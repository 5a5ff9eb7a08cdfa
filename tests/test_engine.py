"""The engine with a fake (table-cost) evaluator on the toy space: the run folder,
kill-and-resume without loss, failing trials, rejection on the table alone."""
import json

import pytest

from evaluators.base import Evaluator, register_evaluator
from nas.config import ConfigError, config_from_dict, load_config
from nas.engine import Engine, RunFolder
from nas.testing.toy_space import toy_metrics
from search_spaces.errors import InputError


@register_evaluator("toy_table")
class ToyTable(Evaluator):
    """Latency of the toy space, cheap tier."""
    cost = "table"

    def __call__(self, arch, space):
        return {"latency_ms": toy_metrics(arch)["latency_ms"]}


CALLS = {"n": 0, "fail_every": 0, "interrupt_at": None}


@register_evaluator("toy_train")
class ToyTrain(Evaluator):
    """Accuracy of the toy space, expensive tier; can fail or be 'killed' on demand."""
    cost = "train"

    def __call__(self, arch, space):
        CALLS["n"] += 1
        if CALLS["interrupt_at"] is not None and CALLS["n"] == CALLS["interrupt_at"]:
            raise KeyboardInterrupt
        if CALLS["fail_every"] and CALLS["n"] % CALLS["fail_every"] == 0:
            raise RuntimeError("simulated training crash")
        if CALLS["fail_every"] and CALLS["n"] % CALLS["fail_every"] == 1:
            return {"map50": float("nan")}
        return {"map50": toy_metrics(arch)["map50"]}


@pytest.fixture(autouse=True)
def reset_calls():
    CALLS.update(n=0, fail_every=0, interrupt_at=None)


def make_cfg(strategy="evolution", budget=25, mode="constrained", **extra):
    objective = {"mode": mode, "target_ms": 10.0} if mode != "pareto" else {"mode": "pareto"}
    return config_from_dict({"space": {"name": "toy"}, "strategy": {"name": strategy}, "budget": budget, "seed": 3,
                             "evaluators": ["toy_train", "toy_table"], "objective": objective, **extra})


def trial_ids(run):
    return [(r.trial, r.arch_id, r.status) for r in RunFolder(run).read() if r.reference is None]


def test_run_folder_contents(tmp_path):
    engine = Engine.new(make_cfg(), tmp_path / "run", progress=False)
    engine.run()
    folder = tmp_path / "run"
    for name in ("config.yaml", "trials.jsonl", "strategy.json", "pareto.json", "report.md", "pareto.png", "best/arch.json"):
        assert (folder / name).exists(), name
    lines = (folder / "trials.jsonl").read_text().splitlines()
    records = [json.loads(l) for l in lines]
    assert sum(r["status"] != "duplicate" for r in records) == 25
    assert load_config(folder / "config.yaml") == engine.cfg
    report = (folder / "report.md").read_text()
    assert "## Pareto front" in report and engine.best().arch_id in report


def test_rejected_on_table_alone(tmp_path):
    engine = Engine.new(make_cfg(budget=30), tmp_path / "run", progress=False)
    engine.run()
    rejected = [r for r in engine.records if r.status == "rejected"]
    assert rejected and all("map50" not in r.metrics and r.metrics["latency_ms"] > 10.0 for r in rejected)
    evaluated = [r for r in engine.records if r.status == "ok"]
    assert CALLS["n"] == len(evaluated)  # the expensive evaluator never ran on a rejected one


@pytest.mark.parametrize("strategy", ["random", "evolution", "rl", "tpe"])
def test_kill_and_resume_ends_with_the_same_trials(tmp_path, strategy):
    full = tmp_path / "full"
    Engine.new(make_cfg(strategy), full, progress=False).run()
    CALLS.update(n=0, interrupt_at=6)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        Engine.new(make_cfg(strategy), part, progress=False).run()
    before = trial_ids(part)
    assert 0 < len(before) < len(trial_ids(full))
    CALLS.update(interrupt_at=None)
    Engine.resume(part, progress=False).run()
    assert trial_ids(part)[:len(before)] == before      # nothing finished was lost or re-run
    assert trial_ids(part) == trial_ids(full)           # and the same search as without the crash


def test_resume_from_torn_log_and_stale_checkpoint(tmp_path):
    full = tmp_path / "full"
    Engine.new(make_cfg("evolution"), full, progress=False).run()
    run = tmp_path / "run"
    Engine.new(make_cfg("evolution", budget=10), run, progress=False).run()
    with open(run / "trials.jsonl", "a") as f:
        f.write('{"trial": 99, "arch"')            # killed in the middle of a write
    (run / "strategy.json").write_text("{}")        # and the checkpoint is stale: replay instead
    Engine.resume(run, progress=False, budget=25).run()
    assert trial_ids(run) == trial_ids(full)


def test_failing_trials_do_not_stop_the_search(tmp_path):
    CALLS.update(fail_every=4)
    engine = Engine.new(make_cfg("random", mode="soft", budget=16), tmp_path / "run", progress=False)
    engine.run()
    failed = [r for r in engine.records if r.status == "failed"]
    assert len(failed) >= 4
    assert any("simulated training crash" in r.error for r in failed)
    assert any("non-finite" in r.error for r in failed)
    assert sum(r.status != "duplicate" for r in engine.records) == 16
    assert "## Failed trials" in (tmp_path / "run" / "report.md").read_text()


def test_pareto_mode(tmp_path):
    engine = Engine.new(make_cfg("evolution", mode="pareto", budget=20), tmp_path / "run", progress=False)
    engine.run()
    front = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert front and all({"map50", "latency_ms"} <= set(p["metrics"]) for p in front)


def test_existing_run_folder_is_not_overwritten(tmp_path):
    Engine.new(make_cfg(budget=3), tmp_path / "run", progress=False).run()
    before = (tmp_path / "run" / "trials.jsonl").read_text()
    with pytest.raises(Exception, match="already holds a search"):
        Engine.new(make_cfg(budget=3), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "trials.jsonl").read_text() == before


@pytest.mark.parametrize("data, message", [
    ({"budget": 0}, "field 'budget'"),
    ({"strategy": {"nme": "x"}}, "unknown field(s) ['nme']"),
    ({"objective": {"mode": "constrained"}}, "target_ms"),
    ({"evaluators": []}, "non-empty list"),
    ({"bogus": 1}, "unknown field(s) ['bogus']"),
    ({"runner": {"max_concurrent": 0}}, "field 'runner.max_concurrent' must be a whole number >= 1, got 0"),
    ({"runner": {"max_concurrent": True}}, "field 'runner.max_concurrent'"),
    ({"runner": {"cpus_per_trial": "2"}}, "field 'runner.cpus_per_trial' must be a number > 0, got '2'"),
    ({"runner": {"max_failures": -1}}, "field 'runner.max_failures' must be a whole number >= 0"),
])
def test_config_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, "my.yaml")
    assert message in str(err.value) and "my.yaml" in str(err.value)


def test_report_command_rerenders(tmp_path):
    from nas.cli import main

    Engine.new(make_cfg(budget=6, mode="soft"), tmp_path / "run", progress=False).run()
    for name in ("report.md", "pareto.png", "pareto.json"):
        (tmp_path / "run" / name).unlink()
    assert main(["report", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "pareto.png").exists()
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_time_budget_stops_the_search_and_counts_across_resume(tmp_path):
    cfg = config_from_dict({"space": {"name": "toy"}, "strategy": {"name": "random"}, "budget": 100, "seed": 3,
                            "time_budget_s": 0.5, "imports": ["nas.testing.fake_evaluators"],
                            "evaluators": ["toy_latency", {"name": "toy_accuracy", "options": {"sleep_s": 0.1}}],
                            "objective": {"mode": "soft", "target_ms": 10.0}})
    Engine.new(cfg, tmp_path / "run", progress=False).run()
    records = RunFolder(tmp_path / "run").read()
    assert 3 <= len(records) <= 7                      # ~0.5 s of 0.1 s trials, not the budget of 100
    assert records[-1].elapsed >= 0.4 and all(a.elapsed <= b.elapsed for a, b in zip(records, records[1:]))
    # The spent time is in the log, so a resumed run knows the budget is gone.
    Engine.resume(tmp_path / "run", progress=False).run()
    assert len(RunFolder(tmp_path / "run").read()) == len(records)


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml", "darts.yaml"])
def test_shipped_configs_load_and_build_their_strategy(name, tmp_path):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / name
    cfg = load_config(path)
    engine = Engine(cfg, tmp_path / "run", progress=False)
    assert engine.new_strategy() is not None and engine.evaluators()


def test_strategy_from_a_config_import_is_checked_after_the_import(tmp_path, monkeypatch):
    """A strategy registered by a module under ``imports:`` is known to the engine's
    checks (they run after the import), and a budget below what a strategy may propose
    is refused on resume too, leaving the saved config as it was."""
    (tmp_path / "my_strategies.py").write_text(
        "from nas.strategies import register_strategy\n"
        "from nas.strategies.random_search import RandomSearch\n"
        "class Capped(RandomSearch):\n"
        "    @classmethod\n"
        "    def proposals(cls, options):\n"
        "        return 3\n"
        "register_strategy('capped_random')(Capped)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config_from_dict({"space": {"name": "toy"}, "strategy": {"name": "capped_random"}, "budget": 3, "seed": 1,
                            "imports": ["my_strategies", "nas.testing.fake_evaluators"],
                            "evaluators": ["toy_latency", "toy_accuracy"], "objective": {"mode": "accuracy"}})
    engine = Engine.new(cfg, tmp_path / "run", progress=False)
    assert type(engine.strategy).__name__ == "Capped"
    saved = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(InputError, match="--budget is 2, but strategy 'capped_random' may propose up to 3"):
        Engine.resume(tmp_path / "run", progress=False, budget=2)
    assert (tmp_path / "run" / "config.yaml").read_text() == saved


def test_a_search_with_the_neck_and_head_held_keeps_them(tmp_path):
    """``space.settings.hold`` narrows the space for every strategy: each trial and the
    evaluated references carry the held neck and head, and a resume rebuilds the same
    held space from the run folder's config."""
    from search_spaces import get_space

    from nas.strategies.darts import DEFAULT_FIXED as hold

    cfg = config_from_dict({"space": {"name": "cpu_detector", "settings": {"input_size": 64, "hold": hold}},
                            "strategy": {"name": "evolution"}, "budget": 4, "seed": 0,
                            "references": ["pp_lcnet_like_w0.5"], "evaluators": ["params_flops"],
                            "objective": {"mode": "accuracy", "accuracy": "flops"}})
    Engine.new(cfg, tmp_path / "run", progress=False).run()
    records = RunFolder(tmp_path / "run").read()
    assert len(records) >= 5 and any(r.reference for r in records)
    assert all(r.arch["sample"][k] == v for r in records for k, v in hold.items())
    resumed = Engine.resume(tmp_path / "run", progress=False)
    assert resumed.space.decisions() == get_space("cpu_detector", input_size=64, hold=hold).decisions()
    assert '"hold": {"neck.channels": 64' in (tmp_path / "run" / "report.md").read_text()  # the report says so
