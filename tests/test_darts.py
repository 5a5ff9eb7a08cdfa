"""Differentiable search: mixed ops, the expected latency, the latency gradient, and a
tiny end-to-end search through the engine that resumes and exports."""
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from latency_tables import profiler
from latency_tables.predictor import LatencyTable
from latency_tables.table import TableData
from nas.objectives import Objective
from nas.strategies.darts import DEFAULT_FIXED, DartsStrategy, DartsSupernet, ExpectedLatency, MixedOp
from search_spaces import get_space
from search_spaces.errors import InputError
from search_spaces.cpu_detector import STAGES

KINDS = ("dsconv",)
WIDTHS = (0.5, 0.75)  # the widths the tiny table covers


@pytest.fixture(scope="module")
def space():
    return get_space("cpu_detector", num_classes=6, input_size=64)


@pytest.fixture(scope="module")
def table_path(space, tmp_path_factory):
    """A table holding just the ops the tiny DARTS supernet can produce at WIDTHS, with
    the neck and head searched."""
    net = DartsSupernet(space, WIDTHS, {}, KINDS)
    specs = {s.key: s for s in net.all_specs()}
    data = TableData(profiler.new_header(space, 1))
    for key, spec in specs.items():
        t = profiler.measure_op(spec, 1)
        data.ops[key] = {"kind": spec.kind, "params": spec.param_dict, "ms": t.ms, "median_ms": t.median_ms, "iqr_ms": t.iqr_ms, "runs": t.runs}
    path = tmp_path_factory.mktemp("darts") / "table.json"
    data.save(path)
    return path


def test_mixed_op_is_the_weighted_sum():
    torch.manual_seed(0)
    ops = [torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 1), torch.nn.Identity()]
    mixed = MixedOp(ops)
    x = torch.randn(2, 4, 8, 8)
    w = torch.softmax(torch.randn(3), 0)
    mixed.weights = w
    expected = sum(wi * op(x) for wi, op in zip(w, ops))
    assert torch.allclose(mixed(x), expected, atol=1e-6)
    mixed.hard_index, mixed.hard_weight = 1, torch.tensor(1.0)
    assert torch.allclose(mixed(x), ops[1](x))


def test_expected_latency_of_one_hot_is_the_table_latency(space, table_path):
    table = LatencyTable.load(table_path, space)
    net = DartsSupernet(space, 0.5, DEFAULT_FIXED, KINDS)
    expected = ExpectedLatency(net, table)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        logits = net.masked_logits()
        choice = (logits + torch.rand(logits.shape, generator=gen)).argmax(-1)
        one_hot = torch.nn.functional.one_hot(choice, logits.shape[1]).float()
        arch = net.derive(choice.tolist())
        assert float(expected(one_hot).detach()) == pytest.approx(table.predict(arch), rel=1e-5)


@pytest.mark.parametrize("factorized", [False, True])
def test_latency_term_alone_moves_alpha_to_cheaper_ops(space, table_path, factorized):
    table = LatencyTable.load(table_path, space)
    net = DartsSupernet(space, 0.5, DEFAULT_FIXED, KINDS, factorized)
    expected = ExpectedLatency(net, table)
    start = expected(net.probabilities()).item()
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.1)
    for _ in range(30):
        loss = torch.log(expected(net.probabilities()) / (0.5 * start)) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(expected(net.probabilities()).detach()) < 0.9 * start
    # The most probable candidate at each position is no more expensive than the average one.
    probs = net.probabilities().detach()
    _, cost, _ = expected.at([0] * len(STAGES))
    for p in range(len(probs)):
        valid = net.valid[p] > 0
        assert cost[p, probs[p].argmax()] <= cost[p][valid].mean() + 1e-9


def test_factorized_logits_are_sums_over_choice_values(space):
    """A candidate's logit is the sum of its choice values' parameters, so raising one
    candidate also raises those that share a value with it, not the others."""
    net = DartsSupernet(space, 0.5, DEFAULT_FIXED, ("dsconv", "ir"), factorized=True)
    start = net.probabilities()
    assert torch.allclose(start, DartsSupernet(space, 0.5, DEFAULT_FIXED, ("dsconv", "ir")).probabilities())  # uniform
    names = sorted({f"{k}={v}" for c in net.candidates for k, v in c.items()} | {"skip"})
    with torch.no_grad():
        net.alpha.normal_(generator=torch.Generator().manual_seed(0))
    logits, alpha = net.masked_logits().detach(), net.alpha.detach()
    p = 1  # a position that may be skipped
    for c, cand in enumerate(net.candidates):
        assert float(logits[p, c]) == pytest.approx(sum(float(alpha[p, names.index(f"{k}={v}")]) for k, v in cand.items()), abs=1e-5)
    assert float(logits[p, -1]) == pytest.approx(float(alpha[p, names.index("skip")]))
    index = {tuple(sorted(c.items())): i for i, c in enumerate(net.candidates)}
    a = index[tuple(sorted({"kind": "ir", "kernel": 3, "expansion": 3, "se": False, "act": "relu"}.items()))]
    b = index[tuple(sorted({"kind": "ir", "kernel": 3, "expansion": 6, "se": True, "act": "hswish"}.items()))]
    c = index[tuple(sorted({"kind": "dsconv", "kernel": 5, "se": True, "act": "hswish"}.items()))]
    with torch.no_grad():
        net.alpha.zero_()
    before = net.probabilities()[p].detach()
    opt = torch.optim.SGD([net.alpha], lr=0.5)
    (-torch.log(net.probabilities()[p, a])).backward()
    opt.step()
    after = net.probabilities()[p].detach()
    assert after[a] > before[a]
    assert after[b] / after[c] > 1.2 * before[b] / before[c]  # b shares kind and kernel with a; c shares nothing


def _random_choices(net, gen):
    """A block candidate per position and an option per axis, at random."""
    choice = (net.masked_logits() + torch.rand(net.valid.shape, generator=gen)).argmax(-1)
    axes = (net.axis_alpha.masked_fill(net.axis_valid == 0, -1e9) + torch.rand(net.axis_alpha.shape, generator=gen)).argmax(-1)
    return choice, axes


def test_param_table_adds_up_to_the_built_network(space):
    net = DartsSupernet(space, WIDTHS, {}, KINDS)
    params = net.param_table()
    gen = torch.Generator().manual_seed(2)
    for _ in range(4):
        choice, axes = _random_choices(net, gen)
        built = space.build(net.derive(choice.tolist(), axes.tolist()))
        const, rows, macro = net.at(params, axes[: len(STAGES)].tolist())
        total = const + float(rows[range(len(choice)), choice].sum()) + float(macro[tuple(axes[len(STAGES):].tolist())])
        assert sum(p.numel() for p in built.parameters()) == total


