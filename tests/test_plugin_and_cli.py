"""A separate package adds a search space through the entry point; the CLI works end to
end and answers bad input with exit 2 and one clear line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_nas(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """Install tests/plugin_pkg into a private folder; return an env that sees it."""
    target = tmp_path_factory.mktemp("plugin_site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "tests" / "plugin_pkg")], check=True, capture_output=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(ROOT)])
    return env


def test_plugin_space_is_discovered_and_usable(plugin_env):
    out = run_nas("space", "list", env=plugin_env)
    assert out.returncode == 0, out.stderr
    names = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert "tiny_plugin" in names and "cpu_detector" in names
    out = run_nas("space", "sample", "--space", "tiny_plugin", "--n", "3", "--seed", "1", env=plugin_env)
    assert out.returncode == 0, out.stderr
    archs = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(archs) == 3 and all(a["space"] == "tiny_plugin" for a in archs)
    code = ("from search_spaces import get_space\n"
            "from nas.testing.space_conformance import check_space\n"
            "check_space(get_space('tiny_plugin'), n=5)\nprint('conformant')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plugin_env, timeout=300)
    assert res.returncode == 0 and "conformant" in res.stdout, res.stderr


def test_space_sample_is_deterministic_json_lines():
    a = run_nas("space", "sample", "--n", "4", "--seed", "7")
    b = run_nas("space", "sample", "--n", "4", "--seed", "7")
    assert a.returncode == 0 and a.stdout == b.stdout
    assert [json.loads(line)["space"] for line in a.stdout.splitlines()] == ["cpu_detector"] * 4


def test_space_show_reference_and_compact(tmp_path):
    out = run_nas("space", "show", "mobilenetv2_like_w1.0")
    assert out.returncode == 0, out.stderr
    assert "params 1.4" in out.stdout and "FLOPs" in out.stdout and "s3.b3" in out.stdout
    compact = [l for l in out.stdout.splitlines() if l.startswith("compact")][0].split()[1]
    again = run_nas("space", "show", compact)
    assert again.returncode == 0 and again.stdout.splitlines()[0] == out.stdout.splitlines()[0]


def test_export_cli_checks_against_torch(tmp_path):
    out = run_nas("export", "pp_lcnet_like_w0.5", "--out", str(tmp_path / "m.onnx"), "--check", "--input-size", "64")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 10_000
    from nas.export import read_metadata
    meta = read_metadata(tmp_path / "m.onnx")
    assert json.loads(meta["nas.architecture"])["space"] == "cpu_detector"
    assert json.loads(meta["nas.input_hw"]) == [64, 64]


@pytest.mark.parametrize("args, message", [
    (("space", "show", '{"space": "cpu_detector", "sample": {"s1.depth": 9}}'), "sample."),
    (("space", "show", "no_such_reference"), "unknown search space 'no_such_reference'"),
    (("space", "show", "/nonexistent/arch.json"), "error"),
    (("space", "sample", "--space", "nope"), "unknown search space 'nope'"),
    (("export", "--out", "x.onnx"), "give an architecture or --weights"),
    (("export", "--out", "x.onnx", "--weights", "/nonexistent.pt"), "checkpoint /nonexistent.pt does not exist"),
    (("space", "sample", "--n", "abc"), "invalid int value"),
])
def test_usage_errors_exit_2_without_traceback(args, message):
    out = run_nas(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("strategy, message", [
    ("{name: random, options: {colour: red}}", "strategy 'random': unknown option(s) ['colour'] in config field 'strategy.options'"),
    ("{name: nope}", "unknown strategy 'nope'"),
    ("{name: evolution, options: {population_size: 0}}", "evolution option 'population_size': 0 is not a whole number >= 1"),
    ("{name: evolution, options: {population_size: 4}}", "evolution option 'sample_size' (10) is larger than 'population_size' (4)"),
    ("{name: rl, options: {reward_shaping: best}}", "rl option 'reward_shaping': 'best' is not 'rank' or 'std'"),
    ("{name: rl, options: {learning_rate: '0.1'}}", "rl option 'learning_rate': '0.1' is not a number > 0"),
    ("{name: random, options: {max_tries: 2.5}}", "random option 'max_tries': 2.5 is not a whole number >= 1"),
    ("{name: tpe, options: {n_ei_candidates: 0}}", "tpe option 'n_ei_candidates': 0 is not a whole number >= 1"),
    ("{name: tpe, options: {constant_liar: 'no'}}", "tpe option 'constant_liar': 'no' is not true or false"),
    ("{name: evolution, options: {avoid_duplicates: 0}}", "evolution option 'avoid_duplicates': 0 is not true or false"),
    ("{name: rl, options: {reuse_results: 'false'}}", "rl option 'reuse_results': 'false' is not true or false"),
    ("{name: darts}\nobjective: {mode: accuracy}", "strategy 'darts' needs a latency target: objective.target_ms"),
])
def test_unknown_or_bad_strategy_options_exit_2_before_the_run_folder_exists(strategy, message, tmp_path, capsys):
    from nas.cli import main

    config = tmp_path / "search.yaml"
    config.write_text(f"strategy: {strategy}\nbudget: 2\n")
    code = main(["search", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_diverged_training_is_reported_without_traceback(monkeypatch, capsys):
    from evaluators.trainer import TrainingFailure
    from nas.cli import main

    def diverge(*args, **kwargs):
        raise TrainingFailure("loss became nan at step 7 (lr 4.00e-03)")

    import nas.finishing

    monkeypatch.setattr(nas.finishing, "finish", diverge)
    code = main(["finish", "pp_lcnet_like_w0.5", "--out", "unused", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "training failed: loss became nan" in err and "Traceback" not in err


@pytest.mark.parametrize("extra, message", [
    (["--lr", "0"], "learning rate must be > 0, got 0.0"),
    (["--weight-decay", "-0.1"], "weight decay (--weight-decay) must be a number >= 0 (0: none), got -0.1"),
    (["--weight-decay", "inf"], "must be a number >= 0 (0: none), got inf"),
    (["--init-from", "no_such.pt"], "no_such.pt does not exist"),
    (["--separate", "act,colour"], "(--separate): ['colour'] are not op parameters"),
])
def test_supernet_train_refuses_bad_options_before_writing(tmp_path, capsys, extra, message):
    from nas.cli import main

    out = tmp_path / "supernet.pt"
    code = main(["supernet", "train", "--steps", "1", "--input-size", "64", "--n-train", "8", "--n-val", "4",
                 "--batch-size", "4", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_comma_list_options_share_one_parser(tmp_path, capsys):
    """--targets, --seeds, --passes, --split and --separate are read by one helper: blanks
    dropped, each item converted, a bad or missing item a usage error naming the flag."""
    from nas.cli import UsageError, comma_list, main

    assert comma_list(" 2.5, 4,", "--targets", float) == [2.5, 4.0]
    assert comma_list("neck.depth, head.depth", "--split") == ["neck.depth", "head.depth"]
    assert comma_list("", "--split", allow_empty=True) == []
    with pytest.raises(UsageError, match="--seeds expects comma-separated integers, got '1,2.5'"):
        comma_list("1,2.5", "--seeds", int)
    with pytest.raises(UsageError, match="--targets is empty"):
        comma_list(" , ", "--targets", float)
    # Through the commands: exit 2, nothing written.
    for argv, message in [
        (["finish", "pp_lcnet_like_w0.5", "--passes", " ,", "--out", str(tmp_path / "f")], "no passes given; choose from"),
        (["finish", "pp_lcnet_like_w0.5", "--passes", "train,,quant", "--out", str(tmp_path / "f")], "['quant']"),
        (["sweep", "--targets", "3", "--seeds", "0,x", "--out", str(tmp_path / "s")],
         "--seeds expects comma-separated integers, got '0,x'"),
        (["supernet", "train", "--steps", "1", "--separate", "act, colour", "--out", str(tmp_path / "s.pt")],
         "['colour']")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "f").exists() and not (tmp_path / "s").exists() and not (tmp_path / "s.pt").exists()
