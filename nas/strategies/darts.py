"""Differentiable search (FBNet / GDAS style) with latency from the lookup table.

One supernet: every searchable block position holds a :class:`MixedOp` over candidate
blocks (every registered block kind with every kernel/expansion/SE/activation choice)
plus ``skip`` for positions past a stage's minimum depth, so depth is searched too.
Architecture parameters ``alpha`` (one row per position) are separate from the
weights. Each step samples one candidate per position with hard Gumbel-softmax (GDAS):
only the sampled block runs, and the straight-through weight carries the gradient to
``alpha``, so a step costs one network, not the sum of all candidates.

Loss of an architecture step (on a held-out half of the training split; weight steps
use the other half, first-order alternation)::

    det_loss + lam * log(E[latency] / target) ** 2

``E[latency]`` is exact under the table's calibrated predictor, which is linear in the
per-kind sums of op latencies and the op count: the expectation over the independent
per-position softmax distributions is that same linear function of the expected sums.
``lam`` is adjusted during the search (raised while the expected latency is off target),
so the user sets a target in milliseconds, not a ``lam``.

Collapse guard: weights are trained alone for the first ``warmup_fraction`` of the
steps (DARTS collapses onto skip while the candidate weights are still untrained), and
derivation caps each stage's skips so every stage keeps its minimum depth.

Derivation (:meth:`DartsStrategy.derive_choices`) picks, among candidates at least a
tenth as likely as their position's best, the network of highest value at the target's
table latency: value = sum of log-probabilities + ``params_weight`` * log(parameters).
Why the parameter term: after a few hundred steps alpha is nearly flat (the best of 49
candidates at p = 0.05-0.14), so a pure probability/latency derivation picked cheap,
parameter-poor blocks (138k parameters at 4.38 ms where evolution's best had 868k), and
short training rewards parameters (session 3's benchmark: DARTS mAP@.5 below evolution's
range at all three targets). Re-deriving session 3's three trained supernets with
``params_weight`` 0 / 2 and scoring by the benchmark's ``train_proxy``: mAP@.5 0.026 /
0.051 at 2.71 ms, 0.040 / 0.045 at 4.38 ms, 0.071 / 0.072 at 7.54 ms (1: 0.048, 0.026,
0.063; one seed each, so differences of a point are noise), hence the default 2.

The table is a few percent off on single networks (3.5% on average at 1 thread, more at
2; BENCHMARKS.md), so the derivation closes the loop on the CPU
(``measure_rounds``): the derived network is exported and timed under onnxruntime, and
if it misses the target by more than 5% the derivation is repeated against a table
target corrected by the measured/table ratio of that network; the closest is kept.

Widths and the neck/head are not searched here (FBNet's fixed macro-architecture): they
come from the options ``width`` and ``fixed``. ``width: auto`` takes the widest width
whose cheapest network (table) is at most 2/3 of the target (:func:`choose_width`), so
one config serves targets across the range.

As a strategy: the first ``ask()`` runs the whole search (checkpointed to
``checkpoint_path``, so an interrupted search resumes mid-training) and proposes the
derived architecture; later asks return None. The engine then evaluates it with the
configured evaluators like any other candidate.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import Architecture, OpSpec, SearchSpace
from search_spaces.cpu_detector import STAGES, CpuDetector
from search_spaces.errors import InputError
from search_spaces.files import atomic_write
from search_spaces.ops import BLOCK_PARAMS, make_op

from ..objectives import Objective
from .base import Result, Strategy, register_strategy

SKIP = "skip"
PARAM_CHOICES = {"kernel": (3, 5), "expansion": (3, 6), "se": (False, True), "act": ("relu", "hswish")}
DEFAULT_FIXED = {"neck.channels": 64, "neck.depth": 1, "neck.kernel": 3, "neck.pan": True, "head.depth": 2, "head.kernel": 3}


def block_candidates(kinds) -> list[dict]:
    """Every (kind, params) combination of the given block kinds."""
    out = []
    for kind in kinds:
        combos = [{"kind": kind}]
        for param in sorted(BLOCK_PARAMS[kind]):
            combos = [{**c, param: v} for c in combos for v in PARAM_CHOICES[param]]
        out += combos
    return out


class MixedOp(nn.Module):
    """Candidates for one position. ``weights`` dense: the weighted sum of all candidates
    (DARTS); ``hard_index`` set: only that candidate, scaled by ``hard_weight`` (GDAS)."""

    def __init__(self, candidates: list[nn.Module]):
        super().__init__()
        self.candidates = nn.ModuleList(candidates)
        self.weights: torch.Tensor | None = None
        self.hard_index: int | None = None
        self.hard_weight: torch.Tensor | None = None

    def forward(self, x):
        if self.hard_index is not None:
            return self.candidates[self.hard_index](x) * self.hard_weight
        return sum(w * op(x) for w, op in zip(self.weights, self.candidates))


class DartsSupernet(nn.Module):
    """A :class:`CpuDetector` whose stage blocks are :class:`MixedOp` s."""

    def __init__(self, space: SearchSpace, width: float, fixed: Mapping[str, Any], kinds: tuple | None = None):
        super().__init__()
        self.space = space
        self.candidates = block_candidates(kinds or space.block_kinds)
        template = space.canonicalize(self._arch_from_choices(None, width, fixed))
        specs = {s.role: s for s in space.ops(template)}
        modules = {role: make_op(spec) for role, spec in specs.items()}
        self.positions: list[tuple[str, int]] = []
        self.position_specs: list[list[OpSpec | None]] = []
        for st in STAGES:
            for b in range(max(st.depths)):
                role = f"{st.name}.b{b}"
                base = specs[role]
                row, mods = [], []
                for cand in self.candidates:
                    params = {k: v for k, v in cand.items() if k != "kind"}
                    spec = OpSpec.make(cand["kind"], base.input_shapes, role, cout=base.param_dict["cout"],
                                       stride=base.param_dict["stride"], **params)
                    row.append(spec)
                    mods.append(make_op(spec))
                if b >= min(st.depths):  # past the minimum depth a block may be skipped
                    row.append(None)
                    mods.append(nn.Identity())
                modules[role] = MixedOp(mods)
                self.positions.append((st.name, b))
                self.position_specs.append(row)
        self.net = CpuDetector(modules, template, space.num_classes)
        self.fixed_specs = [s for r, s in specs.items() if not any(r == f"{n}.b{b}" for n, b in self.positions)]
        self.width, self.fixed = width, dict(fixed)
        self.alpha = nn.Parameter(torch.zeros(len(self.positions), len(self.candidates) + 1))
        self.register_buffer("valid", torch.tensor([[1.0] * len(self.candidates) + [1.0 if row[-1] is None else 0.0]
                                                    for row in self.position_specs]))

    def mixed_ops(self) -> list[MixedOp]:
        return [m for m in self.net.modules() if isinstance(m, MixedOp)]

    def masked_logits(self, tau: float = 1.0) -> torch.Tensor:
        return (self.alpha / tau).masked_fill(self.valid == 0, float("-inf"))

    def probabilities(self) -> torch.Tensor:
        return F.softmax(self.masked_logits(), dim=-1)

    def set_hard(self, generator: torch.Generator, tau: float) -> None:
        """Sample one candidate per position (Gumbel), straight-through weights."""
        logits = self.masked_logits(tau)
        gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator).clamp(1e-9, 1 - 1e-9)))
        soft = F.softmax(logits + gumbel, dim=-1)
        index = soft.argmax(-1)
        for i, op in enumerate(self.mixed_ops()):
            k = int(index[i])
            op.hard_index, op.weights = k, None
            op.hard_weight = 1.0 - soft[i, k].detach() + soft[i, k]

    def set_dense(self, weights: torch.Tensor) -> None:
        for i, op in enumerate(self.mixed_ops()):
            op.hard_index, op.weights = None, weights[i, : len(op.candidates)]

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def _arch_from_choices(self, choices: list[int] | None, width: float, fixed: Mapping[str, Any]) -> Architecture:
        space = self.space
        sample = {k: v[0] for k, v in space.decisions().items()}
        sample.update(fixed)
        i = 0
        for st in STAGES:
            sample[f"{st.name}.width"] = width
            blocks = []
            for b in range(max(st.depths)):
                if choices is None:
                    blocks.append(self.candidates[0] if hasattr(self, "candidates") else {"kind": space.block_kinds[0]})
                elif choices[i] < len(self.candidates):
                    blocks.append(self.candidates[choices[i]])
                i += 1 if choices is not None else 0
            sample[f"{st.name}.depth"] = len(blocks) if choices is not None else max(st.depths)
            for b, cand in enumerate(blocks):
                for k, v in cand.items():
                    sample[f"{st.name}.b{b}.{k}"] = v
        return space.canonicalize(Architecture(space.name, sample))

    def derive(self, choices: list[int]) -> Architecture:
        return self._arch_from_choices(choices, self.width, self.fixed)

    def candidate_params(self) -> tuple[int, list[list[int]]]:
        """(parameters outside the searched positions, parameters of each position's
        candidates). A derived network's parameter count is their sum over its choices:
        within a stage, blocks after the first keep the width, so skipping one changes
        no other block."""
        rows = [[sum(p.numel() for p in cand.parameters()) for cand in op.candidates] for op in self.mixed_ops()]
        searched = sum(sum(row) for row in rows)
        return sum(p.numel() for p in self.net.parameters()) - searched, rows


class ExpectedLatency:
    """E[latency] under the table's linear predictor, differentiable in the probabilities."""

    def __init__(self, supernet: DartsSupernet, table):
        self.table = table
        kinds = table.feature_kinds
        coef = torch.tensor(table.coef, dtype=torch.float32)
        self.kind_coef = coef[: len(kinds)]
        self.n_coef, self.intercept = float(coef[-2]), float(coef[-1])
        index = {k: i for i, k in enumerate(kinds)}
        fixed = np.zeros(len(kinds))
        for spec in supernet.fixed_specs:
            fixed[index[spec.kind]] += table.op_ms(spec)
        self.fixed_kind_ms = torch.tensor(fixed, dtype=torch.float32)
        self.fixed_n = len(supernet.fixed_specs)
        # cost[p, c] = coef of c's kind * its table ms; ops[p, c] = 1 unless skip.
        n_pos, n_cand = supernet.alpha.shape
        cost, ops = torch.zeros(n_pos, n_cand), torch.zeros(n_pos, n_cand)
        for p, row in enumerate(supernet.position_specs):
            for c, spec in enumerate(row):
                if spec is not None:
                    cost[p, c] = self.kind_coef[index[spec.kind]] * table.op_ms(spec)
                    ops[p, c] = 1.0
        self.cost, self.ops = cost, ops
        self.choice_ms = cost + self.n_coef * ops   # [position, candidate] -> its ms in the predictor

    def fixed_ms(self) -> float:
        return float(self.kind_coef @ self.fixed_kind_ms) + self.n_coef * self.fixed_n + self.intercept

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        return self.fixed_ms() + (probs * self.choice_ms).sum()

    def range_ms(self, valid: torch.Tensor) -> tuple[float, float]:
        """Table latency of the cheapest and of the dearest choice at every position."""
        lo = self.choice_ms.masked_fill(valid == 0, float("inf")).min(-1).values.sum()
        hi = self.choice_ms.masked_fill(valid == 0, float("-inf")).max(-1).values.sum()
        return self.fixed_ms() + float(lo), self.fixed_ms() + float(hi)


