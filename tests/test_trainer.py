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


def test_class_mismatch_and_unknown_evaluator_are_input_errors():
    with pytest.raises(InputError, match="num_classes=3"):
        get_evaluator("train_proxy", steps=1, data={"n_train": 4, "n_val": 4})(
            ARCH, get_space("cpu_detector", num_classes=3, input_size=64))
    with pytest.raises(InputError, match="unknown evaluator 'nope'"):
        get_evaluator("nope")
    with pytest.raises(InputError, match="bad options"):
        get_evaluator("params_flops", bogus=1)


def test_train_proxy_cost_compares_with_an_earlier_output(tmp_path, capsys):
    """bench/train_proxy_cost.py --versus: reads an earlier output's mAP@.5 column, and
    refuses (exit 2, naming the file) one that is not such an output, before training."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "bench"))
    try:
        import train_proxy_cost
    finally:
        sys.path.remove(str(root / "bench"))
    earlier = tmp_path / "long.txt"
    earlier.write_text("$ python bench/train_proxy_cost.py --n 0\ndata: ...\n\n" + train_proxy_cost.HEADER + "\n"
                       "pp_lcnet_like_w0.5           94.1      92.0   0.134     0.16M    0.13\n"
                       "ghostnet_like_w1.0          352.7     348.1   0.222     1.70M    0.35\n"
                       "\n8 candidates at 300 steps ...\n")
    assert train_proxy_cost.read_map50(earlier) == {"pp_lcnet_like_w0.5": 0.134, "ghostnet_like_w1.0": 0.222}
    # the bench times the evaluator's real default budget, not a copy of it
    assert train_proxy_cost.parse_args([]).steps == get_evaluator("train_proxy").cfg.steps
    for bad, says in ((tmp_path / "missing.txt", "No such file"), (root / "README.md", "not an output")):
        with pytest.raises(SystemExit) as exc:
            train_proxy_cost.parse_args(["--versus", str(bad)])
        assert exc.value.code == 2
        assert says in capsys.readouterr().err