def test_expected_latency_with_searched_widths_and_neck_is_exact(space, table_path):
    """One-hot candidates and options: the table latency of that network. Mixed
    distributions: the mean over networks sampled from them."""
    table = LatencyTable.load(table_path, space)
    net = DartsSupernet(space, WIDTHS, {}, KINDS)
    expected = ExpectedLatency(net, table)
    gen = torch.Generator().manual_seed(3)
    one_hot = torch.nn.functional.one_hot
    for _ in range(6):
        choice, axes = _random_choices(net, gen)
        arch = net.derive(choice.tolist(), axes.tolist())
        got = float(expected(one_hot(choice, net.alpha.shape[1]).float(), one_hot(axes, net.axis_alpha.shape[1]).float()))
        assert got == pytest.approx(table.predict(arch), rel=1e-5)
    with torch.no_grad():
        net.alpha.normal_(generator=gen)
        net.axis_alpha.normal_(generator=gen)
    probs, aprobs = net.probabilities(), net.axis_probabilities()
    samples = [table.predict(net.derive(torch.multinomial(probs, 1, generator=gen).flatten().tolist(),
                                        torch.multinomial(aprobs, 1, generator=gen).flatten().tolist()))
               for _ in range(400)]
    mean, sem = np.mean(samples), np.std(samples) / np.sqrt(len(samples))
    assert abs(float(expected(probs, aprobs).detach()) - mean) < 4 * sem


def test_masks_keep_the_chosen_channels(space):
    """Stages at their narrow width and the neck at its fewest channels pass zeros
    beyond those channels; sampling sends a gradient to the widths and neck channels."""
    net = DartsSupernet(space, WIDTHS, {}, KINDS)
    first = torch.nn.functional.one_hot(torch.zeros(len(net.axes), dtype=torch.long), net.axis_alpha.shape[1]).float()
    net.set_dense(net.probabilities(), first)
    with torch.no_grad():  # values only here; the gradient is checked below
        x = net.net.stem(torch.randn(2, 3, 64, 64))
        feats = []
        for s, stage in enumerate(net.net.stages):
            x = stage(x)
            narrow = net.stage_channels[s][0]
            assert x.shape[1] == net.stage_channels[s][-1] > narrow
            assert float(x[:, narrow:].abs().max()) == 0.0 and float(x[:, :narrow].abs().max()) > 0
            feats.append(x)
        fewest = net.axes[net.axis_index["neck.channels"]][1][0]
        for level in net.net.neck([feats[i] for i in net.net.feature_index]):
            assert level.shape[1] > fewest and float(level[:, fewest:].abs().max()) == 0.0
    net.set_hard(torch.Generator().manual_seed(0), 1.0)
    sum(level.square().mean() for level in net.net.forward_levels(torch.randn(2, 3, 64, 64))).backward()
    assert (net.axis_alpha.grad[: len(STAGES)].abs().sum(-1) > 0).all()
    assert net.axis_alpha.grad[net.axis_index["neck.channels"]].abs().sum() > 0


def test_narrow_split_shuffle_uses_every_live_channel():
    """At a sampled width below the built one, a shape-keeping shuffle unit splits the
    live channels (every live input channel reaches the live output, zeros beyond)."""
    from search_spaces.ops import ShuffleUnit

    torch.manual_seed(0)
    op = MixedOp([ShuffleUnit(32, 32, 1, 3, False, "relu")]).eval()
    op.hard_index, op.hard_weight, op.live = 0, torch.tensor(1.0), 16
    x = torch.zeros(1, 32, 8, 8)
    x[:, :16] = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        base = op(x)
        assert float(base[:, 16:].abs().max()) == 0.0
        for c in range(16):
            bumped = x.clone()
            bumped[:, c] += 1.0
            assert float((op(bumped)[:, :16] - base[:, :16]).abs().max()) > 0, f"live input channel {c} is ignored"


@pytest.fixture(scope="module")
def by_size_table_path(space, table_path, tmp_path_factory):
    """The tiny table with each op's time replaced by its parameter count (1 ms per
    10,000, plus 1 µs): wider is always dearer. At 64 px the measured times of a
    narrow and a wide op can differ by less than their noise (a CI run once timed
    s3's wide blocks below its narrow ones), so a test of which way the latency
    gradient pushes needs times that order the widths for sure."""
    from search_spaces.ops import make_op

    data = TableData.load(table_path)
    for spec in DartsSupernet(space, WIDTHS, {}, KINDS).all_specs():
        if spec.key in data.ops:
            n = sum(p.numel() for p in make_op(spec).parameters())
            data.ops[spec.key].update(ms=1e-3 + n / 1e4, median_ms=1e-3 + n / 1e4)
    path = tmp_path_factory.mktemp("darts_by_size") / "table.json"
    data.save(path)
    return path


def test_latency_term_alone_moves_widths_and_neck_cheaper(space, by_size_table_path):
    table = LatencyTable.load(by_size_table_path, space)
    net = DartsSupernet(space, WIDTHS, {}, KINDS)
    expected = ExpectedLatency(net, table)
    start = float(expected(net.probabilities()).detach())
    opt = torch.optim.Adam([net.axis_alpha], lr=0.1)
    for _ in range(30):
        loss = torch.log(expected(net.probabilities()) / (0.1 * start)) ** 2  # below the cheapest: always pushes down
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = net.axis_probabilities()
    assert (probs[: len(STAGES), 0] > 0.5).all()  # the narrow width
    assert probs[net.axis_index["neck.channels"]].argmax() == 0  # the fewest channels


def test_derivation_searches_widths_at_the_target(space, table_path):
    """With widths and neck searched, the derivation picks a width per stage and a neck
    and head, and lands near the target (within the issue's 10%: it aims at 3%, but on
    this tiny measured table the nearest network it may build can be further off, and
    how far depends on the timing: a CI run once landed 5.0% below); with everything
    held it keeps those values."""
    table = LatencyTable.load(table_path, space)
    net = DartsSupernet(space, WIDTHS, {}, KINDS)
    with torch.no_grad():
        net.axis_alpha.normal_(generator=torch.Generator().manual_seed(4))  # no ties among the macro options
    lo, hi = ExpectedLatency(net, table).range_ms()
    strategy = DartsStrategy(space, Objective(mode="soft", target_ms=lo), kinds=KINDS, width=list(WIDTHS), progress=False)
    for target in (lo + 0.3 * (hi - lo), lo + 0.6 * (hi - lo)):
        choices, axes = strategy.derive_choices(net, table, target)
        assert len(axes) == len(net.axes)
        probs = net.axis_probabilities()
        assert all(probs[a, i] == probs[a].max() for a, i in enumerate(axes) if a >= len(STAGES))
        assert table.predict(net.derive(choices, axes)) == pytest.approx(target, rel=0.10)
    held = DartsSupernet(space, 0.75, DEFAULT_FIXED, KINDS)
    choices, axes = strategy.derive_choices(held, table, target)
    arch = held.derive(choices, axes)
    assert axes == [0] * len(held.axes) and arch.sample["s3.width"] == 0.75
    assert all(arch.sample[k] == v for k, v in DEFAULT_FIXED.items())


