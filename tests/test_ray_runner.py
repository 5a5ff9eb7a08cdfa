"""The Ray Tune runner on a real local cluster of two nodes."""
import json

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from nas.config import config_from_dict  # noqa: E402
from nas.engine import Engine, RunFolder  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, include_dashboard=False)
    yield c
    ray.shutdown()
    c.shutdown()


def cfg(budget, **evaluator_options):
    return config_from_dict({
        "space": {"name": "toy"}, "strategy": {"name": "evolution", "options": {"population_size": 4, "sample_size": 2}},
        "budget": budget, "seed": 1, "imports": ["nas.testing.fake_evaluators"],
        "evaluators": ["toy_latency", {"name": "toy_accuracy", "options": evaluator_options}],
        "objective": {"mode": "soft", "target_ms": 10.0},
        "runner": {"name": "ray", "max_concurrent": 2, "cpus_per_trial": 1, "max_failures": 1}})


def test_trials_run_on_both_nodes_and_resume(cluster, tmp_path):
    run = tmp_path / "run"
    Engine.new(cfg(8), run, progress=False).run()
    records = [r for r in RunFolder(run).read() if r.status != "duplicate"]
    assert len(records) == 8 and all(r.status in ("ok", "rejected") for r in records)
    nodes = {r.worker.split("/")[0] for r in records}
    assert len(nodes) == 2, nodes                      # both nodes of the cluster did work
    assert (run / "report.md").exists()
    # Resume with a larger budget: the 8 finished trials stay, 4 more are added.
    Engine.resume(run, progress=False, budget=12).run()
    after = [r for r in RunFolder(run).read() if r.status != "duplicate"]
    assert len(after) == 12
    assert [(r.arch_id, r.metrics) for r in after[:8]] == [(r.arch_id, r.metrics) for r in records]
    assert len({r.arch_id for r in after}) == 12       # nothing re-run


def test_dead_worker_is_recorded_as_failed(cluster, tmp_path):
    run = tmp_path / "run"
    Engine.new(cfg(10, die_on_width=64), run, progress=False).run()
    records = [r for r in RunFolder(run).read() if r.status != "duplicate"]
    assert len(records) == 10                           # never lost
    died = [r for r in records if r.arch["sample"]["width"] == 64]
    assert died and all(r.status == "failed" and "errored" in r.error for r in died)
    assert all(r.status != "failed" for r in records if r.arch["sample"]["width"] != 64)
    json.loads((run / "pareto.json").read_text())


def test_sweep_runs_variants_as_parallel_ray_trials(cluster, tmp_path):
    from nas.sweep import Sweep, grid

    base = {"space": {"name": "toy"}, "strategy": {"name": "random"}, "budget": 4,
            "imports": ["nas.testing.fake_evaluators"],
            "evaluators": ["toy_latency", {"name": "toy_accuracy", "options": {"sleep_s": 0.2}}],
            "objective": {"mode": "soft", "target_ms": 10.0}}
    rows = Sweep.new(tmp_path / "sw", base, grid([8.0, 12.0])).run("ray", max_concurrent=2, cpus_per_trial=1)
    assert [r["status"] for r in rows] == ["done", "done"] and [r["trials"] for r in rows] == [4, 4]
    workers = {RunFolder(tmp_path / "sw" / r["variant"]).read()[0].worker for r in rows}
    assert len(workers) == 2                            # each variant ran in its own worker process
    assert (tmp_path / "sw" / "sweep.md").exists() and (tmp_path / "sw" / "t8" / "report.md").exists()
