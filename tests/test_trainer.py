"""The small CPU trainer: deterministic, lowers the loss, reports divergence, and its
evaluation runs through pycocotools; the built-in evaluators return their metrics."""
import math

import pytest
import torch

from evaluators.base import get_evaluator, list_evaluators
from evaluators.data import DataConfig
from evaluators.trainer import TrainConfig, TrainingFailure, evaluate, train
from search_spaces import InputError, get_space

SPACE = get_space("cpu_detector", num_classes=6, input_size=64)
ARCH = SPACE.reference_architectures()["pp_lcnet_like_w0.5"]


@pytest.fixture(scope="module")
def data():
    return DataConfig(n_train=16, n_val=8).load(64)


def test_training_lowers_the_loss_and_is_deterministic(data):
    train_data, val_data = data
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = SPACE.build(ARCH)
        result = train(model, train_data, TrainConfig(steps=12, batch_size=8, lr=4e-3, warmup_steps=2))
        losses.append(result.losses)
    assert losses[0] == losses[1]
    assert sum(losses[0][-3:]) / 3 < sum(losses[0][:3]) / 3
    metrics = evaluate(model, val_data)
    assert set(metrics) == {"map", "map50"} and 0.0 <= metrics["map"] <= metrics["map50"] <= 1.0


def test_divergence_is_reported_as_a_failure(data):
    train_data, _ = data
    model = SPACE.build(ARCH)

    def nan_loss(model, images, targets):
        return {"loss": model.stem[0].weight.sum() * float("nan")}

    with pytest.raises(TrainingFailure, match="at step 0"):
        train(model, train_data, TrainConfig(steps=3, batch_size=4), loss_fn=nan_loss)


def test_time_budget_stops_training(data):
    train_data, _ = data
    result = train(SPACE.build(ARCH), train_data, TrainConfig(steps=10_000, batch_size=4, time_budget_s=1.0))
    assert result.steps < 10_000 and result.seconds < 30


def test_builtin_evaluators(data):
    assert {"latency_table", "params_flops", "measured_latency", "train_proxy", "zero_cost", "supernet"} <= set(list_evaluators())
    metrics = get_evaluator("params_flops")(ARCH, SPACE)
    assert metrics["params"] > 1e4 and metrics["flops"] > 1e6
    measured = get_evaluator("measured_latency")(ARCH, SPACE)
    assert measured["measured_latency_ms"] > 0
    proxy = get_evaluator("train_proxy", steps=3, batch_size=4, data={"n_train": 16, "n_val": 8})(ARCH, SPACE)
    assert all(math.isfinite(v) for v in proxy.values()) and {"map", "map50", "train_loss"} <= set(proxy)
    assert 0 < proxy["loss_score"] <= 1 and proxy["loss_score"] == pytest.approx(math.exp(-proxy["train_loss"]))


def test_class_mismatch_and_unknown_evaluator_are_input_errors():
    with pytest.raises(InputError, match="num_classes=3"):
        get_evaluator("train_proxy", steps=1, data={"n_train": 4, "n_val": 4})(
            ARCH, get_space("cpu_detector", num_classes=3, input_size=64))
    with pytest.raises(InputError, match="unknown evaluator 'nope'"):
        get_evaluator("nope")
    with pytest.raises(InputError, match="bad options"):
        get_evaluator("params_flops", bogus=1)


def test_train_proxy_cost_compares_with_an_earlier_output(tmp_path, capsys, bench_script):
    """bench/train_proxy_cost.py --versus: reads an earlier output's mAP@.5 column, ranks
    only the networks both runs trained (same name and size), and refuses (exit 2,
    naming the file) one that is not such an output, before any training."""
    bench = bench_script("train_proxy_cost")
    rows = [("pp_lcnet_like_w0.5", 0.134, 0.16e6, 0.13e9), ("ghostnet_like_w1.0", 0.222, 1.7e6, 0.35e9),
            ("random_00", 0.150, 0.30e6, 0.20e9), ("random_01", 0.100, 0.20e6, 0.10e9)]
    earlier = tmp_path / "long.txt"
    earlier.write_text("$ python bench/train_proxy_cost.py --n 2\ndata: ...\n\n" + bench.HEADER + "\n" + "".join(
        bench.table_row(n, 9.0, {"train_seconds": 8.0, "map50": m}, {"params": p, "flops": f}) + "\n"
        for n, m, p, f in rows) + "\n4 candidates at 300 steps ...\n")
    table = bench.read_table(earlier)
    assert {n: m for n, (m, _) in table.items()} == {n: m for n, m, _, _ in rows}
    now = dict(table)
    assert bench.compare(now, table) == "spearman 1.000 over the 4 architectures in both"
    now["random_01"] = (0.3, table["random_01"][1])  # same network, now ranked first: the order changes
    assert bench.compare(now, table) == "spearman -0.200 over the 4 architectures in both"
    now["random_01"] = (0.3, "0.99M 0.50")  # another --seed: another network under the same name
    assert bench.compare(now, table) == "spearman 1.000 over the 3 architectures in both"
    del now["random_00"]
    assert bench.compare(now, table).startswith("only 2 architecture(s)")
    # the bench times the evaluator's real default budget, not a copy of it
    assert bench.parse_args([]).steps == get_evaluator("train_proxy").cfg.steps
    truncated = tmp_path / "truncated.txt"
    truncated.write_text(bench.HEADER + "\nmobilenetv2_like_w0.5   62.3\n")  # a run cut short
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nNot a bench output.\n")
    for bad, says in ((tmp_path / "missing.txt", "No such file"), (notes, "not an output"),
                      (truncated, "truncated.txt, line 2: not a table row")):
        with pytest.raises(SystemExit) as exc:
            bench.parse_args(["--versus", str(bad)])
        assert exc.value.code == 2
        assert says in capsys.readouterr().err