# The target must be at least this multiple of a width's cheapest network, so that the
# search still has choices to make at that width instead of being pinned to the cheapest
# op everywhere.
WIDTH_HEADROOM = 1.5


def choose_width(space: SearchSpace, table, target_ms: float, fixed: Mapping[str, Any], kinds) -> tuple[float, dict]:
    """The widest width whose cheapest network (table latency) is at most
    ``target_ms / WIDTH_HEADROOM`` (the narrowest when none is), and every width's
    range (for the report).

    Why the widest: at an equal latency a wider, shallower network has more parameters,
    and short training rewards that (session 2's benchmark: DARTS at width 0.5 reached
    mAP@.5 0.029 where evolution's winners, mostly at widths 0.75-1.0, reached 0.06-0.09).
    """
    ranges = {}
    for width in space.decisions()[f"{STAGES[0].name}.width"]:
        net = DartsSupernet(space, width, fixed, kinds)
        ranges[width] = ExpectedLatency(net, table).range_ms(net.valid)
    fitting = [w for w, (lo, _) in ranges.items() if lo * WIDTH_HEADROOM <= target_ms]
    best = max(fitting) if fitting else min(ranges)
    return best, {str(w): [round(lo, 3), round(hi, 3)] for w, (lo, hi) in ranges.items()}


