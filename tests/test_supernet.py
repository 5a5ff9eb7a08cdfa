"""The weight-sharing supernet: exact inheritance, sharing, training, checkpoints/resume
and the ``supernet`` evaluator, on a 64 px, 3-class space and a tiny generated dataset."""
import math
import random
import time

import pytest
import torch

from evaluators.base import get_evaluator
from evaluators.supernet import Supernet, SupernetScore, UntrainedOpsError, load_checkpoint, train_step, train_supernet
from evaluators.trainer import TrainConfig, _batch
from search_spaces import InputError, get_space

STEPS, BATCH, SEED = 6, 4, 1


@pytest.fixture(scope="module")
def space():
    return get_space("cpu_detector", num_classes=3, input_size=64)


@pytest.fixture(scope="module")
def trained(space, tiny_data3, tmp_path_factory):
    """An uninterrupted run (saved once, at the end)."""
    out = tmp_path_factory.mktemp("ckpt") / "supernet.pt"
    return train_supernet(space, tiny_data3, STEPS, BATCH, SEED, out, progress=False, save_every=STEPS)


def _trained_archs(space):
    """The paths the run trained: the seeded sampler replayed."""
    rng = random.Random(SEED)
    return [space.sample(rng) for _ in range(STEPS)]


def _scramble(module: torch.nn.Module, seed: int) -> None:
    """Random weights and BN statistics, so eval-mode equality is not trivially true."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                noise = torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var") else torch.randn(t.shape, generator=g) * 0.1
                t.copy_(noise if name.endswith(("running_var", "running_mean")) else t + noise)


def test_inherited_weights_give_the_standalone_outputs(space):
    torch.manual_seed(0)
    net = Supernet(space)
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(4)]
    for arch in archs:
        net.grow(arch)
    _scramble(net, 0)
    x = torch.rand(2, 3, 64, 64)
    for arch in archs:
        view = net.subnet(arch).eval()
        model = space.build(arch)
        model.load_state_dict(net.extract(arch))
        model.eval()
        with torch.no_grad():
            (s1, b1), (s2, b2) = view(x), model(x)
        assert torch.allclose(s1, s2, rtol=0, atol=0) and torch.allclose(b1, b2, rtol=0, atol=0)
    assert net.missing(archs[0]) == []


def test_paths_share_modules_exactly_where_op_keys_agree(space):
    torch.manual_seed(0)
    net = Supernet(space)
    a = space.sample(random.Random(3))
    other_width = next(c for c in (48, 64, 96) if c != a.sample["neck.channels"])
    b = space.from_sample({**a.sample, "neck.channels": other_width})  # backbone shared, neck/head not
    net.grow(a)
    net.grow(b)
    va, vb = net.subnet(a), net.subnet(b)
    ka = {s.role: s.key for s in space.ops(a)}
    kb = {s.role: s.key for s in space.ops(b)}
    ma, mb = dict(net.path_modules(a)), dict(net.path_modules(b))
    for role in ka.keys() & kb.keys():
        assert (ma[role] is mb[role]) == (ka[role] == kb[role]), role
    # An update through view a shows in view b where shared, not where not.
    before_stem = vb.stem[0].weight.detach().clone()
    before_lat = vb.laterals[0][0].weight.detach().clone()
    opt = torch.optim.SGD(va.parameters(), lr=0.1)
    va.train()
    sum(level.square().mean() for level in va.forward_levels(torch.rand(2, 3, 64, 64))).backward()
    opt.step()
    assert not torch.equal(vb.stem[0].weight, before_stem)
    assert torch.equal(vb.stem[0].weight, va.stem[0].weight)
    assert torch.equal(vb.laterals[0][0].weight, before_lat)


def test_a_few_steps_lower_the_loss_on_a_fixed_arch(space, tiny_data3):
    import numpy as np

    torch.manual_seed(0)
    net = Supernet(space)
    arch = space.reference_architectures()["pp_lcnet_like_w0.5"]
    train_data, _ = tiny_data3.load(64)
    cfg = TrainConfig(steps=8, batch_size=8, warmup_steps=1, hflip=False, brightness=0.0)
    images, targets = _batch(train_data, np.arange(8), cfg, np.random.default_rng(0))
    opt, losses = None, []
    for _ in range(8):
        loss, opt = train_step(net, opt, arch, images, targets, cfg, lr=cfg.lr)
        losses.append(loss)
    assert losses[-1] < 0.9 * losses[0], losses


def test_checkpoint_round_trip_and_resume_equals_uninterrupted(space, tiny_data3, trained, tmp_path):
    assert trained.complete and len(trained.losses) == STEPS
    out = tmp_path / "resumed.pt"

    def crash(step, loss):
        if step == 5:  # after the save at step 4: step 5's work is lost, as in a real crash
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(space, tiny_data3, STEPS, BATCH, SEED, out, progress=False, save_every=4, callback=crash)
    assert load_checkpoint(out)["step"] == 4
    resumed = train_supernet(space, tiny_data3, STEPS, BATCH, SEED, out, progress=False, save_every=4)
    assert resumed.step == STEPS and resumed.losses == trained.losses
    want, got = trained.supernet.state_dict(), resumed.supernet.state_dict()
    assert list(want) == list(got)
    assert all(torch.equal(want[k], got[k]) for k in want)

    # Round trip: the lazily loaded checkpoint extracts the trained weights.
    record = load_checkpoint(trained.path)
    lazy = Supernet.from_record(space, record["ops"], record["weights"], lazy=True)
    for arch in _trained_archs(space)[:2]:
        a, b = trained.supernet.extract(arch), lazy.extract(arch)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished checkpoint is returned as is; other settings are refused.
    again = train_supernet(space, tiny_data3, STEPS, BATCH, SEED, out, progress=False)
    assert again.step == STEPS and again.losses == trained.losses
    with pytest.raises(InputError, match="resumed.pt"):
        train_supernet(space, tiny_data3, STEPS, BATCH, SEED + 1, out, progress=False)


def test_evaluator_scores_trained_paths_quickly(space, tiny_data3, trained):
    ev = get_evaluator("supernet", checkpoint=str(trained.path),
                       data={"source": tiny_data3.source, "n_train": 16, "n_val": 8}, bn_batches=2, batch_size=4)
    assert isinstance(ev, SupernetScore) and ev.cost == "train"
    archs = _trained_archs(space)[:3]
    for arch in archs:
        start = time.monotonic()
        metrics = ev(arch, space)
        assert time.monotonic() - start < 5.0
        assert set(metrics) == {"supernet_map", "supernet_map50"}
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in metrics.values())
    # Scoring calibrates a standalone copy: the supernet's own BN statistics stay as trained.
    scored = ev._load(space).extract(archs[0])
    stored = trained.supernet.extract(archs[0])
    assert all(torch.equal(scored[k], stored[k]) for k in stored)
    unseen = next(a for a in (space.sample(random.Random(i)) for i in range(100, 200)) if ev._load(space).missing(a))
    with pytest.raises(UntrainedOpsError, match="never trained"):
        ev(unseen, space)


def test_evaluator_refuses_missing_or_foreign_checkpoints(trained, tmp_path):
    with pytest.raises(InputError, match="nope.pt"):
        get_evaluator("supernet", checkpoint=str(tmp_path / "nope.pt"))
    ev = get_evaluator("supernet", checkpoint=str(trained.path))
    other = get_space("cpu_detector", num_classes=3, input_size=96)
    with pytest.raises(InputError, match="supernet.pt"):
        ev(other.sample(random.Random(0)), other)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        get_evaluator("supernet", checkpoint=str(tmp_path / "junk.pt"))