def test_params_weight_buys_parameters_at_the_same_latency(space, table_path):
    """A flat distribution leaves the choice to the value's parameter term: with it the
    derivation picks a network with more parameters, still near the target."""
    table = LatencyTable.load(table_path, space)
    net = DartsSupernet(space, 0.5, DEFAULT_FIXED, KINDS)
    lo, hi = ExpectedLatency(net, table).range_ms(net.valid)
    target = lo + 0.5 * (hi - lo)
    objective = Objective(mode="soft", target_ms=target)
    derived = {}
    for weight in (0.0, 2.0):
        strategy = DartsStrategy(space, objective, kinds=KINDS, width=0.5, params_weight=weight, progress=False)
        arch = net.derive(*strategy.derive_choices(net, table, target))
        derived[weight] = (sum(p.numel() for p in space.build(arch).parameters()), table.predict(arch))
    assert derived[2.0][0] > derived[0.0][0]
    for _, ms in derived.values():
        assert ms == pytest.approx(target, rel=0.1)


def test_allow_ratio_sets_which_candidates_the_derivation_may_pick(space, table_path):
    """With one expensive candidate far likelier than the rest (skip too) at every
    position, a cut at a tenth of the best leaves only it, and a target below that
    candidate's cheapest network is missed; ``allow_ratio: 0`` (the default) lets the
    derivation take cheaper candidates and skips, and meet it. Skip stays out of a stage's minimum
    depth even when the target asks for less than any network can be."""
    table = LatencyTable.load(table_path, space)
    net = DartsSupernet(space, 0.5, DEFAULT_FIXED, KINDS)
    likely = next(i for i, c in enumerate(net.candidates) if c == {"kind": "dsconv", "act": "hswish", "kernel": 5, "se": True})
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[:, likely] = 5.0  # p ~ 0.95 against ~0.006 for each other candidate
    only_likely = net.valid.clone()
    only_likely[:, : len(net.candidates)] = 0
    only_likely[:, likely] = 1
    lo, _ = ExpectedLatency(net, table).range_ms(net.valid)
    lo_likely, _ = ExpectedLatency(net, table).range_ms(only_likely)
    target = 0.5 * (lo + lo_likely)
    derived = {}
    for ratio in (0.1, 0.0):
        strategy = DartsStrategy(space, Objective(mode="soft", target_ms=target), kinds=KINDS, width=0.5,
                                 allow_ratio=ratio, progress=False)
        choices, _ = strategy.derive_choices(net, table, target)
        derived[ratio] = (set(choices), table.predict(net.derive(choices)))
        below, _ = strategy.derive_choices(net, table, 0.5 * lo)
        assert all(c < len(net.candidates) for c, v in zip(below, net.valid[:, -1]) if v == 0)
    assert derived[0.1][0] == {likely} and derived[0.1][1] > 1.1 * target
    assert derived[0.0][0] - {likely} and derived[0.0][1] == pytest.approx(target, rel=0.1)


def test_candidates_are_distinct_draws_at_the_target(space, table_path):
    """``candidates``: the plain derivation first, then distinct networks derived from
    Gumbel-perturbed log-probabilities, each near the target, the same ones on a rerun;
    a distribution peaked on one candidate per position has nothing else to offer."""
    table = LatencyTable.load(table_path, space)
    net = DartsSupernet(space, 0.5, DEFAULT_FIXED, KINDS)
    with torch.no_grad():
        net.alpha.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    lo, hi = ExpectedLatency(net, table).range_ms(net.valid)
    target = lo + 0.5 * (hi - lo)
    strategy = DartsStrategy(space, Objective(mode="soft", target_ms=target), kinds=KINDS, width=0.5,
                             measure_rounds=0, candidates=4, progress=False)
    first = net.derive(*strategy.derive_choices(net, table, target))
    archs, _ = strategy.sample_candidates(net, table, target, first)
    assert len(archs) == 4 and archs[0] is first and len({a.id for a in archs}) == 4
    for arch in archs:
        assert table.predict(arch) == pytest.approx(target, rel=0.05)
    assert [a.id for a in strategy.sample_candidates(net, table, target, first)[0]] == [a.id for a in archs]
    with torch.no_grad():
        net.alpha.zero_()
        # Every position prefers one candidate 55:1, beyond the 10:1 a derivation with
        # allow_ratio 0.1 allows but within reach of Gumbel noise: what is allowed must be
        # decided without the noise.
        net.alpha[torch.arange(len(net.positions)), 0] = 4.0
    cut = DartsStrategy(space, Objective(mode="soft", target_ms=target), kinds=KINDS, width=0.5,
                        measure_rounds=0, candidates=4, allow_ratio=0.1, progress=False)
    first = net.derive(*cut.derive_choices(net, table, target))
    assert [a.id for a in cut.sample_candidates(net, table, target, first)[0]] == [first.id]


def test_candidates_in_flight_at_a_crash_are_proposed_again(space):
    """The saved state holds the networks told, not those asked: one still being
    evaluated when the run stopped (a Ray runner asks ahead) is proposed after resuming."""
    rng = __import__("random").Random(0)
    derived = [space.sample(rng) for _ in range(3)]
    strategy = DartsStrategy(space, Objective(mode="soft", target_ms=1.0), candidates=3, progress=False)
    strategy.derived = [a.to_dict() for a in derived]
    asked = [strategy.ask() for _ in range(3)]
    strategy.tell(asked[1], None)  # the second finished first; the others were running
    resumed = DartsStrategy(space, Objective(mode="soft", target_ms=1.0), candidates=3, progress=False)
    resumed.load_state_dict(json.loads(json.dumps(strategy.state_dict())))
    assert [resumed.ask().id, resumed.ask().id, resumed.ask()] == [derived[0].id, derived[2].id, None]


