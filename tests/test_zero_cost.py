"""Zero-cost proxies on a tiny detector space and a tiny generated batch: finite,
deterministic, side-effect free, ordered as expected for synflow, and reachable as the
``zero_cost`` evaluator with clear errors for bad names and mismatched classes."""
import math

import pytest
import torch

from evaluators.base import get_evaluator
from evaluators.data import DataConfig
from evaluators.zero_cost import PROXIES, ProxyError, first_batch
from search_spaces import InputError, get_space

TINY_DATA = {"n_train": 8, "n_val": 4}
SIZE = 64


@pytest.fixture(scope="module")
def space():
    return get_space("cpu_detector", num_classes=3, input_size=SIZE)


@pytest.fixture(scope="module")
def batch(space):
    """8 generated images; the generator draws 6 classes, the tiny space predicts 3, so
    objects of the other classes are dropped (they would have no logit to train)."""
    train, _ = DataConfig(**TINY_DATA).load(SIZE)
    images, targets = first_batch(train, 8)
    keep = [t["labels"] < space.num_classes for t in targets]
    return images, [{"boxes": t["boxes"][k], "labels": t["labels"][k]} for t, k in zip(targets, keep)]


def _model(space, name="mobilenetv2_like_w0.5"):
    torch.manual_seed(0)
    return space.build(space.reference_architectures()[name])


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_each_proxy_is_finite_deterministic_and_leaves_the_model_alone(space, batch, name):
    model = _model(space)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    first = PROXIES[name](model, *batch)
    second = PROXIES[name](model, *batch)
    assert isinstance(first, float) and math.isfinite(first)
    assert first == second
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights or BN statistics changed"
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_synflow_prefers_the_wider_deeper_network(space, batch):
    big = PROXIES["synflow"](_model(space, "mobilenetv2_like_w1.0"), *batch)
    small = PROXIES["synflow"](_model(space, "pp_lcnet_like_w0.5"), *batch)
    assert big > small


def test_non_finite_score_names_the_proxy(space, batch):
    model = _model(space)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(ProxyError, match="'synflow'.*non-finite"):
        PROXIES["synflow"](model, *batch)


def test_zero_cost_evaluator_returns_zc_keys(space):
    # The target-free proxies run on the 3-class space although the data has 6 classes.
    evaluator = get_evaluator("zero_cost", proxies=["synflow", "naswot", "jacob_cov"], data=TINY_DATA)
    assert evaluator.cost == "measure"
    arch = space.reference_architectures()["pp_lcnet_like_w0.5"]
    out = evaluator(arch, space)
    assert set(out) == {"zc_synflow", "zc_naswot", "zc_jacob_cov"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert evaluator(arch, space) == out  # same seed -> same initial weights -> same scores


def test_zero_cost_evaluator_all_proxies_on_matching_classes():
    space6 = get_space("cpu_detector", num_classes=6, input_size=SIZE)  # the generator's 6 classes
    out = get_evaluator("zero_cost", data=TINY_DATA)(space6.reference_architectures()["pp_lcnet_like_w0.5"], space6)
    assert set(out) == {f"zc_{name}" for name in PROXIES}


def test_loss_proxies_reject_labels_the_network_cannot_predict(space):
    evaluator = get_evaluator("zero_cost", proxies=["grad_norm"], data=TINY_DATA)
    with pytest.raises(InputError, match=r"class id \d+ .* 3 classes"):
        evaluator(space.reference_architectures()["pp_lcnet_like_w0.5"], space)


def test_unknown_proxy_lists_the_valid_names():
    with pytest.raises(InputError) as err:
        get_evaluator("zero_cost", proxies=["synflow", "flops_per_dollar"])
    message = str(err.value)
    assert "flops_per_dollar" in message
    assert all(name in message for name in PROXIES)


def test_bad_batch_size_and_short_data_are_input_errors(space):
    with pytest.raises(InputError, match="batch_size"):
        get_evaluator("zero_cost", batch_size=1)
    with pytest.raises(InputError, match="n_train"):
        get_evaluator("zero_cost", batch_size=16, data=TINY_DATA)(space.reference_architectures()["pp_lcnet_like_w0.5"], space)
