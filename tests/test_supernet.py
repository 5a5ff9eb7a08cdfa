"""The weight-sharing supernet: exact inheritance, sharing, training, checkpoints/resume
and the ``supernet`` evaluator, on a 64 px, 3-class space and a tiny generated dataset."""
import math
import random
import re

import numpy as np
import pytest
import torch

from evaluators.base import get_evaluator
from evaluators.distillation import DEFAULT_TEMPERATURE, class_distillation
from evaluators.supernet import (Supernet, SupernetScore, UntrainedOpsError, load_checkpoint, make_optimizer, step_paths,
                                 train_step, train_supernet)
from evaluators.trainer import TrainConfig, _batch, dense_outputs
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


def test_inherited_weights_give_the_standalone_outputs(space, scramble):
    torch.manual_seed(0)
    net = Supernet(space)
    scramble(net, 0)
    rng = random.Random(0)
    x = torch.rand(2, 3, 64, 64)
    archs = [space.sample(rng) for _ in range(3)]
    # The kinds whose sharing is least regular: ghost at both expansions, and a shuffle
    # unit at s4.b0 whose input width equals its own (48 -> 48: the split variant).
    blocks = {k: v for k, v in archs[0].sample.items() if k.endswith(".kind")}
    archs.append(space.from_sample({**archs[0].sample, **{k: "ghost" for k in blocks}, "s3.b0.expansion": 3, "s3.b1.expansion": 6}))
    archs.append(space.from_sample({**archs[0].sample, **{k: "shuffle" for k in blocks}, "s3.width": 0.75, "s4.width": 0.5}))
    for arch in archs:
        view = net.subnet(arch).eval()
        model = space.build(arch)
        model.load_state_dict(net.extract(arch))
        model.eval()
        with torch.no_grad():
            (s1, b1), (s2, b2) = view(x), model(x)
        assert torch.equal(s1, s2) and torch.equal(b1, b2)


def test_training_views_update_only_their_slice_of_the_shared_statistics(space):
    torch.manual_seed(0)
    net = Supernet(space)
    arch = space.from_sample({**space.sample(random.Random(1)).sample, "neck.channels": 48})
    name = "neck-lateral0__conv__1-running_mean"  # the first lateral's BatchNorm, 96 wide, 48 used
    before = getattr(net.statistics, name).clone()
    net.subnet(arch).train().forward_levels(torch.rand(2, 3, 64, 64))
    after = getattr(net.statistics, name)
    assert not torch.equal(after[:48], before[:48])
    assert torch.equal(after[48:], before[48:])
    # The standalone network sees the updated statistics.
    model = space.build(arch)
    model.load_state_dict(net.extract(arch))
    assert torch.equal(model.laterals[0][1].running_mean, after[:48])


def test_paths_share_leading_channels_and_centred_kernels_per_role_and_kind(space):
    torch.manual_seed(0)
    net = Supernet(space)
    a = space.sample(random.Random(3))
    wide = {**a.sample, "s2.width": 1.0, "s2.b0.kind": "ir", "s2.b0.kernel": 5, "s2.b0.expansion": 6,
            "neck.channels": 96, "s3.b0.kind": "dsconv"}
    narrow = {**wide, "s2.width": 0.5, "s2.b0.kernel": 3, "s2.b0.expansion": 3, "neck.channels": 48, "s3.b0.kind": "ghost"}
    wide, narrow = space.from_sample(wide), space.from_sample(narrow)
    big, small = net.extract(wide), net.extract(narrow)
    dw = "stages.1.0.dw.0.weight"  # s2.b0's depthwise conv: 5x5 over 6x the input vs 3x3 over 3x
    assert big[dw].shape[2:] == (5, 5) and small[dw].shape[2:] == (3, 3)
    assert torch.equal(small[dw], big[dw][: small[dw].shape[0], :, 1:4, 1:4])
    lateral = "laterals.0.0.weight"  # 48 of the 96 neck channels, over the first s2 channels
    assert torch.equal(small[lateral], big[lateral][:48, : small[lateral].shape[1]])

    # Training the narrow path moves the wide path's weights where they overlap...
    opt = torch.optim.SGD(net.weights.values(), lr=0.1)
    view = net.subnet(narrow).train()
    sum(level.square().mean() for level in view.forward_levels(torch.rand(2, 3, 64, 64))).backward()
    opt.step()
    after = net.extract(wide)
    assert not torch.equal(after[dw], big[dw])
    assert torch.equal(after[dw][:, :, 0], big[dw][:, :, 0])  # ...not in the 5x5 rim the 3x3 never touches
    assert not torch.equal(after[lateral][:48], big[lateral][:48])
    assert torch.equal(after[lateral][48:], big[lateral][48:])
    s3 = "stages.2.0.pw.0.weight"  # the dsconv at s3.b0: a kind the narrow path (ghost) did not use
    assert torch.equal(after[s3], big[s3])