def test_tiny_search_end_to_end_resumes_and_exports(space, table_path, tmp_path):
    from nas.config import config_from_dict
    from nas.engine import Engine, RunFolder

    probe = LatencyTable.load(table_path, space)
    net = DartsSupernet(space, 0.5, DEFAULT_FIXED, KINDS)
    target = round(float(ExpectedLatency(net, probe)(net.probabilities()).detach()) * 0.9, 4)
    options = {"steps": 6, "batch_size": 4, "width": list(WIDTHS), "fixed": {}, "kinds": list(KINDS), "table": str(table_path),
               "checkpoint_every": 2, "candidates": 2, "data": {"n_train": 16, "n_val": 8},
               # One timing per derivation: at 64 px onnxruntime runs this net at about half the
               # table's sum, so corrected re-derivations all end at the largest network.
               "measure_rounds": 1}
    cfg = config_from_dict({
        "space": {"name": "cpu_detector", "settings": {"num_classes": 6, "input_size": 64}},
        "strategy": {"name": "darts", "options": options}, "budget": 5,
        "objective": {"mode": "soft", "target_ms": target},
        "evaluators": [{"name": "latency_table", "options": {"table": str(table_path)}}, "params_flops",
                       {"name": "train_proxy", "options": {"steps": 2, "batch_size": 4, "data": {"n_train": 16, "n_val": 8}}}]})
    # Interrupt the supernet training after its first checkpoint...
    strat = DartsStrategy(space, Objective(mode="soft", target_ms=target), seed=0,
                          **{**options, "steps": 6, "checkpoint_path": str(tmp_path / "run" / "darts.pt")})
    strat.options["steps"] = 2
    strat.search()
    ck = torch.load(tmp_path / "run" / "darts.pt", weights_only=False)
    assert ck["state"]["step"] == 2
    # ... then the engine resumes from it (the run folder's darts.pt) and finishes.
    engine = Engine(cfg, tmp_path / "run", progress=False)
    engine.folder.create(cfg)
    engine._restore_strategy()
    engine.run()
    ck = torch.load(tmp_path / "run" / "darts.pt", weights_only=False)
    assert ck["state"]["step"] == 6 and len(ck["state"]["history"]) == 6
    records = RunFolder(tmp_path / "run").read()
    # Both candidates were evaluated, then the strategy had nothing more to propose (budget 5).
    assert len(records) == 2 and all(r.status == "ok" and r.metrics["latency_ms"] > 0 for r in records)
    assert (tmp_path / "run" / "best" / "model.onnx").exists()
    state = json.loads((tmp_path / "run" / "strategy.json").read_text())["state"]
    assert len(state["derived"]) == 2 and len(state["report"]["candidates"]) == 1
    assert abs(state["report"]["off_target"]) < 0.5 and state["report"]["derived_table_ms"] > 0
    # The derivation was checked against onnxruntime and the closest measurement kept.
    measured = state["report"]["measurements"]
    assert measured and state["report"]["measured_ms"] == min((m["measured_ms"] for m in measured),
                                                              key=lambda ms: abs(ms / target - 1))
    # A checkpoint is not resumed under other held decisions (their options would shift).
    other = DartsStrategy(space, Objective(mode="soft", target_ms=target), seed=0,
                          **{**options, "fixed": {"neck.pan": True}, "checkpoint_path": str(tmp_path / "run" / "darts.pt")})
    with pytest.raises(InputError, match="fixed"):
        other.search()


def test_default_neck_is_the_richer_one_only_where_the_target_affords_it(space, table_path):
    """Without ``fixed``, the search holds the first richer neck whose cheapest network at
    the widest width leaves ``WIDTH_HEADROOM`` under the target, else ``DEFAULT_FIXED``; a
    neck the space's own ``hold`` rules out, or whose ops the table lacks, is passed over."""
    from nas.strategies.darts import RICHER_NECKS, WIDTH_HEADROOM, choose_fixed

    tiny = LatencyTable.load(table_path, space)  # no ops at width 1.0: nothing to price there
    assert choose_fixed(space, tiny, 100.0, KINDS, (1.0,)) == DEFAULT_FIXED
    assert choose_fixed(space, tiny, 100.0, KINDS, WIDTHS) != DEFAULT_FIXED
    space = get_space("cpu_detector")  # the committed table's settings
    table = LatencyTable.default(space, 1)
    richer = {**DEFAULT_FIXED, **RICHER_NECKS[0]}
    net = DartsSupernet(space, 1.0, richer, KINDS)
    cheapest = ExpectedLatency(net, table).range_ms(net.valid)[0]
    assert choose_fixed(space, table, cheapest * WIDTH_HEADROOM * 1.01, KINDS, (0.5, 1.0)) == richer
    assert choose_fixed(space, table, cheapest * WIDTH_HEADROOM * 0.99, KINDS, (0.5, 1.0)) == DEFAULT_FIXED
    held = get_space("cpu_detector", hold={"neck.channels": DEFAULT_FIXED["neck.channels"]})
    assert choose_fixed(held, table, 100.0, KINDS, (1.0,)) == DEFAULT_FIXED


def test_a_correction_trusts_the_table_as_much_as_one_timing(monkeypatch, space, table_path):
    """A network timed 20% over the table is re-derived against the target over the
    geometric mean of 1.2 and the table's own 1, and the timing closest to the target is
    kept."""
    import latency_tables.profiler as profiler
    from latency_tables.runtime import Timing

    table = LatencyTable.load(table_path, space)
    monkeypatch.setattr(profiler, "measure_model",
                        lambda sp, arch, threads: Timing(1.2 * table.predict(arch), 0.0, 0.0, 1))
    net = DartsSupernet(space, 0.5, DEFAULT_FIXED, KINDS)
    lo, hi = ExpectedLatency(net, table).range_ms(net.valid)
    target = lo + 0.5 * (hi - lo)
    strategy = DartsStrategy(space, Objective(mode="soft", target_ms=target), kinds=KINDS, width=0.5,
                             measure_rounds=2, progress=False)
    arch, tried = strategy.derive_measured(net, table, target)
    assert len(tried) == 2 and tried[0]["table_target_ms"] == target
    assert tried[1]["table_target_ms"] == pytest.approx(target / 1.2 ** 0.5)
    assert tried[1]["measured_ms"] == pytest.approx(1.2 * tried[1]["table_ms"])
    best = min(tried, key=lambda t: abs(t["measured_ms"] / target - 1))
    assert table.predict(arch) == pytest.approx(best["table_ms"])


def test_auto_width_is_the_widest_with_headroom_under_the_target():
    from nas.strategies.darts import WIDTH_HEADROOM, choose_width

    space = get_space("cpu_detector")  # the committed table's settings
    table = LatencyTable.default(space, 1)
    _, ranges = choose_width(space, table, 3.0, DEFAULT_FIXED, KINDS)
    assert set(ranges) == {"0.5", "0.75", "1.0"} and all(0 < lo < hi for lo, hi in ranges.values())
    for width, (lo, _) in ranges.items():
        target = lo * WIDTH_HEADROOM * 1.01  # this width fits; any wider one must not
        wider_fit = [float(w) for w, (l2, _) in ranges.items() if float(w) > float(width) and l2 * WIDTH_HEADROOM <= target]
        assert choose_width(space, table, target, DEFAULT_FIXED, KINDS)[0] == max([float(width)] + wider_fit)
    narrowest = min(ranges, key=float)
    assert choose_width(space, table, 0.01, DEFAULT_FIXED, KINDS)[0] == float(narrowest)  # nothing fits
    with pytest.raises(Exception, match="width"):
        DartsStrategy(space, Objective(mode="soft", target_ms=1.0), width=0.6)
    with pytest.raises(Exception, match="fixed.*neck.depth=7"):
        DartsStrategy(space, Objective(mode="soft", target_ms=1.0), fixed={"neck.depth": 7})


