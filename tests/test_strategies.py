"""The strategy conformance suite over every registered strategy, plus the objectives,
the registry and the NAS-Bench-201 space."""
from __future__ import annotations

import json
import math

import pytest

from nas.objectives import Failure, Objective, pareto_front, value_bounds
from nas.strategies import Strategy, get_strategy, get_strategy_class, list_strategies, register_strategy
from nas.testing import CHECKS, ToySpace, run_strategy_conformance, toy_metrics
from search_spaces.architecture import ArchitectureError
from search_spaces.errors import InputError


def _factory(name):
    return lambda space, objective, seed: get_strategy(name, space, objective, seed=seed)


# Gradient-based strategies (darts) train a supernet inside ask() and have their own
# tests (tests/test_darts.py); the sampler conformance suite covers the others.
SAMPLERS = [n for n in list_strategies() if not getattr(get_strategy_class(n), "gradient_based", False)]


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("name", SAMPLERS)
def test_conformance(name, check):
    CHECKS[check](_factory(name))


def test_builtin_strategies_registered():
    assert {"random", "evolution", "rl", "tpe", "darts"} <= set(list_strategies())


def test_unknown_strategy_and_option():
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        get_strategy_class("nope")
    with pytest.raises(InputError, match="strategy 'random': unknown option.*colour.*its options are"):
        get_strategy("random", ToySpace(), Objective(mode="accuracy"), colour="red")


def test_conformance_catches_a_broken_strategy():
    class Forgetful(Strategy):  # state_dict forgets the rng: resume diverges
        def ask(self):
            return self.space.sample(self.rng)

        def tell(self, arch, result):
            pass

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    with pytest.raises(AssertionError, match="state_round_trip"):
        run_strategy_conformance(Forgetful, checks=["asks_are_valid", "state_round_trip"])


def test_register_strategy_rejects_duplicates_and_non_strategies():
    cls = get_strategy_class("random")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("random")(type("Other", (cls,), {}))
    with pytest.raises(TypeError):
        register_strategy("not_a_strategy")(dict)


def test_tpe_sqlite_resume_does_not_double_add(tmp_path):
    space, objective = ToySpace(), Objective(mode="soft", target_ms=8.0)
    path = tmp_path / "study.db"
    first = get_strategy("tpe", space, objective, seed=1, storage_path=str(path))
    for _ in range(6):
        arch = first.ask()
        first.tell(arch, toy_metrics(arch))
    state = json.loads(json.dumps(first.state_dict()))  # checkpointed after the last tell
    dangling = first.ask()  # never told: the process "dies" here
    del first
    second = get_strategy("tpe", space, objective, seed=1, storage_path=str(path))
    second.load_state_dict(state)
    import optuna

    study = optuna.load_study(study_name="nas", storage=f"sqlite:///{path}")
    states = [t.state.name for t in study.trials]
    # The dangling trial is gone (the study is rebuilt from the state, nothing doubled),
    # so the resumed strategy proposes exactly what the dead process had proposed.
    assert states == ["COMPLETE"] * 6, states
    assert dangling is not None and second.ask() == dangling


# ----- objectives ---------------------------------------------------------------------------
def test_objective_validation():
    with pytest.raises(ValueError, match="unknown objective mode"):
        Objective(mode="fastest")
    with pytest.raises(ValueError, match="target_ms"):
        Objective(mode="constrained")
    with pytest.raises(ValueError, match="target_ms"):
        Objective(mode="soft", target_ms=-1)
    with pytest.raises(ValueError, match="soft_exponent"):
        Objective(mode="soft", target_ms=5, soft_exponent=0.5)


def test_objective_scores():
    c = Objective(mode="constrained", target_ms=10)
    assert c.score({"map50": 0.4, "latency_ms": 10}) == 0.4 and c.feasible({"map50": 0.4, "latency_ms": 10})
    worse, better = c.score({"map50": 0.9, "latency_ms": 30}), c.score({"map50": 0.9, "latency_ms": 20})
    assert worse < better < -1 < 0 <= c.score({"map50": 0.0, "latency_ms": 1})
    s = Objective(mode="soft", target_ms=10)
    assert s.score({"map50": 0.5, "latency_ms": 20}) == pytest.approx(0.5 * 2 ** -0.07)
    assert Objective(mode="accuracy").score({"map50": 0.3}) == 0.3
    with pytest.raises(ValueError, match="'latency_ms' missing"):
        c.score({"map50": 0.3})
    with pytest.raises(ValueError, match="Failure"):
        c.score({"map50": math.nan, "latency_ms": 1})
    p = Objective(mode="pareto")
    with pytest.raises(ValueError, match="no single score"):
        p.score({"map50": 0.3, "latency_ms": 3})
    assert p.values({"map50": 0.3, "latency_ms": 3}) == (0.3, -3)
    assert isinstance(Failure("x"), Failure)