def test_a_few_steps_lower_the_loss_on_a_fixed_arch(space, tiny_data3):
    import numpy as np

    torch.manual_seed(0)
    net = Supernet(space)
    arch = space.reference_architectures()["pp_lcnet_like_w0.5"]
    train_data, _ = tiny_data3.load(64)
    cfg = TrainConfig(steps=8, batch_size=8, warmup_steps=1, hflip=False, brightness=0.0)
    images, targets = _batch(train_data, np.arange(8), cfg, np.random.default_rng(0))
    opt, losses = make_optimizer(net, cfg), []
    # 12 steps: the shared weights start as the largest op's initialisation, so a narrow
    # path's first few steps move slowly (as a standalone network started from them does).
    for _ in range(12):
        losses.append(train_step(net, opt, [arch], images, targets, cfg, lr=cfg.lr))
    assert losses[-1] < 0.8 * losses[0], losses


def test_sandwich_steps_train_the_drawn_path_and_its_extremes(space):
    uniform, sandwich = step_paths(space, random.Random(5)), step_paths(space, random.Random(5), "sandwich")
    largest, smallest, drawn = sandwich
    assert uniform == [drawn]
    for arch, pick in ((largest, max), (smallest, min)):
        for key, choices in space.decisions().items():
            if key in space.active_decisions(arch) and not isinstance(choices[0], str):
                assert arch.sample[key] == pick(choices), key
    # Block kinds stay as drawn wherever both paths have the block.
    for key in space.active_decisions(drawn):
        if key.endswith(".kind") and key in space.active_decisions(largest):
            assert largest.sample[key] == drawn.sample[key]
    assert len(space.ops(largest)) > len(space.ops(drawn)) >= len(space.ops(smallest))


def test_distill_steps_add_the_teachers_class_scores_to_the_smaller_paths_only(space, tiny_data3, scramble):
    """In-place distillation: a step on [largest, smallest] gets exactly the gradient of
    the plain step plus that of the smallest path learning the largest one's (detached)
    class scores; nothing of that reaches a weight only the largest path uses."""
    import numpy as np

    assert step_paths(space, random.Random(5), "distill") == step_paths(space, random.Random(5), "sandwich")
    largest, smallest, _ = step_paths(space, random.Random(5), "distill")
    train_data, _ = tiny_data3.load(64)
    cfg = TrainConfig(batch_size=4, warmup_steps=1, hflip=False, brightness=0.0, grad_clip=1e9)  # no clipping
    images, targets = _batch(train_data, np.arange(4), cfg, np.random.default_rng(0))
    torch.manual_seed(0)
    net = Supernet(space)
    scramble(net, 2)  # the two paths' scores differ, so the distillation gradient is not ~0
    opt = make_optimizer(net, cfg)

    def gradients(step):
        step()
        grads = {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in net.weights.items()}
        net.zero_grad(set_to_none=True)
        return grads

    # lr 0: the steps leave the weights as they are and their gradients in place.
    plain = gradients(lambda: train_step(net, opt, [largest, smallest], images, targets, cfg, lr=0.0))
    distilled = gradients(lambda: train_step(net, opt, [largest, smallest], images, targets, cfg, lr=0.0, distill=True))

    def distillation_alone():
        (teacher, _), (student, _) = (dense_outputs(net.subnet(a).train(), images) for a in (largest, smallest))
        class_distillation(student, teacher.detach(), DEFAULT_TEMPERATURE).backward()

    kd = gradients(distillation_alone)
    assert any(g.abs().max() > 1e-4 for g in kd.values())
    for name in kd:
        torch.testing.assert_close(distilled[name] - plain[name], kd[name], atol=1e-6, rtol=1e-4)
    smallest_uses = {k for k, p in gradients(lambda: train_step(net, opt, [smallest], images, targets, cfg, lr=0.0)).items()
                     if p.abs().max() > 0}
    teacher_only = {k for k, g in plain.items() if g.abs().max() > 0} - smallest_uses
    assert teacher_only and all(torch.equal(distilled[k], plain[k]) for k in teacher_only)


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

    # Round trip: a supernet loaded from the checkpoint extracts the trained weights.
    loaded = Supernet(space)
    loaded.load_state_dict(load_checkpoint(trained.path)["weights"])
    for arch in _trained_archs(space)[:2]:
        a, b = trained.supernet.extract(arch), loaded.extract(arch)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished checkpoint is returned as is; other settings are refused.
    again = train_supernet(space, tiny_data3, STEPS, BATCH, SEED, out, progress=False)
    assert again.step == STEPS and again.losses == trained.losses
    with pytest.raises(InputError, match="resumed.pt"):
        train_supernet(space, tiny_data3, STEPS, BATCH, SEED + 1, out, progress=False)