@pytest.mark.ray
def test_sweep_runs_darts_searches_in_parallel_on_ray(space, table_path, tmp_path):
    ray = pytest.importorskip("ray")
    from nas.sweep import Sweep, grid

    probe = LatencyTable.load(table_path, space)
    net = DartsSupernet(space, 0.5, DEFAULT_FIXED, KINDS)
    mid = float(ExpectedLatency(net, probe)(net.probabilities()).detach())
    targets = [round(mid * 0.8, 3), round(mid * 1.1, 3)]
    base = {"space": {"name": "cpu_detector", "settings": {"num_classes": 6, "input_size": 64}},
            # The table path relative, as a config's often is: Ray starts each trial in its own
            # folder, and the sweep must go back to the launch folder for it to mean the same.
            "strategy": {"name": "darts", "options": {"steps": 4, "batch_size": 4, "width": 0.5, "kinds": list(KINDS),
                                                      "table": os.path.relpath(table_path),
                                                      "data": {"n_train": 16, "n_val": 8}}},
            "budget": 1, "objective": {"mode": "soft"},
            "evaluators": [{"name": "latency_table", "options": {"table": str(table_path)}}, "params_flops"]}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = Sweep.new(tmp_path / "sw", base, grid(targets)).run("ray", max_concurrent=2, cpus_per_trial=1)
    finally:
        ray.shutdown()
    assert [r["status"] for r in rows] == ["done", "done"]
    for row, target in zip(rows, targets):
        state = json.loads((tmp_path / "sw" / row["variant"] / "strategy.json").read_text())["state"]
        assert state["report"]["target_ms"] == target and row["derived_measured_ms"] > 0
        assert (tmp_path / "sw" / row["variant"] / "report.md").exists() and row["trials"] == 1


def test_search_can_start_from_a_trained_supernet(space, tmp_path, scramble):
    """``init_from``: every op of the DARTS supernet starts as the op a path holding it
    inherits from a weight-sharing supernet, so with one-hot weights the DARTS network
    computes what the standalone network loaded from that supernet computes; a split
    supernet is refused by name."""
    from evaluators.supernet import Supernet

    torch.manual_seed(0)
    shared = Supernet(space)
    scramble(shared, 1)
    net = DartsSupernet(space, 0.75, DEFAULT_FIXED, ("dsconv", "ir"))
    assert net.inherit(shared) > len(net.positions) * len(net.candidates)
    rng = np.random.default_rng(0)
    skip = len(net.candidates)
    # Random blocks; skips only at the end of a stage, so each block keeps its role's weights.
    choices = [skip if (b == max(STAGES[s].depths) - 1 and b >= min(STAGES[s].depths) and s % 2) else int(rng.integers(skip))
               for s, (_, b) in zip(net.position_stage, net.positions)]
    assert skip in choices
    net.set_dense(torch.nn.functional.one_hot(torch.tensor(choices), net.masked_logits().shape[1]).float())
    arch = net.derive(choices)
    model = space.build(arch)
    model.load_state_dict(shared.extract(arch))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(net.net.eval()(x), model.eval()(x)):
            assert torch.allclose(a, b, atol=1e-5)

    split = tmp_path / "split.pt"
    from evaluators.supernet import train_supernet
    from evaluators.data import DataConfig

    train_supernet(space, DataConfig(n_train=4, n_val=2), 1, 4, 0, split, progress=False,
                   split=("head.depth",))
    with pytest.raises(InputError, match="darts option 'init_from': .*split.pt is a split supernet"):
        DartsStrategy.init_record(space, str(split))


def test_search_from_a_trained_supernet_starts_there_and_resumes_only_with_it(space, table_path, tmp_path):
    """Through ``search()``: the weights start as the checkpoint's (one step from them,
    not from a fresh draw); a resumed search with another ``init_from`` is refused."""
    from evaluators.data import DataConfig
    from evaluators.supernet import Supernet, load_checkpoint, train_supernet

    ckpt = tmp_path / "supernet.pt"
    train_supernet(space, DataConfig(n_train=4, n_val=2), 1, 4, 0, ckpt, progress=False)
    record = load_checkpoint(ckpt, mmap=False)
    g = torch.Generator().manual_seed(2)
    for name, t in record["weights"].items():  # far from any fresh draw
        if name.startswith("weights."):
            t.add_(torch.randn(t.shape, generator=g))
    torch.save(record, ckpt)
    two_kinds = get_space("cpu_detector", num_classes=6, input_size=64, block_kinds=["dsconv", "ir"])
    with pytest.raises(InputError, match=r"trained with block kinds \['dsconv', 'ghost', 'ir', 'shuffle'\], the space has"):
        DartsStrategy.init_record(two_kinds, str(ckpt))
    shared = Supernet(space)
    shared.load_state_dict(record["weights"])
    options = dict(steps=1, batch_size=4, width=0.5, kinds=KINDS, table=str(table_path), measure_rounds=0,
                   data={"n_train": 8, "n_val": 4}, progress=False)
    strategy = DartsStrategy(space, Objective(mode="soft", target_ms=3.0), init_from=str(ckpt),
                             checkpoint_path=str(tmp_path / "darts.pt"), **options)
    strategy.search()
    ck = torch.load(tmp_path / "darts.pt", weights_only=False)
    searched, held = ck["net"], ck["state"]["fixed"]  # the neck the target affords (choose_fixed)
    start, fresh = DartsSupernet(space, 0.5, held, KINDS), DartsSupernet(space, 0.5, held, KINDS)
    start.inherit(shared)
    weights = [k for k, v in start.state_dict().items() if k.endswith("weight") and v.dim() == 4]
    gap = lambda net: max(float((searched[k] - net.state_dict()[k]).abs().max()) for k in weights)  # noqa: E731
    assert gap(start) < 0.05 < gap(fresh)  # one AdamW step moves a weight by about the lr, 4e-3
    other = tmp_path / "other.pt"
    other.write_bytes(ckpt.read_bytes())
    again = DartsStrategy(space, Objective(mode="soft", target_ms=3.0), init_from=str(other),
                          checkpoint_path=str(tmp_path / "darts.pt"), **options)
    with pytest.raises(InputError, match="was trained with darts option init_from"):
        again.search()