def test_scalarize_and_front():
    p = Objective(mode="pareto")
    pts = [{"map50": 0.5, "latency_ms": 10}, {"map50": 0.7, "latency_ms": 20}, {"map50": 0.4, "latency_ms": 30}]
    bounds = value_bounds([p.values(m) for m in pts])
    assert p.scalarize(pts[1], 1.0, bounds) == pytest.approx(0.0)  # best accuracy, weight all on accuracy
    assert p.scalarize(pts[0], 0.0, bounds) == pytest.approx(0.0)  # fastest, weight all on latency
    assert p.scalarize(pts[2], 0.5, bounds) < min(p.scalarize(m, 0.5, bounds) for m in pts[:2])
    assert pareto_front([p.values(m) for m in pts]) == [0, 1]
    assert pareto_front([(1, 1), (1, 1), (0, 2), (0, 1)]) == [0, 1, 2]
    with pytest.raises(ValueError):
        p.scalarize(pts[0], 1.5, bounds)


# ----- NAS-Bench-201 space --------------------------------------------------------------------
def test_nasbench201_cell_strings_and_table(tmp_path):
    from search_spaces.nasbench201 import NasBench201Space, NasBench201Table, cell_string, parse_cell_string

    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    ops = parse_cell_string(cell)
    assert ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert cell_string(ops) == cell
    csv = tmp_path / "nb.csv"
    csv.write_text(f"index,cell,cifar10_val,cifar10_test\n1,{cell},82.834,88.22\n")
    space = NasBench201Space(table=str(csv))
    arch = space.from_cell(cell)
    assert space.cell(arch) == cell and space.validate(arch) is None
    assert space.lookup(arch) == {"cifar10_val": 82.834, "cifar10_test": 88.22}
    assert len(space.decisions()) == 6 and space.size() == 5 ** 6
    with pytest.raises(KeyError, match="not in the NAS-Bench-201 table"):
        space.lookup(space.from_cell(cell.replace("skip_connect~2", "none~2")))
    with pytest.raises(ArchitectureError, match="needs 2 inputs"):
        parse_cell_string("|none~0|+|none~0|+|none~0|none~1|none~2|")

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent.csv")):
        NasBench201Table.load(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"index,cell,cifar10_val\n1,{cell},82.8\n")
    with pytest.raises(ValueError, match="missing column 'cifar10_test'"):
        NasBench201Table.load(bad)
    bad.write_text(f"index,cell,cifar10_val,cifar10_test\n1,{cell},eighty,88.2\n")
    with pytest.raises(ValueError, match="line 2, column 'cifar10_val'"):
        NasBench201Table.load(bad)


def test_nasbench201_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, search_spaces.nasbench201; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_benchmark_smoke(tmp_path, capsys):
    from search_spaces.nasbench201 import DEFAULT_TABLE

    if not DEFAULT_TABLE.is_file():
        pytest.skip(f"NAS-Bench-201 table absent at {DEFAULT_TABLE}")
    from bench.strategies_nb201 import main

    out = tmp_path / "curves.png"
    assert main(["--seeds", "2", "--budget", "12", "--strategies", "random,evolution,rl",
                 "--workers", "1", "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert [p.split("=")[0] for p in last.split()] == ["random", "evolution", "rl"], last
    assert out.is_file()


def test_benchmark_skips_without_table(tmp_path, capsys):
    from bench.strategies_nb201 import main

    assert main(["--table", str(tmp_path / "none.csv")]) == 0
    assert "skipped" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["random", "evolution", "rl", "tpe"])
def test_exhausted_tiny_space(name):
    """On a 2-network space every strategy keeps answering (a duplicate or None)."""
    from search_spaces.base import SearchSpace

    class Tiny(SearchSpace):
        name = "tiny_test"

        def decisions(self):
            return {"x": [0, 1]}

    space = Tiny()
    strategy = get_strategy(name, space, Objective(mode="accuracy"), seed=0, **({"max_redraws": 3} if name in ("rl", "tpe") else {}))
    for _ in range(8):
        arch = strategy.ask()
        if arch is None:
            break
        strategy.tell(arch, {"map50": float(arch.sample["x"])})