def test_evaluator_scores_trained_paths(space, tiny_data3, trained):
    ev = get_evaluator("supernet", checkpoint=str(trained.path),
                       data={"source": tiny_data3.source, "n_train": 16, "n_val": 8}, bn_batches=2, batch_size=4)
    assert isinstance(ev, SupernetScore) and ev.cost == "train"
    archs = _trained_archs(space)[:3]
    for arch in archs:
        metrics = ev(arch, space)  # seconds per candidate: bench/proxy_ranking.py prints them
        assert set(metrics) == {"supernet_map", "supernet_map50"}
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in metrics.values())
    # Scoring calibrates a standalone copy: the supernet's own BN statistics stay as trained.
    scored = ev.prepare(space).extract(archs[0])
    stored = trained.supernet.extract(archs[0])
    assert all(torch.equal(scored[k], stored[k]) for k in stored)
    unseen = [a for a in (space.sample(random.Random(i)) for i in range(100, 200)) if ev.prepare(space).missing(a)]
    assert unseen, "6 training steps should leave some weights of the space untrained"
    with pytest.raises(UntrainedOpsError, match="never trained"):
        ev(unseen[0], space)


def test_evaluator_fine_tunes_a_copy_deterministically(space, tiny_data3, trained):
    """``finetune_steps``: the scored network moves away from the inherited weights, the
    supernet does not, and the same candidate scores the same twice."""
    data = {"source": tiny_data3.source, "n_train": 16, "n_val": 8}
    ev = get_evaluator("supernet", checkpoint=str(trained.path), data=data, bn_batches=2, batch_size=4,
                       finetune_steps=2)
    arch = _trained_archs(space)[0]
    first = ev(arch, space)
    inherited = ev.prepare(space).extract(arch)
    tuned = ev.last_model.state_dict()
    conv = next(k for k, v in inherited.items() if v.dim() == 4)
    assert not torch.equal(tuned[conv], inherited[conv])
    assert all(torch.equal(inherited[k], v) for k, v in trained.supernet.extract(arch).items())
    assert ev(arch, space) == first
    for bad in ({"finetune_steps": -1}, {"finetune_steps": "10"}, {"finetune_lr": 0}):
        with pytest.raises(InputError, match="finetune_steps must be a whole number >= 0"):
            get_evaluator("supernet", checkpoint=str(trained.path), **bad)


def test_evaluator_refuses_missing_or_foreign_checkpoints(trained, tmp_path):
    with pytest.raises(InputError, match="nope.pt"):
        get_evaluator("supernet", checkpoint=str(tmp_path / "nope.pt"))
    ev = get_evaluator("supernet", checkpoint=str(trained.path))
    other = get_space("cpu_detector", num_classes=3, input_size=96)
    with pytest.raises(InputError, match="supernet.pt"):
        ev(other.sample(random.Random(0)), other)
    # A checkpoint holding other tensors (say, from another version of the ops) is refused by name.
    record = load_checkpoint(trained.path, mmap=False)
    record["weight_names"] = record["weight_names"][1:]
    torch.save(record, tmp_path / "other_ops.pt")
    with pytest.raises(InputError, match="other_ops.pt.*other shared tensors"):
        get_evaluator("supernet", checkpoint=str(tmp_path / "other_ops.pt")).prepare(trained.supernet.space)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        get_evaluator("supernet", checkpoint=str(tmp_path / "junk.pt"))