@pytest.mark.parametrize("option, message", [
    ("candidates: 3", "'budget' is 2, but strategy 'darts' may propose up to 3"),
    ("candidates: two", "darts option 'candidates': 'two' is not a whole number >= 1"),
    ("factorized: 'no'", "darts option 'factorized': 'no' is not true or false"),
    ("width: 0.6", "darts option 'width': 0.6 is not one of the space's widths"),
    ("fixed: {neck.depth: 7}", "darts option 'fixed': neck.depth=7 is not a neck/head decision"),
    ("kinds: [conv7]", "darts option 'kinds': ['conv7'] is not a list of the space's block kinds"),
    ("kinds: ir", "darts option 'kinds': 'ir' is not a list of the space's block kinds"),
    ("fixed: c96", "darts option 'fixed': 'c96' is not a mapping"),
    ("tau: [5, 0]", "darts option 'tau': [5, 0] is not [start, end], two temperatures > 0"),
    ("lam: -1", "darts option 'lam': -1 is not a number >= 0"),
    ("allow_ratio: 1.5", "darts option 'allow_ratio': 1.5 is not a number in [0, 1]"),
    ("batch_size: 0", "darts option 'batch_size': 0 is not a whole number >= 1"),
    ("data: {n_images: 8}", "darts option 'data': {'n_images': 8} is not a mapping of DataConfig fields"),
    ("init_from: no_such.pt", "darts option 'init_from': supernet checkpoint no_such.pt does not exist"),
    ("init_from: 3", "darts option 'init_from': 3 is not a path"),
])
def test_bad_options_or_budget_are_refused_before_anything_is_written(option, message, tmp_path, capsys):
    """The engine asks the strategy to check its options and how many networks it will
    propose; a bad value, or a budget that would leave some unevaluated, is a usage
    error, and no run folder is created."""
    from nas.cli import main

    config = tmp_path / "darts.yaml"
    config.write_text(f"strategy: {{name: darts, options: {{steps: 1, measure_rounds: 0, "
                      f"data: {{n_train: 8, n_val: 4}}, {option}}}}}\nbudget: 2\nobjective: {{mode: soft, target_ms: 3.0}}\n"
                      "evaluators: [params_flops]\n")  # small, should the check ever let it run
    code = main(["search", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()



@pytest.fixture
def bench(bench_script):
    """bench/darts_vs_evolution.py as a module (its re-training workers import it too)."""
    return bench_script("darts_vs_evolution")


def test_darts_bench_scores_retrained_networks_on_held_out_images(tmp_path, capsys, monkeypatch, bench):
    """bench/darts_vs_evolution.py's re-training: each network's mAP@.5 on the searches'
    validation images and on ``--holdout-val`` generated images of another data seed
    (images evolution did not pick its result on), each cached under its own key (the
    searches' under the key it always had, so earlier caches still count), so a second
    call trains nothing; a negative count exits 2."""
    from evaluators.synthetic import make_synthetic

    seen = make_synthetic(4, 64, seed=0, split="val")
    held = make_synthetic(4, 64, seed=bench.HOLDOUT_DATA_SEED, split="val")
    assert all(seen.annotations(i)[0].tolist() != held.annotations(i)[0].tolist() for i in range(4))

    arch = get_space("cpu_detector").reference_architectures()["pp_lcnet_like_w0.5"]
    options = {"steps": 2, "batch_size": 4, "threads": 1, "data": {"n_train": 8, "n_val": 4}}
    # The held-out score evaluates the trained network on the held-out images: given the
    # searches' own images (data seed 0, as many), it is their score.
    with monkeypatch.context() as m:
        m.setattr(bench, "HOLDOUT_DATA_SEED", 0)
        searched, again = bench._train_once((arch.to_json(), {**options, "seed": 1}, 4))
    assert searched == again and 0.0 <= searched <= 1.0

    flags = ["--train-steps", "2", "--batch-size", "4", "--n-train", "8", "--n-val", "4", "--retrain-seeds", "1"]
    path = tmp_path / "retrain.json"
    on_val, on_held = bench.retrain(bench.parse_args(flags + ["--holdout-val", "4"]), [arch], path)
    assert "re-training: 1 trainings" in capsys.readouterr().out
    assert on_val == {arch.to_json(): [searched]}  # seed 1, as above: training is deterministic
    assert len(on_held[arch.to_json()]) == 1 and 0.0 <= on_held[arch.to_json()][0] <= 1.0
    assert set(json.loads(path.read_text())) == {
        json.dumps(options, sort_keys=True),  # the key of the caches written before held-out scores
        json.dumps({**options, "holdout_val": 4, "holdout_seed": bench.HOLDOUT_DATA_SEED}, sort_keys=True)}
    assert bench.retrain(bench.parse_args(flags + ["--holdout-val", "4"]), [arch], path) == (on_val, on_held)
    assert bench.retrain(bench.parse_args(flags + ["--holdout-val", "0"]), [arch], path) == (on_val, {})
    assert "re-training" not in capsys.readouterr().out  # both from the cache
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--holdout-val", "-1"])
    assert exc.value.code == 2 and "--holdout-val: must be >= 0, got -1" in capsys.readouterr().err


def test_darts_bench_refuses_an_output_folder_of_other_settings(tmp_path, capsys, bench):
    """Run again on the same --out with other search settings, the bench would mix
    searches that are not the ones asked for: exit 2 naming what differs, nothing run."""
    from nas.sweep import Sweep, grid


    args = bench.parse_args(["--train-steps", "2"])
    base = bench.base_config(args, bench.EVOLUTION, "constrained")
    Sweep.new(tmp_path / "evolution", base, grid([3.0], [0]))
    other = bench.base_config(bench.parse_args(["--train-steps", "3"]), base["strategy"], "constrained")
    stored = (tmp_path / "evolution" / "sweep.json").read_text()
    with pytest.raises(SystemExit) as exc:
        bench.sweep(tmp_path / "evolution", other, grid([3.0], [0, 1]), 1)
    assert exc.value.code == 2 and "another base config (differs in evaluators)" in capsys.readouterr().err
    assert not (tmp_path / "evolution" / "t3-s0").exists()
    assert (tmp_path / "evolution" / "sweep.json").read_text() == stored
    # The same command again is accepted (its configs survive sweep.json's round trip).
    assert [v.name for v in bench.open_sweep(tmp_path / "evolution", bench.base_config(
        bench.parse_args(["--train-steps", "2"]), base["strategy"], "constrained"), grid([3.0], [0])).variants] == ["t3-s0"]
    # Run whole, the bench refuses the folder before any DARTS search starts.
    with pytest.raises(SystemExit) as exc:
        bench.main(["--train-steps", "3", "--n-sample", "20", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "differs in evaluators" in capsys.readouterr().err
    assert not (tmp_path / "darts").exists()


@pytest.mark.parametrize("argv, message", [
    (["--train-steps", "0"], "--train-steps: must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["--evolution-seeds", "-1"], "--evolution-seeds: must be >= 0, got -1"),
    (["--darts-seeds", "0"], "--darts-seeds: must be >= 1, got 0"),
    (["--n-val", "ten"], "--n-val: 'ten' is not a whole number"),
    (["--darts-width", "wide"], "--darts-width: 'wide' is not auto, search or a width"),
    (["--darts-fixed", "head.depth"], "--darts-fixed: 'head.depth' is not NAME=VALUE"),
    (["--darts-fixed", "head.depth=deep"], "--darts-fixed: 'head.depth=deep': head.depth takes a whole number"),
    (["--darts-fixed", "head.dpth=search"], "--darts-fixed: 'head.dpth=search': 'head.dpth' is not one of"),
    (["--darts-fixed", "neck.pan=1"], "--darts-fixed: 'neck.pan=1': neck.pan takes true, false or search"),
    (["--darts-fixed", "head.depth=1,head.depth=2"], "--darts-fixed: head.depth is given twice"),
    (["--darts-fixed", ","], "--darts-fixed: is empty"),
    (["--percentiles", "10,x"], "--percentiles: '10,x' is not comma-separated numbers"),
    (["--percentiles", "10,150"], "--percentiles: percentiles lie in [0, 100]"),
])
def test_darts_bench_bad_flags_exit_2_naming_the_flag(argv, message, capsys, bench):

    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert bench.parse_args([]).percentiles == [10.0, 50.0, 90.0]


def test_darts_bench_fixed_flag_changes_darts_default_neck_and_head(bench):
    """``--darts-fixed`` edits the decisions DARTS holds by default (others stay held);
    ``search`` frees one; without the flag the DARTS config has no ``fixed`` entry, so
    folders of earlier runs resume."""
    fixed = bench.parse_args(["--darts-fixed", "head.depth=1, neck.pan=False,neck.kernel=Search"]).darts_fixed
    assert fixed == {**{k: v for k, v in DEFAULT_FIXED.items() if k != "neck.kernel"},
                     "head.depth": 1, "neck.pan": False}
    assert bench.parse_args([]).darts_fixed is None


def test_darts_bench_grid_keeps_seed_0_names_and_judges_the_median(bench):
    """Several DARTS seeds: seed 0 keeps the variant name and overrides of earlier runs
    (so their folders resume), the others add ``-sN`` and their seed; the verdict is on
    DARTS's median against evolution's range, and a diverged training (NaN) is no result."""
    variants = [(v.name, v.overrides) for v in bench.darts_grid([2.89, 7.5], 2, 1)]
    assert variants == [("t2.89", {"objective.target_ms": 2.89, "budget": 1}),
                     ("t2.89-s1", {"objective.target_ms": 2.89, "budget": 1, "seed": 1}),
                     ("t7.5", {"objective.target_ms": 7.5, "budget": 1}),
                     ("t7.5-s1", {"objective.target_ms": 7.5, "budget": 1, "seed": 1})]
    evolution = [0.044, 0.030]
    assert bench.accuracy_verdict([0.028], evolution) == (0.028, 0.030, 0.044, "worse")
    assert bench.accuracy_verdict([0.028, 0.031, 0.050], evolution)[::3] == (0.031, "within")
    assert bench.accuracy_verdict([0.050, 0.060], evolution)[::3] == (0.055, "better")
    assert bench.accuracy_verdict([0.020, float("nan"), 0.050], evolution)[::3] == (0.035, "within")
    assert bench.accuracy_verdict([float("nan")], evolution)[3] == "no DARTS result"
    assert bench.accuracy_verdict([0.03], [float("nan")])[3] == "no evolution run"
    assert bench.accuracy_verdict([0.043], [float("nan"), *evolution]) == (0.043, 0.030, 0.044, "within")


def test_darts_holds_what_the_space_holds():
    """A space whose ``hold`` narrows the neck or head: DARTS holds those values by
    default (not DEFAULT_FIXED's), and a ``fixed`` that contradicts them, or a held
    backbone decision, which DARTS cannot hold, is refused naming it."""
    from search_spaces import InputError, get_space

    held = get_space("cpu_detector", num_classes=3, input_size=64, hold={"neck.channels": 96, "head.depth": 1})
    objective = Objective(mode="soft", target_ms=1.0)
    strategy = DartsStrategy(held, objective, progress=False)
    assert strategy.fixed == {**DEFAULT_FIXED, "neck.channels": 96, "head.depth": 1}
    DartsStrategy.check_options(held, objective, {})
    with pytest.raises(InputError, match="fixed.*neck.channels=64"):
        DartsStrategy.check_options(held, objective, {"fixed": {"neck.channels": 64}})
    backbone = get_space("cpu_detector", num_classes=3, input_size=64, hold={"s1.b0.kind": "ir"})
    with pytest.raises(InputError, match=r"holds \['s1.b0.kind'\]; hold only neck/head decisions"):
        DartsStrategy.check_options(backbone, objective, {})


def test_darts_bench_can_score_darts_candidates_with_a_supernet(tmp_path, capsys, bench):
    """``--darts-supernet CKPT``: DARTS's searches score their candidates with the
    supernet evaluator on that checkpoint and pick by its mAP@.5, evolution's still
    with train_proxy. The two search-time scores are then different measures, so
    without re-training (which scores both alike) the bench refuses to run (exit 2)."""
    from evaluators.base import get_evaluator
    from evaluators.data import DataConfig
    from evaluators.supernet import train_supernet
    from nas.config import config_from_dict

    space = get_space("cpu_detector")  # the bench's space, 256 px
    ckpt = tmp_path / "supernet.pt"
    train_supernet(space, DataConfig(n_train=4, n_val=2), 1, 2, 0, ckpt, progress=False)
    args = bench.parse_args(["--darts-supernet", str(ckpt), "--supernet-val", "4", "--n-train", "8"])
    darts = bench.base_config(args, {"name": "darts"}, "soft", args.darts_supernet)
    evolution = bench.base_config(args, bench.EVOLUTION, "constrained")
    assert config_from_dict(darts).make_objective().accuracy == "supernet_map50"
    assert config_from_dict(evolution).make_objective().accuracy == "map50"
    score = darts["evaluators"][-1]
    assert score["name"] == "supernet" and evolution["evaluators"][-1]["name"] == "train_proxy"
    assert score["options"]["data"] == {"n_train": 8, "n_val": 4}
    get_evaluator("supernet", **score["options"]).check(space)  # the checkpoint fits the bench's space
    # Refused before any search, with nothing written: no re-training to compare the
    # two scores by, nothing to pick among, a checkpoint of another input size or none.
    small = tmp_path / "supernet_64px.pt"
    train_supernet(get_space("cpu_detector", input_size=64), DataConfig(n_train=4, n_val=2), 1, 2, 0, small,
                   progress=False)
    for flags, message in ((["--darts-supernet", str(ckpt), "--retrain-seeds", "0"], "needs --retrain-seeds >= 1"),
                           (["--darts-supernet", str(ckpt), "--darts-candidates", "1"], "needs --darts-candidates 2")):
        flags = ["--darts-candidates", "2", *flags]  # the last one given wins
        assert bench.main([*flags, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "error: --darts-supernet: " in err and message in err and "Traceback" not in err
        assert not (tmp_path / "out").exists()
    for path, message in ((small, "'input_size': 64"), (tmp_path / "none.pt", "none.pt")):  # the sweep's check
        with pytest.raises(SystemExit) as exc:
            bench.main(["--darts-supernet", str(path), "--darts-candidates", "2", "--percentiles", "10",
                        "--n-sample", "20", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "error: sweep variant t" in err and message in err and "Traceback" not in err
        assert not (tmp_path / "out").exists()


def test_darts_bench_reads_what_a_search_picked_and_what_darts_derived(tmp_path, bench):
    """From a finished run folder: the best network with its objective's accuracy metric
    (``supernet_map50`` when the supernet scored the candidates), and DARTS's derived
    network (its first candidate) with its score, or none when it proposed one only."""
    from nas.config import config_from_dict
    from nas.engine import RunFolder, TrialRecord

    space = get_space("cpu_detector")
    derived, picked = [space.sample(random.Random(s)) for s in (1, 2)]
    cfg = config_from_dict({"space": {"name": "cpu_detector"}, "strategy": {"name": "random"}, "budget": 2,
                            "objective": {"mode": "accuracy", "accuracy": "supernet_map50"},
                            "evaluators": ["params_flops"]})
    run = RunFolder(tmp_path / "run")
    run.create(cfg)
    for i, (arch, score) in enumerate(((derived, 0.07), (picked, 0.09))):
        run.append(TrialRecord(i, arch.to_dict(), arch.id, "ok",
                               {"supernet_map50": score, "map50": 0.5, "latency_ms": 2.0}))
    assert bench.result_arch(run.path) == (picked, 0.09)
    assert bench.derived_arch(run.path)[0] is None  # no strategy state: nothing known to be derived
    run.save_strategy({"derived": [derived.to_dict(), picked.to_dict()]}, 2)
    assert bench.derived_arch(run.path) == (derived, 0.07)
    run.save_strategy({"derived": [picked.to_dict()]}, 1)
    assert bench.derived_arch(run.path)[0] is None  # one network proposed: it is the result


def test_rederive_bench_derives_finished_searches_again_under_another_rule(space, table_path, tmp_path, capsys,
                                                                          monkeypatch, bench_script):
    """bench/darts_rederive.py: a finished search's architecture parameters derived as
    searched and under the variant (here a lighter head held), both scored by the bench's
    re-training (cached in the output folder), the paired difference printed against
    evolution's range; a folder without searches, or no variant, exits 2."""
    from nas.config import config_from_dict
    from nas.engine import RunFolder

    dve, rederive = bench_script("darts_vs_evolution"), bench_script("darts_rederive")
    held = {**DEFAULT_FIXED, "head.depth": 2}  # what the search held (then the default)
    net = DartsSupernet(space, 0.5, held, KINDS)
    probe = LatencyTable.load(table_path, space)
    target = round(float(ExpectedLatency(net, probe)(net.probabilities()).detach()), 4)
    with torch.no_grad():
        net.alpha.normal_(generator=torch.Generator().manual_seed(0))
    folder = tmp_path / "out" / "darts" / "t1"
    RunFolder(folder).create(config_from_dict({
        "space": {"name": "cpu_detector", "settings": {"num_classes": 6, "input_size": 64}},
        "strategy": {"name": "darts", "options": {"width": 0.5, "kinds": list(KINDS), "table": str(table_path),
                                                   "measure_rounds": 0, "data": {"n_train": 16, "n_val": 8}}},
        "budget": 1, "objective": {"mode": "soft", "target_ms": target},
        "evaluators": [{"name": "train_proxy", "options": {"steps": 2, "batch_size": 4,
                                                           "data": {"n_train": 16, "n_val": 8}}}]}))
    # Its config does not say what the search held, its checkpoint does.
    torch.save({"net": net.state_dict(), "state": {"width": 0.5, "step": 1, "fixed": held}}, folder / "darts.pt")
    (tmp_path / "out" / "summary.json").write_text(json.dumps({"rows": [
        {"method": "evolution", "target": target, "map50": m} for m in (0.01, 0.03)]}))
    calls = []

    def retrain(args, archs, path):  # scored by head depth: 0.02 as searched, 0.01 lighter
        calls.append((args, path))
        return {}, {a.to_json(): [a.to_dict()["sample"]["head.depth"] / 100] * args.retrain_seeds for a in archs}

    monkeypatch.setattr(dve, "retrain", retrain)
    assert rederive.main([str(tmp_path / "out"), "--fixed", "head.depth=1,head.kernel=3", "--retrain-seeds", "2"]) == 0
    out = capsys.readouterr().out
    searched, variant = (line for line in out.splitlines() if line.startswith("t1 "))
    assert "head:d2_k5" in searched and "head:d1_k3" in variant
    # Derived from the trained parameters, not afresh: as searched, it is what the strategy derives.
    strategy = DartsStrategy(space, Objective(mode="soft", target_ms=target), width=0.5, kinds=KINDS,
                             table=str(table_path), measure_rounds=0, fixed=held)
    assert space.to_string(strategy.derive_measured(net, probe, target)[0]) in searched
    assert f"target {target:g} ms: as searched 0.020, variant 0.010" in out
    assert "paired variant - searched: -0.010 (higher in 0/1); evolution [0.010, 0.030]" in out
    args, path = calls[0]
    assert path == tmp_path / "out" / "retrain.json" and (args.train_steps, args.n_train, args.retrain_seeds) == (2, 16, 2)
    # Bad input: exit 2, what to give.
    assert rederive.main([str(tmp_path / "none"), "--fixed", "head.depth=1"]) == 2
    assert "has no search folder matching '*' with a darts.pt" in capsys.readouterr().err
    assert rederive.main([str(tmp_path / "out"), "--fixed", "head.depth=1", "--searches", "t2*"]) == 2
    assert rederive.main([str(tmp_path / "out")]) == 2
    assert "no variant" in capsys.readouterr().err