@register_strategy("darts")
class DartsStrategy(Strategy):
    """Gradient-based search on a weight-sharing supernet, latency-targeted.

    Options: ``steps`` (total optimisation steps), ``batch_size``, ``w_lr``/``a_lr``
    (weights/AdamW, alpha/Adam), ``tau`` start/end (Gumbel temperature, annealed
    exponentially), ``warmup_fraction`` (weights only), ``lam`` (initial latency weight),
    ``width`` and ``fixed`` (the macro-architecture), ``data`` (DataConfig fields),
    ``table`` (latency table path; default the committed one at ``threads``),
    ``checkpoint_path`` (set by the engine to the run folder), ``threads``, ``kinds``
    (block kinds searched; default all of the space's), ``measure_rounds`` (derivations
    corrected by onnxruntime measurement; 0 trusts the table alone), ``params_weight`` (weight of
    log parameters against log-probabilities in the derivation; 0: probabilities alone).
    """

    gradient_based = True  # not part of the sampler conformance loop: it trains a supernet

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0, *, steps: int = 300,
                 batch_size: int = 8, w_lr: float = 4e-3, a_lr: float = 3e-2, tau: tuple = (5.0, 0.5),
                 warmup_fraction: float = 0.3, lam: float = 1.0, width: float | str = 0.75, fixed: Mapping | None = None,
                 data: Mapping | None = None, table: str | None = None, threads: int = 1, kinds: tuple | None = None,
                 measure_rounds: int = 4, params_weight: float = 2.0, checkpoint_path: str | None = None,
                 checkpoint_every: int = 25, progress: bool = True):
        super().__init__(space, objective, seed)
        if objective.target_ms is None:
            raise InputError("strategy 'darts' needs a latency target: objective.target_ms (mode constrained or soft)")
        self.options = dict(steps=steps, batch_size=batch_size, w_lr=w_lr, a_lr=a_lr, tau=tuple(tau),
                            warmup_fraction=warmup_fraction, lam=lam, width=width, threads=threads,
                            measure_rounds=measure_rounds, params_weight=float(params_weight))
        widths = space.decisions()[f"{STAGES[0].name}.width"]
        if width != "auto" and width not in widths:
            raise InputError(f"darts option 'width': {width!r} is not one of the space's widths {list(widths)} or 'auto'")
        self.fixed = {**DEFAULT_FIXED, **(fixed or {})}
        self.kinds = tuple(kinds or space.block_kinds)
        unknown = [k for k in self.kinds if k not in space.block_kinds]
        if unknown:
            raise InputError(f"darts option 'kinds': {unknown} not in the space's block kinds {list(space.block_kinds)}")
        self.data_options = dict(data or {})
        self.table_path, self.checkpoint_path = table, checkpoint_path
        self.checkpoint_every, self.progress = checkpoint_every, progress
        self.derived: list[dict] = []
        self.asked = 0
        self.report: dict[str, Any] = {}

    # ----- the strategy interface ---------------------------------------------------------
    def ask(self) -> Architecture | None:
        if not self.derived:
            arch, report = self.search()
            self.derived, self.report = [arch.to_dict()], report
        if self.asked >= len(self.derived):
            return None
        self.asked += 1
        return Architecture.from_dict(self.derived[self.asked - 1])

    def tell(self, arch: Architecture, result: Result) -> None:
        pass  # one-shot: the derived architecture is the answer; its metrics go to the log

    def state_dict(self) -> dict[str, Any]:
        return {"derived": self.derived, "asked": self.asked, "report": self.report}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.derived, self.asked = list(state["derived"]), int(state["asked"])
        self.report = dict(state.get("report", {}))

    # ----- the search ---------------------------------------------------------------------
    def _table(self):
        from latency_tables.predictor import LatencyTable

        if self.table_path:
            return LatencyTable.load(self.table_path, self.space, self.options["threads"])
        return LatencyTable.default(self.space, self.options["threads"])

    def search(self) -> tuple[Architecture, dict]:
        """Train the supernet (resuming from the checkpoint if any); derive; report."""
        from evaluators.data import DataConfig
        from evaluators.trainer import _batch, TrainConfig, supervised_loss
        from latency_tables.progress import progress_bar

        o = self.options
        torch.manual_seed(self.seed)
        table = self._table()
        target = float(self.objective.target_ms)
        width, ranges = o["width"], {}
        ck = None
        if self.checkpoint_path and Path(self.checkpoint_path).exists():
            ck = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if width == "auto":
            width, ranges = choose_width(self.space, table, target, self.fixed, self.kinds)
            # A resumed search keeps the width it started with (the rule may have changed since).
            width = ck["state"].get("width", width) if ck else width
        elif ck and ck["state"].get("width", width) != width:
            raise InputError(f"{self.checkpoint_path} was trained at width {ck['state']['width']}, the config asks for "
                             f"{width}; set darts option width to {ck['state']['width']} or start a new run")
        net = DartsSupernet(self.space, width, self.fixed, self.kinds)
        expected = ExpectedLatency(net, table)
        train_data, _ = DataConfig(**self.data_options).load(self.space.settings()["input_size"])
        half = len(train_data) // 2
        w_idx, a_idx = np.arange(half), np.arange(half, len(train_data))
        w_opt = torch.optim.AdamW(net.weight_parameters(), lr=o["w_lr"], weight_decay=0.05)
        a_opt = torch.optim.Adam([net.alpha], lr=o["a_lr"], betas=(0.5, 0.999))
        gen = torch.Generator().manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        state = {"step": 0, "lam": o["lam"], "history": [], "width": width}
        if ck:
            try:
                net.load_state_dict(ck["net"])
            except RuntimeError:  # a checkpoint from before widths were recorded, or other options
                raise InputError(f"{self.checkpoint_path} does not fit the supernet at width {width} with these "
                                 f"options (kinds, fixed); set the darts options it was trained with, or start a new run") from None
            w_opt.load_state_dict(ck["w_opt"])
            a_opt.load_state_dict(ck["a_opt"])
            gen.set_state(ck["gen"])
            rng.bit_generator.state = ck["rng"]
            state = {**ck["state"], "width": width}
        cfg = TrainConfig(batch_size=o["batch_size"], seed=self.seed)
        warmup = int(o["warmup_fraction"] * o["steps"])
        tau0, tau1 = o["tau"]
        t0 = time.monotonic()
        bar = progress_bar(total=o["steps"], initial=state["step"], desc="darts", disable=not self.progress)
        while state["step"] < o["steps"]:
            step = state["step"]
            tau = tau0 * (tau1 / tau0) ** (step / max(1, o["steps"] - 1))
            net.train()
            net.set_hard(gen, tau)  # weight step on the first half
            images, targets = _batch(train_data, rng.choice(w_idx, o["batch_size"], replace=False), cfg, rng)
            loss = supervised_loss(net.net, images, targets)["loss"]
            if not torch.isfinite(loss):
                raise RuntimeError(f"darts: loss became {loss.item()} at step {step}")
            w_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 10.0)
            w_opt.step()
            lat = float(expected(net.probabilities().detach()))
            if step >= warmup:  # architecture step on the held-out half
                net.set_hard(gen, tau)
                images, targets = _batch(train_data, rng.choice(a_idx, o["batch_size"], replace=False), cfg, rng)
                e_lat = expected(net.probabilities())
                a_loss = supervised_loss(net.net, images, targets)["loss"] + state["lam"] * torch.log(e_lat / target) ** 2
                a_opt.zero_grad(set_to_none=True)
                w_opt.zero_grad(set_to_none=True)
                a_loss.backward()
                a_opt.step()
                lat = float(e_lat)
                # Raise lam while the expectation is off target, relax it once it is close.
                state["lam"] = state["lam"] * (1.05 if abs(lat / target - 1) > 0.05 else 0.98)
            state["step"] = step + 1
            state["history"].append([round(loss.item(), 4), round(lat, 4)])
            bar.update(1)
            bar.set_postfix_str(f"loss {loss.item():.3f} E[lat] {lat:.2f}/{target:.2f} ms")
            if self.checkpoint_path and (state["step"] % self.checkpoint_every == 0 or state["step"] == o["steps"]):
                self._save(net, w_opt, a_opt, gen, rng, state)
        bar.close()
        arch, measured = self.derive_measured(net, table, target)
        predicted = table.predict(arch)
        report = {"target_ms": target, "width": width, "width_ranges_ms": ranges, "derived_table_ms": predicted,
                  "expected_ms": float(expected(net.probabilities())), "off_target": predicted / target - 1,
                  "measurements": measured, "lam": state["lam"], "steps": state["step"],
                  "seconds": time.monotonic() - t0}
        if measured:
            best = min(measured, key=lambda m: abs(m["measured_ms"] / target - 1))
            report.update(measured_ms=best["measured_ms"], measured_off_target=best["measured_ms"] / target - 1)
        return arch, report

    def derive_measured(self, net: DartsSupernet, table, target: float) -> tuple[Architecture, list[dict]]:
        """Derive against the table; then, up to ``measure_rounds`` times, time the derived
        network under onnxruntime and, while it misses the target by more than 5%,
        re-derive against the target divided by the measured/table ratio (geometric mean
        over the networks timed so far, which damps timing noise and the per-network
        error of the table). Returns the network measured closest to the target."""
        from latency_tables.profiler import measure_model

        table_target, tried = target, []
        arch = net.derive(self.derive_choices(net, table, table_target))
        for _ in range(self.options["measure_rounds"]):
            ms = measure_model(self.space, arch, self.options["threads"]).ms
            tried.append({"arch": arch.to_dict(), "table_target_ms": table_target, "table_ms": table.predict(arch),
                          "measured_ms": ms})
            if abs(ms / target - 1) <= 0.05:
                break
            ratio = math.exp(np.mean([math.log(t["measured_ms"] / t["table_ms"]) for t in tried]))
            table_target = target / ratio
            arch = net.derive(self.derive_choices(net, table, table_target))
            if any(t["arch"] == arch.to_dict() for t in tried):
                break
        if tried:
            arch = Architecture.from_dict(min(tried, key=lambda t: abs(t["measured_ms"] / target - 1))["arch"])
        return arch, [{k: v for k, v in t.items() if k != "arch"} for t in tried]

    def derive_choices(self, net: DartsSupernet, table, target: float) -> list[int]:
        """The choices that maximise the value (sum of log-probabilities + ``params_weight``
        * log parameters) at the target's table latency.

        Only candidates at least a tenth as likely as their position's best are allowed.
        A multiple-choice knapsack, solved by its Lagrangian: per position
        ``argmax(value - mu * ms)``, log parameters linearised around the argmax network's
        count, ``mu >= 0`` bisected until the table latency meets the target. Then greedy
        single-position moves while they bring the latency closer to the target (until
        within 3%): one that also raises the value first, else the one that loses the
        least value per millisecond."""
        probs = net.probabilities().detach()
        allowed = probs >= 0.1 * probs.max(-1, keepdim=True).values
        log_probs = torch.log(probs.clamp_min(1e-12))
        fixed_params, rows = net.candidate_params()
        cand_params = torch.tensor([row + [0] * (probs.shape[1] - len(row)) for row in rows], dtype=torch.float64)
        ms = ExpectedLatency(net, table).choice_ms.double()
        weight = self.options["params_weight"]

        def total_params(ch):
            return fixed_params + float(cand_params[range(len(ch)), ch].sum())

        def value(ch):
            return float(log_probs[range(len(ch)), ch].sum()) + weight * math.log(total_params(ch))

        def latency(ch):
            return table.predict(net.derive(ch))

        def solve(mu, params_ref):
            score = log_probs.double() + weight * cand_params / params_ref - mu * ms
            return [int(i) for i in score.masked_fill(~allowed, float("-inf")).argmax(-1)]

        ref = total_params([int(i) for i in probs.argmax(-1)])
        choices = solve(0.0, ref)
        if latency(choices) > target:
            lo, hi = 0.0, 1.0
            while latency(solve(hi, ref)) > target and hi < 1e6:
                lo, hi = hi, hi * 4
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if latency(solve(mid, ref)) > target else (lo, mid)
            choices = min((solve(lo, ref), solve(hi, ref)), key=lambda ch: abs(latency(ch) / target - 1))

        current_ms, current = latency(choices), value(choices)
        for _ in range(4 * len(choices)):
            gap = abs(current_ms / target - 1)
            if gap < 0.03:
                break
            gains, trades = [], []
            for p in range(len(choices)):
                for c in allowed[p].nonzero().flatten().tolist():
                    if c == choices[p]:
                        continue
                    trial = choices[:p] + [c] + choices[p + 1:]
                    trial_ms = latency(trial)
                    if abs(trial_ms / target - 1) >= gap:
                        continue
                    dv = value(trial) - current
                    (gains if dv > 0 else trades).append((dv if dv > 0 else dv / abs(trial_ms - current_ms), trial_ms, trial))
            if not gains and not trades:
                break
            _, current_ms, choices = max(gains or trades, key=lambda m: m[0])
            current = value(choices)
        return choices

    def _save(self, net, w_opt, a_opt, gen, rng, state) -> None:
        record = {"net": net.state_dict(), "w_opt": w_opt.state_dict(), "a_opt": a_opt.state_dict(),
                  "gen": gen.get_state(), "rng": rng.bit_generator.state, "state": state}
        atomic_write(self.checkpoint_path, lambda f: torch.save(record, f))