def test_split_keeps_neck_and_head_weights_apart_per_depth(space, tiny_data3, tmp_path, scramble):
    """``split``: the neck and head tensors are per (neck depth, head depth), the backbone
    shared; inheritance stays exact; training one path leaves another depth's head
    alone; the evaluator reads the split from the checkpoint."""
    torch.manual_seed(0)
    split = ("neck.depth", "head.depth")
    net = Supernet(space, split)
    scramble(net, 1)
    base = space.sample(random.Random(3)).sample
    shallow = space.from_sample({**base, "neck.depth": 1, "head.depth": 1})
    deep = space.from_sample({**base, "neck.depth": 1, "head.depth": 2})
    x = torch.rand(2, 3, 64, 64)
    for arch in (shallow, deep):
        model = space.build(arch)
        model.load_state_dict(net.extract(arch))
        with torch.no_grad():
            (s1, b1), (s2, b2) = net.subnet(arch).eval()(x), model.eval()(x)
        assert torch.equal(s1, s2) and torch.equal(b1, b2)
    a, b = net.extract(shallow), net.extract(deep)
    opt = make_optimizer(net, TrainConfig(lr=1e-2))
    images, targets = _batch(tiny_data3.load(64)[0], np.arange(BATCH), TrainConfig(), np.random.default_rng(0))
    train_step(net, opt, [deep], images, targets, TrainConfig(), 1e-2)
    a2, b2 = net.extract(shallow), net.extract(deep)
    head = [k for k in a if k.startswith("heads.") and k in b]  # the head ops both paths have
    stem = [k for k in a if k.startswith("stem.")]
    assert head and stem
    assert all(torch.equal(a[k], a2[k]) for k in head)            # the other depth's head: untouched
    assert any(not torch.equal(b[k], b2[k]) for k in head)        # the trained path's own head moved
    assert any(not torch.equal(a[k], a2[k]) for k in stem)        # the backbone is shared
    widths = space.decisions()["s1.width"]
    other_backbone = space.from_sample({**deep.sample, "s1.width": next(w for w in widths if w != deep.sample["s1.width"])})
    c = net.extract(other_backbone)
    assert all(torch.equal(c[k], b2[k]) for k in head)            # the same group shares its head
    with pytest.raises(InputError, match="not decisions"):
        Supernet(space, ("neck.colour",))
    assert Supernet(space, ("s3.width",)).split == ("s3.width",)  # float values name no tensor

    out = tmp_path / "few_shot.pt"
    train_supernet(space, tiny_data3, 2, BATCH, SEED, out, progress=False, split=split)
    assert load_checkpoint(out)["train"]["split"] == list(split)
    ev = get_evaluator("supernet", checkpoint=str(out), data={"source": tiny_data3.source, "n_train": 16, "n_val": 8})
    assert ev.prepare(space).split == split
    with pytest.raises(InputError, match=r"split=\['neck.depth', 'head.depth'\] \(now None\)"):
        train_supernet(space, tiny_data3, 2, BATCH, SEED, out, progress=False)  # resuming without the split


def test_separate_keeps_an_ops_tensors_apart_per_value(space, tiny_data3, tmp_path, scramble):
    """``separate``: an inverted residual at expansion 3 and at 6 get their own tensors
    (the other parameters still share); inheritance stays exact; training one leaves the
    other alone; the checkpoint records it and the evaluator reads it back."""
    torch.manual_seed(0)
    net = Supernet(space, separate=["expansion", "act"])
    assert net.separate == ("act", "expansion")  # SEPARABLE's order, whatever the given one
    scramble(net, 1)
    base = {**space.sample(random.Random(3)).sample, "s2.b0.kind": "ir", "s2.b0.act": "relu", "s2.b0.kernel": 5}
    e6, e3 = (space.from_sample({**base, "s2.b0.expansion": e}) for e in (6, 3))
    e3_narrow = space.from_sample({**base, "s2.b0.expansion": 3, "s2.b0.kernel": 3, "s2.width": 0.5})
    x = torch.rand(2, 3, 64, 64)
    for arch in (e6, e3, e3_narrow):
        model = space.build(arch)
        model.load_state_dict(net.extract(arch))
        with torch.no_grad():
            (s1, b1), (s2, b2) = net.subnet(arch).eval()(x), model.eval()(x)
        assert torch.equal(s1, s2) and torch.equal(b1, b2)
    assert any("s2-b0__ir+act-relu+expansion-6__" in n for n in net.weights)
    dw = "stages.1.0.dw.0.weight"
    six, three = net.extract(e6)[dw], net.extract(e3)[dw]
    assert not torch.equal(three, six[: three.shape[0]])  # not the leading channels of expansion 6's
    hswish = net.extract(space.from_sample({**base, "s2.b0.expansion": 6, "s2.b0.act": "hswish"}))[dw]
    assert not torch.equal(hswish, six)                   # nor the other activation's
    opt = torch.optim.SGD(net.weights.values(), lr=0.1)
    sum(level.square().mean() for level in net.subnet(e3_narrow).train().forward_levels(x)).backward()
    opt.step()
    assert torch.equal(net.extract(e6)[dw], six)          # the other expansion: untouched
    moved = net.extract(e3)[dw]
    assert not torch.equal(moved[:, :, 1:4, 1:4][: three.shape[0] // 2], three[:, :, 1:4, 1:4][: three.shape[0] // 2])
    assert torch.equal(moved[:, :, 0], three[:, :, 0])    # kernel 3 inside 5 and widths still share
    with pytest.raises(InputError, match=r"\['colour'\] are not op parameters"):
        Supernet(space, separate=("colour",))
    with pytest.raises(InputError, match="not the string"):
        Supernet(space, separate="act")

    out = tmp_path / "separate.pt"
    train_supernet(space, tiny_data3, 2, BATCH, SEED, out, progress=False, separate=("se", "act"))
    assert load_checkpoint(out)["train"]["separate"] == ["act", "se"]
    ev = get_evaluator("supernet", checkpoint=str(out), data={"source": tiny_data3.source, "n_train": 16, "n_val": 8})
    assert ev.prepare(space).separate == ("act", "se")
    with pytest.raises(InputError, match=r"separate=\['act', 'se'\] \(now None\)"):
        train_supernet(space, tiny_data3, 2, BATCH, SEED, out, progress=False)  # resuming without it
    other = tmp_path / "other.pt"
    with pytest.raises(InputError, match=r"trained with separate=\['act', 'se'\], this run has \[\]"):
        train_supernet(space, tiny_data3, 2, BATCH, SEED, other, progress=False, init_from=out)
    assert not other.exists()


def test_split_groups_start_from_an_unsplit_checkpoint(space, tiny_data3, trained, tmp_path):
    """``init_from`` (few-shot NAS's initialisation): every group's copy of a tensor
    starts as the unsplit supernet's tensor, trained counts included, so every path
    inherits what it inherits from the unsplit one; the run records the file, resumes
    bit-identically and refuses a resume without it; a checkpoint lacking a tensor or
    holding it at another shape is refused by name, leaving the supernet unchanged."""
    from evaluators.supernet import _ungrouped

    split = ("neck.depth", "head.depth")
    record = load_checkpoint(trained.path)
    net = Supernet(space, split)
    net.inherit(record, trained.path)
    want, got = trained.supernet.state_dict(), net.state_dict()
    for key, value in got.items():
        if key != "trained_steps":
            kind, name = key.split(".", 1)
            assert torch.equal(value, want[f"{kind}.{_ungrouped(name)}"]), key
    counts = dict(zip(trained.supernet.weights, trained.supernet.trained_steps.tolist()))
    assert net.trained_steps.tolist() == [counts[_ungrouped(name)] for name in net.weights]
    base = _trained_archs(space)[0].sample
    for depths in ((1, 1), (2, 1), (1, 2)):
        arch = space.from_sample({**base, "neck.depth": depths[0], "head.depth": depths[1]})
        a, b = trained.supernet.extract(arch), net.extract(arch)
        assert all(torch.equal(a[k], b[k]) for k in a)

    out, interrupted = tmp_path / "fine_tuned.pt", tmp_path / "interrupted.pt"
    run = train_supernet(space, tiny_data3, 2, BATCH, SEED, out, progress=False, split=split, init_from=trained.path)
    assert load_checkpoint(out)["train"]["init_from"] == str(trained.path.resolve())
    assert (run.supernet.trained_steps >= net.trained_steps).all() and (run.supernet.trained_steps > net.trained_steps).any()
    with pytest.raises(InputError, match=r"init_from="):
        train_supernet(space, tiny_data3, 2, BATCH, SEED, out, progress=False, split=split)  # only init_from differs
    train_supernet(space, tiny_data3, 2, BATCH, SEED, interrupted, progress=False, split=split,
                   init_from=trained.path, time_budget_s=0)  # stops after one step
    assert load_checkpoint(interrupted)["step"] == 1
    resumed = train_supernet(space, tiny_data3, 2, BATCH, SEED, interrupted, progress=False, split=split,
                             init_from=trained.path)
    a, b = run.supernet.state_dict(), resumed.supernet.state_dict()
    assert resumed.losses == run.losses and all(torch.equal(a[k], b[k]) for k in a)

    fresh = Supernet(space, split)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    for name, damage in (("partial", lambda t: None), ("reshaped", lambda t: t[:1])):
        broken = load_checkpoint(trained.path, mmap=False)
        neck = next(k for k in broken["weights"] if k.startswith("weights.neck"))
        if damage(broken["weights"][neck]) is None:
            del broken["weights"][neck]
        else:
            broken["weights"][neck] = damage(broken["weights"][neck])
        torch.save(broken, tmp_path / f"{name}.pt")
        with pytest.raises(InputError, match=f"{name}.pt: it (has no|holds) 'weights.neck"):
            fresh.inherit(load_checkpoint(tmp_path / f"{name}.pt"), tmp_path / f"{name}.pt")
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_proxy_marginals_reads_a_ranking_output(capsys, bench_script):
    """bench/proxy_marginals.py on a committed bench/proxy_ranking.py output: its overall
    Spearman is the one that output printed for the supernet."""
    import re
    from pathlib import Path

    output = Path(__file__).resolve().parents[1] / "bench" / "results" / "proxy_ranking_supernet_split.txt"
    assert bench_script("proxy_marginals").main([str(output)]) == 0
    printed = capsys.readouterr().out
    overall = float(re.search(r"^overall\s+(\S+)", printed, re.M).group(1))
    table = float(re.search(r"^supernet_map50\s+(\S+)", output.read_text(), re.M).group(1))
    assert overall == pytest.approx(table, abs=1e-3)
    assert re.search(r"^head\.depth\s+0\.04\s", printed, re.M)  # the trained mAP's column


def test_proxy_ranking_shards_share_one_cache_file(tmp_path, bench_script):
    """Two processes training other shards into one cache file keep each other's results:
    each write re-reads the file and merges, so the later writer does not drop the
    earlier one's entry (a plain rewrite of its own in-memory cache would). Tested one
    write after another; between processes, the file lock keeps the writes apart."""
    import argparse

    bench = bench_script("proxy_ranking")
    load_cache, save_result, shard = bench.load_cache, bench.save_result, bench.shard
    path = tmp_path / "cache.json"
    first, second = load_cache(path), load_cache(path)  # both processes start from the same (empty) file
    save_result(path, first, "k", "arch_a", {"map50": 0.1})
    save_result(path, second, "k", "arch_b", {"map50": 0.2})
    assert load_cache(path) == {"k": {"arch_a": {"map50": 0.1}, "arch_b": {"map50": 0.2}}}
    assert second == load_cache(path)  # the later writer sees the other's result too
    save_result(path, first, "k", "arch_a", {"map50": 0.3})  # its own new result wins over the file's
    assert load_cache(path)["k"] == {"arch_a": {"map50": 0.3}, "arch_b": {"map50": 0.2}}
    assert shard("1/2") == (1, 2)
    for bad in ("2/2", "1", "a/2", "-1/2"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not K/N"):
            shard(bad)


@pytest.mark.parametrize("argv, message", [
    (["--supernet-finetune-steps", "-1", "--supernet", "x.pt"], "--supernet-finetune-steps must be >= 0"),
    (["--supernet-finetune-steps", "5"], "--supernet-finetune-steps needs --supernet CKPT"),
    (["--supernet-substitute-neck-head"], "--supernet-substitute-neck-head needs --supernet CKPT"),
])
def test_proxy_ranking_refuses_a_fine_tuning_it_cannot_do(argv, message, capsys, bench_script):
    with pytest.raises(SystemExit) as exc:
        bench_script("proxy_ranking").parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_proxy_ranking_ranks_a_short_trainings_loss_too(capsys, bench_script):
    """With --versus-steps, the short run's mAP and its training loss (lower ranks higher)
    are each ranked against the longer run's mAP, over the networks both runs have; a
    network whose short training failed (no loss) is left out of the loss line only. The
    cached training seconds are given as median and range: what the loss costs without
    validation."""
    import types

    bench = bench_script("proxy_ranking")
    args = bench.parse_args(["--steps", "100", "--versus-steps", "400"])
    key, longer = bench.settings_key(args), bench.settings_key(bench.parse_args(["--steps", "400"]))
    cache = {longer: {"a": {"map50": 0.1}, "b": {"map50": 0.2}, "c": {"map50": 0.3}, "d": {"map50": 0.4}},
             key: {"a": {"map50": 0.02, "train_loss": 1.4, "train_seconds": 4.0},
                   "b": {"map50": 0.04, "train_loss": 1.3, "train_seconds": 6.0},
                   "c": {"map50": 0.03, "train_loss": 1.2, "train_seconds": 9.0}, "d": {"map50": 0.01}}}
    identity = types.SimpleNamespace(to_string=lambda arch: arch)
    bench.print_agreement(args, identity, [(n, n) for n in "abcd"], cache, key)
    printed = capsys.readouterr().out
    assert "trained map50, 100 steps vs 400: spearman -0.400, kendall -0.333, n 4" in printed
    assert "train_loss (lower ranks higher), 100 steps vs 400: spearman 1.000, kendall 1.000, n 3" in printed
    assert "median 6.0 s, 4.0-9.0 s per network (n 3;" in printed


def test_proxy_ranking_can_hold_the_neck_and_head(bench_script):
    """--hold-neck-head: every network gets DARTS's held neck and head, and the random
    draws stay the same, so each random network keeps its backbone."""
    bench = bench_script("proxy_ranking")
    space = get_space("cpu_detector", input_size=128)
    free, held = bench.architectures(space, 4, 0), bench.architectures(space, 4, 0, bench.HELD_NECK_HEAD)
    assert [n for n, _ in free] == [n for n, _ in held]
    for (_, a), (_, b) in zip(free, held):
        assert all(b.sample[k] == v for k, v in bench.HELD_NECK_HEAD.items())
        assert {k: v for k, v in a.sample.items() if k not in bench.HELD_NECK_HEAD} == \
               {k: v for k, v in b.sample.items() if k not in bench.HELD_NECK_HEAD}
    assert bench.parse_args(["--hold-neck-head"]).hold_neck_head and not bench.parse_args([]).hold_neck_head


def test_proxy_marginals_rebuilds_the_networks_an_output_ranked(tmp_path, capsys, bench_script):
    """The row names of a --hold-neck-head output are held networks: proxy_marginals reads
    the output's command line, so every neck/head decision is constant there (no
    correlation), where the same names without the hold would be the free networks.
    An output without its command line is refused (exit 2), not read as another run's."""
    bench = bench_script("proxy_ranking")
    rows = [("mobilenetv2_like_w0.5", 0.10, 0.05), ("pp_lcnet_like_w0.5", 0.06, 0.04),
            ("random_00", 0.08, 0.07), ("random_01", 0.09, 0.06)]
    table = "arch map50 supernet_map50\n" + "".join(f"{n} {t} {s}\n" for n, t, s in rows) + "\n"
    held = tmp_path / "held.txt"
    held.write_text("$ python bench/proxy_ranking.py --n 2 --hold-neck-head --cached-only\n" + table)
    assert bench.recorded_args(held).hold_neck_head and bench.recorded_args(held).n == 2
    assert bench_script("proxy_marginals").main([str(held)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^head\.depth\s+nan\s+nan   \(the same in every network\)$", printed, re.M)  # held
    free = tmp_path / "free.txt"
    free.write_text("$ python bench/proxy_ranking.py --n 2 --cached-only\n" + table)
    assert bench_script("proxy_marginals").main([str(free)]) == 0
    assert not re.search(r"^head\.depth\s+nan", capsys.readouterr().out, re.M)
    bare = tmp_path / "bare.txt"
    bare.write_text(table)
    assert bench_script("proxy_marginals").main([str(bare)]) == 2
    assert "is not the '$ ... proxy_ranking.py ...' command" in capsys.readouterr().err


def test_a_supernet_of_the_whole_space_scores_a_held_one(space, tiny_data3, trained):
    """A space with the neck and head held (``hold``) is scored by a supernet trained on
    the whole space: the same path gets the same score under either space."""
    data = {"source": tiny_data3.source, "n_train": 16, "n_val": 8}
    arch = _trained_archs(space)[0]
    macro = {k: v for k, v in arch.sample.items() if k.startswith(("neck.", "head."))}
    held = get_space("cpu_detector", num_classes=3, input_size=64, hold=macro)
    whole = get_evaluator("supernet", checkpoint=str(trained.path), data=data, bn_batches=2, batch_size=4)(arch, space)
    ev = get_evaluator("supernet", checkpoint=str(trained.path), data=data, bn_batches=2, batch_size=4)
    assert ev(held.from_sample(arch.sample), held) == whole
    assert ev.prepare(held).space.decisions() == space.decisions()  # built over the whole space


def test_substitute_scores_the_backbone_under_the_given_neck_and_head(space, tiny_data3, trained, monkeypatch):
    """``substitute``: a candidate scores as its backbone under the given neck and head, so
    it equals scoring that network directly, the candidate's own neck and head do not
    matter (that network is scored once), no weights are kept for it, and a decision or
    value the space lacks is refused."""
    import evaluators.supernet as supernet_module

    scorings = []
    monkeypatch.setattr(supernet_module, "evaluate",
                        lambda *args, _evaluate=supernet_module.evaluate: scorings.append(1) or _evaluate(*args))
    data = {"source": tiny_data3.source, "n_train": 16, "n_val": 8}
    a, b = _trained_archs(space)[:2]
    macro = {k: v for k, v in b.sample.items() if k.startswith(("neck.", "head."))}
    assert any(a.sample[k] != v for k, v in macro.items()), "the two trained paths should differ in neck or head"
    plain = get_evaluator("supernet", checkpoint=str(trained.path), data=data, bn_batches=2, batch_size=4)
    direct = plain(space.canonicalize(a.replace(**macro)), space)
    ev = get_evaluator("supernet", checkpoint=str(trained.path), data=data, bn_batches=2, batch_size=4,
                       substitute=macro)
    assert ev.scored_architecture(a, space) == space.canonicalize(a.replace(**macro))
    assert ev(a, space) == direct
    assert ev.last_model is None and plain.last_model is not None
    ev(space.canonicalize(a.replace(**macro)), space)  # already that neck and head: its own weights are kept
    assert ev.last_model is not None
    other_head = {"head.depth": next(d for d in space.decisions()["head.depth"] if d != a.sample["head.depth"])}
    scorings.clear()
    assert ev(space.canonicalize(a.replace(**other_head)), space) == direct
    assert not scorings and ev.last_model is None  # the substituted network's score, not scored again
    for bad, message in (({"neck.width": 64}, "'neck.width' is not a decision"),
                         ({"head.depth": 7}, r"head.depth = 7 \(int\) is not one of its values"),
                         ({"neck.pan": 1}, r"neck.pan = 1 \(int\)")):
        with pytest.raises(InputError, match=message):
            get_evaluator("supernet", checkpoint=str(trained.path), data=data, substitute=bad).prepare(space)
    held = get_space("cpu_detector", num_classes=3, input_size=64, hold={"head.depth": a.sample["head.depth"]})
    with pytest.raises(InputError, match=f"substitute: head.depth = {other_head['head.depth']} but the space holds"):
        get_evaluator("supernet", checkpoint=str(trained.path), data=data, substitute=other_head).prepare(held)
    with pytest.raises(InputError, match="substitute must be a mapping"):
        get_evaluator("supernet", checkpoint=str(trained.path), substitute=["head.depth"])


def test_a_search_scores_with_a_substituting_supernet_from_its_config(space, tiny_data3, trained, tmp_path):
    """End to end: `nas search`'s config names the supernet evaluator with a substitute
    (a YAML mapping), every trial is scored as the one trained path it maps to, and the
    winner is exported without weights (the scored network was not the candidate); a bad
    substitute fails before a run folder is written."""
    from nas.config import config_from_dict
    from nas.engine import Engine, RunFolder

    a = _trained_archs(space)[0]
    backbone = {k: v for k, v in a.sample.items() if not k.startswith(("neck.", "head."))}
    neck_head = {k: v for k, v in a.sample.items() if k.startswith(("neck.", "head."))}
    options = {"checkpoint": str(trained.path), "data": {"source": tiny_data3.source, "n_train": 16, "n_val": 8},
               "bn_batches": 2, "batch_size": 4, "substitute": neck_head}
    raw = {"space": {"name": "cpu_detector", "settings": {"num_classes": 3, "input_size": 64, "hold": backbone}},
           "strategy": {"name": "random"}, "budget": 3, "seed": 0, "references": [],
           "evaluators": ["params_flops", {"name": "supernet", "options": options}],
           # params stands in for latency: the report's best needs both, and this 64 px
           # space has no latency table.
           "objective": {"mode": "accuracy", "accuracy": "supernet_map50", "latency": "params"}}
    Engine.new(config_from_dict(raw), tmp_path / "run", progress=False).run()
    records = [r for r in RunFolder(tmp_path / "run").read() if r.status != "duplicate"]
    assert len(records) == 3 and all(r.status == "ok" for r in records)
    direct = get_evaluator("supernet", **{k: v for k, v in options.items() if k != "substitute"})(a, space)
    assert all(r.metrics["supernet_map50"] == direct["supernet_map50"] for r in records)
    best = tmp_path / "run" / "best"
    assert (best / "arch.json").exists() and (best / "model.onnx").exists() and not (best / "weights.pt").exists()
    # A substitute the space cannot take fails before a run folder is written.
    bad = config_from_dict({**raw, "evaluators": [{"name": "supernet",
                                                   "options": {**options, "substitute": {"neck.width": 64}}}]})
    with pytest.raises(InputError, match="'neck.width' is not a decision of cpu_detector"):
        Engine.new(bad, tmp_path / "bad_run", progress=False)
    assert not (tmp_path / "bad_run").exists()
    # So does a sweep with such a variant, before its folder is written.
    from nas.sweep import Sweep, Variant

    bad_evaluators = [{"name": "supernet", "options": {**options, "substitute": {"neck.width": 64}}}]
    variants = [Variant("ok", {}), Variant("bad", {"evaluators": bad_evaluators})]
    with pytest.raises(InputError, match="sweep variant bad: .*'neck.width' is not a decision"):
        Sweep.new(tmp_path / "sweep", raw, variants)
    assert not (tmp_path / "sweep").exists()
