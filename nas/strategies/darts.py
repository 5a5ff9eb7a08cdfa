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

Derivation (:meth:`DartsStrategy.derive_choices`): among the candidates ``allow_ratio``
lets it consider (default 0: all), the network of highest value at the target's table
latency, value = sum of log-probabilities + ``params_weight`` * log(parameters), as a
multiple-choice knapsack per allowed combination of stage widths. Then
(``measure_rounds``, :meth:`DartsStrategy.derive_measured`) the derived network is timed
under onnxruntime and, while it misses the target by more than 5%, derived again against
a table target corrected by the measured/table ratio (the table counting as one more
reading, at ratio 1); the closest is kept.

Widths, neck and head (:class:`DartsSupernet`): besides the blocks, the search can cover
one width per stage and the neck/head decisions (channels, depth, kernel, PAN, head depth
and kernel), FBNetV2 style: the network is built at the largest option of each, a
sampled width or channel count masks the channels beyond it, a sampled depth skips the
ops past it. The expectation above covers these choices too; the derivation takes the
neck and head at their most probable options.

The defaults, each in one line; the measurements behind them are in BENCHMARKS.md
("Why DARTS's defaults are what they are"):

- ``params_weight: 2``: after a few hundred steps alpha is nearly flat, and without the
  parameter term the derivation picked cheap, parameter-poor blocks that short training
  punishes.
- ``allow_ratio: 0``: a cut at a tenth of the best counted the latency twice (the
  distribution is already the latency term's preference) and left only the cheapest
  blocks at a low target.
- ``fixed`` (the neck and head held): searched, they collapse onto their cheapest
  options. Held: head depth 3, kernel 5; neck 96 channels, kernel 5 where the target
  affords it (:func:`choose_fixed`), else 64 channels, kernel 3; depth 1, PAN.
- ``width: auto`` (:func:`choose_width`): one width, the widest whose cheapest network
  is at most 1/1.4 of the target; searched widths collapse the way blocks do.
- ``factorized: false`` (one architecture parameter per choice value instead of per
  candidate, :func:`candidate_features`): it did not beat the default beyond the seed
  spread.
- ``candidates: 1`` (``K`` also proposes K-1 networks sampled from the distribution and
  keeps the best): each costs a ``train_proxy``, and the pick is on a noisy score.

As a strategy: the first ``ask()`` runs the whole search (checkpointed to
``checkpoint_path``, so an interrupted search resumes mid-training) and proposes the
derived architecture, then the ``candidates - 1`` networks sampled from the trained
distribution under the target (:meth:`DartsStrategy.sample_candidates`); later asks
return None. The engine evaluates each with the configured evaluators like any other
candidate and keeps the best.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latency_tables.table import MissingOpError
from search_spaces import Architecture, OpSpec, SearchSpace
from search_spaces.cpu_detector import FEATURE_STAGES, STAGES, CpuDetector
from search_spaces.errors import InputError, is_number
from search_spaces.files import atomic_write
from search_spaces.ops import BLOCK_PARAMS, ShuffleUnit, channel_shuffle, make_divisible, make_op

from ..objectives import Objective
from .base import Result, Strategy, check_count, check_flags, check_number, option_default, register_strategy

PARAM_CHOICES = {"kernel": (3, 5), "expansion": (3, 6), "se": (False, True), "act": ("relu", "hswish")}
# The neck and head decisions (the "macro" choices), each one value for the whole network.
MACRO = ("neck.channels", "neck.depth", "neck.kernel", "neck.pan", "head.depth", "head.kernel")
# The neck and head DARTS holds by default (the ``fixed`` option; see the module docstring).
DEFAULT_FIXED = {"neck.channels": 64, "neck.depth": 1, "neck.kernel": 3, "neck.pan": True, "head.depth": 3, "head.kernel": 5}


# Richer necks DARTS holds by default when the target affords them (:func:`choose_fixed`),
# richest first. Why: re-deriving the same trained searches with this neck (session 23,
# bench/darts_rederive.py) scored higher in 4 of 4 at each of three targets; at the lowest
# target (2.04 ms) it took the whole budget, leaving the cheapest block everywhere.
RICHER_NECKS = ({"neck.channels": 96, "neck.kernel": 5},)


def effective_fixed(space: SearchSpace, fixed: Mapping | None) -> dict:
    """The neck/head decisions DARTS holds: ``fixed`` as given, or by default
    :data:`DEFAULT_FIXED` with the space's own held values (its ``hold``) over it."""
    if fixed is not None:
        return dict(fixed)
    return {**DEFAULT_FIXED, **_space_held(space)}


def _space_held(space: SearchSpace) -> dict:
    """The neck/head decisions the space itself holds (its ``hold``), at their value."""
    decisions = space.decisions()
    return {m: decisions[m][0] for m in MACRO if len(decisions[m]) == 1}


def block_candidates(kinds) -> list[dict]:
    """Every (kind, params) combination of the given block kinds."""
    out = []
    for kind in kinds:
        combos = [{"kind": kind}]
        for param in sorted(BLOCK_PARAMS[kind]):
            combos = [{**c, param: v} for c in combos for v in PARAM_CHOICES[param]]
        out += combos
    return out


def candidate_features(candidates: list[dict]) -> torch.Tensor:
    """[candidate + skip, feature] 0/1: which choice values (``kind=ir``, ``kernel=5``,
    ...) each candidate has; skip is a feature of its own. Factorized logits sum a
    position's parameters over a candidate's features, so every sampled candidate informs
    the logits of all candidates sharing a value with it. Why: with one logit per
    candidate, each of a position's 49 logits gets a few straight-through updates in a
    300-step search and the trained distribution is the latency prior (session 10).
    """
    values = [{f"{k}={v}" for k, v in c.items()} for c in candidates] + [{"skip"}]
    names = sorted(set().union(*values))
    return torch.tensor([[float(n in have) for n in names] for have in values])


def as_widths(width: float | Sequence[float]) -> tuple[float, ...]:
    """One width, or the sorted widths to search among."""
    return tuple(sorted(float(w) for w in width)) if isinstance(width, (list, tuple)) else (float(width),)


def macro_dependencies(role: str) -> tuple[str, ...]:
    """The macro decisions (and, for a lateral, its stage's width) that a neck or head
    op of the default space depends on. Checked by the tests: the expected latency of
    one-hot choices equals the table's prediction of that network."""
    if role.startswith("neck.lateral"):
        return (f"{FEATURE_STAGES[int(role[len('neck.lateral'):])]}.width", "neck.channels")
    if role.startswith("neck.bu"):
        return ("neck.channels", "neck.pan", "neck.kernel")
    if role.startswith("neck.out"):
        return ("neck.channels", "neck.depth", "neck.kernel")
    if role.startswith("head") and ".b" in role:
        return ("neck.channels", "head.depth", "head.kernel")
    if role.startswith(("neck.td", "head")):
        return ("neck.channels",)
    return ()  # the stem and the decode


class TakeFirst(nn.Module):
    """A skipped two-input merge (PAN off): the first input unchanged."""

    def forward(self, x, *_):
        return x


class MixedOp(nn.Module):
    """Candidates for one position. ``weights`` dense: the weighted sum of all candidates
    (DARTS); ``hard_index`` set: only that candidate, scaled by ``hard_weight`` (GDAS).
    ``channel_mask`` (set by the supernet when widths or neck channels are searched)
    multiplies the output: a (soft or straight-through) mask over its channels."""

    def __init__(self, candidates: list[nn.Module]):
        super().__init__()
        self.candidates = nn.ModuleList(candidates)
        self.weights: torch.Tensor | None = None
        self.hard_index: int | None = None
        self.hard_weight: torch.Tensor | None = None
        self.channel_mask: torch.Tensor | None = None
        self.live: int | None = None  # the sampled width's channels (hard mode, widths searched)

    def forward(self, *x):
        if self.hard_index is not None:
            op = self.candidates[self.hard_index]
            if self.live is not None and isinstance(op, ShuffleUnit) and op.split and self.live < x[0].shape[1]:
                out = _narrow_split_shuffle(op, x[0], self.live) * self.hard_weight
            else:
                out = op(*x) * self.hard_weight
        else:
            out = sum(w * op(*x) for w, op in zip(self.weights, self.candidates))
        return out if self.channel_mask is None else out * self.channel_mask


def _narrow_split_shuffle(unit: ShuffleUnit, x: torch.Tensor, live: int) -> torch.Tensor:
    """A shape-keeping shuffle unit built wide, run as the unit of ``live`` channels: split
    the live channels in halves, the branch on the second half (zero-padded to the wide
    branch's input), shuffle the live channels, zeros beyond. The wide unit as is would
    split at the wide half: its live output would hold only the first quarter of a
    half-width input, and the branch would see zeros."""
    half = live // 2
    branch_in = F.pad(x[:, half:live], (0, 0, 0, 0, 0, x.shape[1] // 2 - half))
    out = channel_shuffle(torch.cat([x[:, :half], unit.branch(branch_in)[:, :half]], 1), 2)
    return F.pad(out, (0, 0, 0, 0, 0, x.shape[1] - live))


class Tabulated(NamedTuple):
    """A per-op quantity (table ms, parameters) of every op the supernet can produce, laid
    out by the choices it depends on."""
    const: float                      # ops that depend on no choice
    positions: list[torch.Tensor]     # per block position [candidate, input width, output width]
    macro: torch.Tensor               # neck and head ops: one axis per choice axis (see DartsSupernet.axes)


class _MacroOp(NamedTuple):
    """How a neck/head op's candidate follows the macro choices: ``gate`` (an axis index,
    or None) decides whether the op is present (depth > ``position`` or PAN on);
    ``kernel`` (an axis index, or None) picks among its kernel candidates; the last
    candidate is the skip when the op can be absent."""
    gate: int | None
    position: int
    kernel: int | None


class DartsSupernet(nn.Module):
    """A :class:`CpuDetector` whose stage blocks are :class:`MixedOp` s over candidate
    blocks, and whose stage widths and neck/head decisions are searched too.

    Choice axes (``axes``): one width per stage, then each macro decision (``MACRO``);
    an axis with one option is held (``width`` a single value, or the decision in
    ``fixed``). The network is built at the largest option of each axis. Widths and neck
    channels are searched by channel masking (FBNetV2): a stage's or the neck's sampled
    width keeps its leading channels (the mask is applied after every block, lateral,
    merge and tower op, so the next op sees zeros beyond it). A shape-keeping shuffle unit
    splits the sampled width's channels, as the narrow unit does. Approximate where a
    narrow op is not a slice of the wide one: a block's hidden channels stay those of the
    widest version; a ghost module's output is [primary, cheap] at the wide width, so a
    narrow stage keeps mostly primary channels; and ``s4.b0`` (stride 1) is built 64->96
    without the residual or split it has when both widths give 48 channels (s3 at 0.75,
    s4 at 0.5). Depths are searched by
    skippable ops and kernels by one module per kernel, chosen together for all levels.
    The latency and parameter counts the search uses are exact, from the table and the
    ops each choice really produces.
    """

    def __init__(self, space: SearchSpace, width: float | Sequence[float], fixed: Mapping[str, Any],
                 kinds: tuple | None = None, factorized: bool = False):
        super().__init__()
        self.space = space
        self._built: list[tuple[nn.Module, OpSpec]] = []  # every stateful op in the net, with its spec (inherit)
        self.widths = as_widths(width)
        self.candidates = block_candidates(kinds or space.block_kinds)
        decisions = space.decisions()
        self.axes: list[tuple[str, tuple]] = [(f"{st.name}.width", self.widths) for st in STAGES]
        self.axes += [(name, (fixed[name],) if name in fixed else tuple(decisions[name])) for name in MACRO]
        self.axis_index = {name: a for a, (name, _) in enumerate(self.axes)}
        template = self._arch_from_choices(None, self._largest())
        specs = {s.role: s for s in space.ops(template)}
        modules = {role: self._make(spec) for role, spec in specs.items()}
        self.positions: list[tuple[str, int]] = []
        self.position_stage: list[int] = []          # the stage whose width is the block's output width
        self.position_input: list[int | None] = []   # the stage whose width is its input width (None: fixed)
        self._base_specs: list[OpSpec] = []
        for s, st in enumerate(STAGES):
            for b in range(max(st.depths)):
                role = f"{st.name}.b{b}"
                self._base_specs.append(specs[role])
                mods = [self._make(self._spec(specs[role], cand, specs[role].input_shapes[0][1], specs[role].param_dict["cout"]))
                        for cand in self.candidates]
                if b >= min(st.depths):  # past the minimum depth a block may be skipped
                    mods.append(nn.Identity())
                modules[role] = MixedOp(mods)
                self.positions.append((st.name, b))
                self.position_stage.append(s)
                self.position_input.append(s - 1 if b == 0 and s > 0 else None)
        self.macro_ops: dict[str, _MacroOp] = {}
        for role, spec in specs.items():
            if macro_dependencies(role) and not role.startswith("neck.td"):
                modules[role] = self._macro_module(role, spec)
        self.net = CpuDetector(modules, template, space.num_classes)
        self._modules_by_role = modules
        self.stage_channels = [[make_divisible(st.base_width * w) for w in self.widths] for st in STAGES]
        # Per position one logit per candidate, or (``factorized``) one per choice value
        # (kind, kernel, SE, ...) that a candidate's logit sums (:func:`candidate_features`).
        self.register_buffer("features", candidate_features(self.candidates), persistent=False)
        n_alpha = self.features.shape[1] if factorized else len(self.candidates) + 1
        self.alpha = nn.Parameter(torch.zeros(len(self.positions), n_alpha))
        self.factorized = factorized
        self.register_buffer("valid", torch.tensor([[1.0] * len(self.candidates) + [1.0 if b >= min(STAGES[s].depths) else 0.0]
                                                    for s, (_, b) in zip(self.position_stage, self.positions)]),
                             persistent=False)  # derived from the options, not state: never restored from a checkpoint
        n_opt = max(len(options) for _, options in self.axes)
        self.axis_alpha = nn.Parameter(torch.zeros(len(self.axes), n_opt))
        self.register_buffer("axis_valid", torch.tensor([[1.0 if i < len(o) else 0.0 for i in range(n_opt)]
                                                         for _, o in self.axes]), persistent=False)
        live = {id(m) for m in self.net.modules()}  # the template's ops replaced by mixed ops are not
        self._built = [(op, spec) for op, spec in self._built if id(op) in live and op.state_dict()]

    # ----- construction -------------------------------------------------------------------
    def _make(self, spec: OpSpec) -> nn.Module:
        op = make_op(spec)
        self._built.append((op, spec))
        return op

    def inherit(self, supernet) -> int:
        """Load every op of this network (each candidate of each position, each kernel of
        each neck/head op) with what a path holding that op inherits from ``supernet``, a
        trained, unsplit :class:`evaluators.supernet.Supernet` of the same space (its
        weights and BatchNorm statistics), so the search starts from trained weights
        rather than a fresh draw. A candidate at position ``b`` takes the supernet's
        weights of role ``.b``. Returns the number of ops loaded. :class:`InputError`
        if an op does not fit (a supernet trained for other settings)."""
        for op, spec in self._built:
            try:
                op.load_state_dict(supernet.op_state(spec))
            except RuntimeError as exc:  # shapes: the supernet's largest op is smaller than this one
                raise InputError(f"op {spec.role} ({spec.kind}) does not fit the supernet's weights "
                                 f"({str(exc).splitlines()[-1].strip()})") from None
        return len(self._built)

    def _largest(self) -> list[int]:
        """The option index per axis the modules are built at: the widest widths and
        channels, the deepest neck and head, PAN on if it can be; the first kernel."""
        out = []
        for name, options in self.axes:
            if name.endswith("kernel"):
                out.append(0)
            else:
                out.append(max(range(len(options)), key=lambda i: options[i]))
        return out

    def _macro_module(self, role: str, spec: OpSpec) -> MixedOp:
        gate = kernel = None
        position = 0
        if role.startswith("neck.bu"):
            gate, kernel = self.axis_index["neck.pan"], self.axis_index["neck.kernel"]
        elif ".b" in role:  # a neck or head tower block
            prefix = "neck" if role.startswith("neck") else "head"
            gate, kernel = self.axis_index[f"{prefix}.depth"], self.axis_index[f"{prefix}.kernel"]
            position = int(role.rsplit(".b", 1)[1])
        if kernel is None:
            mods = [self._make(spec)]
        else:
            mods = [self._make(OpSpec.make(spec.kind, spec.input_shapes, role, **{**spec.param_dict, "kernel": k}))
                    for k in self.axes[kernel][1]]
        if gate is not None and any(not self._present(gate, position, v) for v in self.axes[gate][1]):
            mods.append(TakeFirst() if role.startswith("neck.bu") else nn.Identity())
        self.macro_ops[role] = _MacroOp(gate, position, kernel)
        return MixedOp(mods)

    def _present(self, gate: int, position: int, value) -> bool:
        return bool(value) if self.axes[gate][0] == "neck.pan" else value > position

    @property
    def searches_width(self) -> bool:
        return len(self.widths) > 1

    def _spec(self, base: OpSpec, cand: Mapping[str, Any] | None, cin: int, cout: int) -> OpSpec | None:
        """The op of candidate ``cand`` (None: skip) at a block position, with these channels."""
        if cand is None:
            return None
        params = {k: v for k, v in cand.items() if k != "kind"}
        n, _, h, w = base.input_shapes[0]
        return OpSpec.make(cand["kind"], [(n, cin, h, w)], base.role, cout=cout, stride=base.param_dict["stride"], **params)

    def position_spec(self, p: int, c: int, w_in: int, w_out: int) -> OpSpec | None:
        """Position ``p``'s candidate ``c`` (the last index: skip) at input/output width
        indices ``w_in``/``w_out`` (``w_in`` ignored where the input width is fixed or
        the stage's own)."""
        base, s, i = self._base_specs[p], self.position_stage[p], self.position_input[p]
        cin = (base.input_shapes[0][1] if self.positions[p][1] == 0 else self.stage_channels[s][w_out]) if i is None \
            else self.stage_channels[i][w_in]
        cand = self.candidates[c] if c < len(self.candidates) else None
        return self._spec(base, cand, cin, self.stage_channels[s][w_out])

    def _macro_specs(self) -> list[tuple[str, tuple[int, ...], tuple[int, ...], OpSpec | None]]:
        """(role, its axes, their option indices, its spec or None if absent) for every
        neck/head op and every combination of the choices it depends on; the stem and the
        decode with no axes."""
        by_deps: dict[tuple[str, ...], list[str]] = {}
        base = self._largest()
        for spec in self.space.ops(self._arch_from_choices(None, base)):
            if spec.role not in {f"{n}.b{b}" for n, b in self.positions}:
                by_deps.setdefault(macro_dependencies(spec.role), []).append(spec.role)
        out = []
        for deps, roles in by_deps.items():
            axes = tuple(self.axis_index[d] for d in deps)
            for combo in itertools.product(*[range(len(self.axes[a][1])) for a in axes]):
                choice = list(base)
                for a, i in zip(axes, combo):
                    choice[a] = i
                found = {s.role: s for s in self.space.ops(self._arch_from_choices(None, choice))}
                out += [(role, axes, combo, found.get(role)) for role in roles]
        return out

    def all_specs(self) -> list[OpSpec]:
        """Every op any derived network can hold (for building a table for this supernet)."""
        out = [spec for *_, spec in self._macro_specs() if spec is not None]
        for p in range(len(self.positions)):
            n_in = 1 if self.position_input[p] is None else len(self.widths)
            out += [spec for c in range(len(self.candidates)) for i in range(n_in) for o in range(len(self.widths))
                    if (spec := self.position_spec(p, c, i, o)) is not None]
        return out

    def tabulate(self, value: Callable[[OpSpec | None], float]) -> Tabulated:
        """``value(spec)`` (``value(None)`` for an absent op) of every op, laid out by the
        choices it depends on (see :class:`Tabulated`)."""
        n_w = len(self.widths)
        positions = []
        for p in range(len(self.positions)):
            n_in = 1 if self.position_input[p] is None else n_w
            positions.append(torch.tensor([[[value(self.position_spec(p, c, i, o)) for o in range(n_w)]
                                            for i in range(n_in)] for c in range(len(self.candidates) + 1)],
                                          dtype=torch.float64))
        shape = [len(options) for _, options in self.axes]
        macro = torch.zeros(shape, dtype=torch.float64)
        const = 0.0
        for role, axes, combo, spec in self._macro_specs():
            if not axes:
                const += value(spec)
                continue
            index = [slice(None)] * len(shape)
            for a, i in zip(axes, combo):
                index[a] = i
            macro[tuple(index)] += value(spec)
        return Tabulated(const, positions, macro)

    def param_table(self) -> Tabulated:
        """Parameters of every op (counted on the meta device, nothing allocated; cached)."""
        if getattr(self, "_param_table", None) is not None:
            return self._param_table

        def count(spec):
            if spec is None:
                return 0.0
            with torch.device("meta"):
                return float(sum(p.numel() for p in make_op(spec).parameters()))
        self._param_table = self.tabulate(count)
        return self._param_table

    # ----- probabilities and sampling -----------------------------------------------------
    def mixed_ops(self) -> list[MixedOp]:
        """The block positions' mixed ops, in position order."""
        return [self._modules_by_role[f"{n}.b{b}"] for n, b in self.positions]

    def masked_logits(self, tau: float = 1.0) -> torch.Tensor:
        """[position, candidate] logits (the last candidate: skip), -inf where not allowed."""
        logits = self.alpha @ self.features.T if self.factorized else self.alpha
        return (logits / tau).masked_fill(self.valid == 0, float("-inf"))

    def probabilities(self) -> torch.Tensor:
        return F.softmax(self.masked_logits(), dim=-1)

    def axis_probabilities(self) -> torch.Tensor:
        """[axis, option] (zero past an axis's options)."""
        return F.softmax(self.axis_alpha.masked_fill(self.axis_valid == 0, float("-inf")), dim=-1)

    def set_hard(self, generator: torch.Generator, tau: float) -> None:
        """Sample one candidate per position and one option per axis (Gumbel),
        straight-through weights."""
        logits = self.masked_logits(tau)
        soft = F.softmax(logits + _gumbel(logits.shape, generator), dim=-1)
        index = soft.argmax(-1)
        for i, op in enumerate(self.mixed_ops()):
            k = int(index[i])
            op.hard_index, op.weights = k, None
            op.hard_weight = 1.0 - soft[i, k].detach() + soft[i, k]
        axis_logits = (self.axis_alpha / tau).masked_fill(self.axis_valid == 0, float("-inf"))
        asoft = F.softmax(axis_logits + _gumbel(axis_logits.shape, generator), dim=-1)
        self._set_axes(F.one_hot(asoft.argmax(-1), asoft.shape[1]).to(asoft) - asoft.detach() + asoft, hard=True)

    def set_dense(self, weights: torch.Tensor, axis_weights: torch.Tensor | None = None) -> None:
        """Every position the weighted sum of its candidates; widths and neck channels the
        ``axis_weights`` (default: the probabilities) over their masks; the other macro
        choices their most probable option."""
        for i, op in enumerate(self.mixed_ops()):
            op.hard_index, op.weights = None, weights[i, : len(op.candidates)]
        self._set_axes(self.axis_probabilities() if axis_weights is None else axis_weights, hard=False)

    def _set_axes(self, weights: torch.Tensor, hard: bool) -> None:
        """Channel masks from the width and neck-channel rows of ``weights``; each macro
        op's candidate from the largest weight of its axes, scaled by those weights when
        ``hard`` (straight-through one-hot weights), unscaled otherwise."""
        chosen = weights.argmax(-1).tolist()
        if self.searches_width:
            for s, op in zip(self.position_stage, self.mixed_ops()):
                op.channel_mask = self._mask(weights[s], self.stage_channels[s])
                op.live = self.stage_channels[s][chosen[s]] if hard else None
        channels = self.axis_index["neck.channels"]
        options = self.axes[channels][1]
        mask = self._mask(weights[channels], options) if len(options) > 1 else None
        if not hard:
            weights = torch.ones_like(weights)
        for role, rule in self.macro_ops.items():
            op = self._modules_by_role[role]
            op.channel_mask = mask if not role.endswith(".pred") else None
            op.hard_index, op.weights, op.hard_weight = 0, None, torch.ones(())
            if rule.gate is not None:
                g = chosen[rule.gate]
                op.hard_weight = weights[rule.gate, g]
                if not self._present(rule.gate, rule.position, self.axes[rule.gate][1][g]):
                    op.hard_index = len(op.candidates) - 1
                    continue
            if rule.kernel is not None:
                op.hard_index = chosen[rule.kernel]
                op.hard_weight = op.hard_weight * weights[rule.kernel, op.hard_index]

    @staticmethod
    def _mask(weights: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
        keep = torch.stack([(torch.arange(max(channels)) < c).float() for c in channels])  # [option, channel]
        return (weights[: len(channels)] @ keep).view(1, -1, 1, 1)

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if n not in ("alpha", "axis_alpha")]

    def arch_parameters(self):
        return [self.alpha, self.axis_alpha]

    # ----- networks -----------------------------------------------------------------------
    def _arch_from_choices(self, choices: list[int] | None, axes: Sequence[int]) -> Architecture:
        """Choices per position (None: the first candidate everywhere at full depth) and
        one option index per axis."""
        space = self.space
        sample = {k: v[0] for k, v in space.decisions().items()}
        sample.update({name: options[i] for (name, options), i in zip(self.axes, axes)})
        i = 0
        for st in STAGES:
            blocks = []
            for b in range(max(st.depths)):
                if choices is None:
                    blocks.append(self.candidates[0])
                elif choices[i] < len(self.candidates):
                    blocks.append(self.candidates[choices[i]])
                i += 1 if choices is not None else 0
            sample[f"{st.name}.depth"] = len(blocks)
            for b, cand in enumerate(blocks):
                for k, v in cand.items():
                    sample[f"{st.name}.b{b}.{k}"] = v
        return space.canonicalize(Architecture(space.name, sample))

    def at(self, tab: Tabulated, widths: Sequence[int]) -> tuple[float, torch.Tensor, torch.Tensor]:
        """``tab`` at one width index per stage: (constant, [position, candidate], the
        macro part over the neck/head axes); a derived network's total is the constant
        plus its block choices' entries plus its macro options' entry."""
        rows = [t[:, 0 if i is None else widths[i], widths[s]]
                for t, i, s in zip(tab.positions, self.position_input, self.position_stage)]
        return tab.const, torch.stack(rows), tab.macro[tuple(widths)]

    def derive(self, choices: list[int], axes: Sequence[int] | None = None) -> Architecture:
        """The network of these block choices and axis options (indices into each axis's
        options; default: the largest, as built)."""
        return self._arch_from_choices(choices, list(axes) if axes is not None else self._largest())


def _check_candidates(candidates) -> int:
    check_count("darts", {"candidates": candidates}, "candidates", 1)
    return candidates


def _closest(measured: Sequence[dict], target: float) -> dict | None:
    """The timing (``measured_ms``) closest to ``target``; None if there is none."""
    return min(measured, key=lambda m: abs(m["measured_ms"] / target - 1), default=None)


def _gumbel(shape, generator: torch.Generator) -> torch.Tensor:
    return -torch.log(-torch.log(torch.rand(shape, generator=generator).clamp(1e-9, 1 - 1e-9)))


class ExpectedLatency:
    """E[latency] under the table's linear predictor, differentiable in the probabilities.

    The predictor is linear in per-op terms, and the choices (a candidate per position, an
    option per axis) are independent under the search's distribution, so the expectation
    is exact: per op, its term weighted by the probabilities of the choices it depends on.
    """

    def __init__(self, supernet: DartsSupernet, table):
        self.net, self.table = supernet, table
        coef = np.asarray(table.coef, dtype=float)
        kind_coef = dict(zip(table.feature_kinds, coef[: len(table.feature_kinds)]))
        n_coef, scale = float(coef[-2]), float(table.scale)

        def term(spec):  # the op's part of the prediction
            return 0.0 if spec is None else scale * (kind_coef[spec.kind] * table.op_ms(spec) + n_coef)
        tab = supernet.tabulate(term)
        self.tab = tab._replace(const=tab.const + scale * float(coef[-1]))

    def __call__(self, probs: torch.Tensor, axis_probs: torch.Tensor | None = None) -> torch.Tensor:
        net = self.net
        ap = (net.axis_probabilities() if axis_probs is None else axis_probs).double()
        total = torch.tensor(self.tab.const, dtype=torch.float64)
        one = torch.ones(1, dtype=torch.float64)
        n_w = len(net.widths)
        for p, t in enumerate(self.tab.positions):
            i = net.position_input[p]
            total = total + torch.einsum("c,i,o,cio->", probs[p].double(), one if i is None else ap[i, :n_w],
                                         ap[net.position_stage[p], :n_w], t)
        macro = self.tab.macro
        for a in reversed(range(macro.dim())):  # contract the last axis with its probabilities
            macro = macro @ ap[a, : macro.shape[-1]]
        return (total + macro).float()

    def at(self, axes_widths: Sequence[int]) -> tuple[float, torch.Tensor, torch.Tensor]:
        """At one width index per stage: (constant ms, [position, candidate] ms, the
        macro ms over the remaining axes): a derived network's table latency is the
        constant plus its choices' entries."""
        return self.net.at(self.tab, axes_widths)

    def range_ms(self, valid: torch.Tensor | None = None) -> tuple[float, float]:
        """Table latency of the cheapest and of the dearest network."""
        valid = self.net.valid if valid is None else valid
        lo, hi = math.inf, -math.inf
        for widths in itertools.product(range(len(self.net.widths)), repeat=len(STAGES)):
            const, ms, macro = self.at(widths)
            lo = min(lo, const + float(ms.masked_fill(valid == 0, math.inf).min(-1).values.sum()) + float(macro.min()))
            hi = max(hi, const + float(ms.masked_fill(valid == 0, -math.inf).max(-1).values.sum()) + float(macro.max()))
        return lo, hi


# The target must be at least this multiple of a width's cheapest network, so that the
# search still has choices to make at that width instead of being pinned to the cheapest
# op everywhere. 1.5 until the deeper default head (session 23) added 0.2 ms to every
# network: then 1.5 put the lowest benchmark target (2.04 ms) at width 0.5, where the
# paired re-derivations that justify the head were at width 1.0 (width 0.5 was DARTS's
# weakest in session 2); 1.4 keeps width 1.0 there.
WIDTH_HEADROOM = 1.4


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


def choose_fixed(space: SearchSpace, table, target_ms: float, kinds, widths: Sequence[float]) -> dict:
    """The neck/head DARTS holds when ``fixed`` is not given: the first of
    :data:`RICHER_NECKS` (over :data:`DEFAULT_FIXED`) whose cheapest network at the
    widest of ``widths`` (those the search may use) is at most ``target_ms /
    WIDTH_HEADROOM``, the headroom :func:`choose_width` leaves, else
    :data:`DEFAULT_FIXED`; the space's own held values over either. Passed over: a richer
    neck the space holds otherwise, or one whose ops the table lacks (it cannot be priced)."""
    base, held, decisions = effective_fixed(space, None), _space_held(space), space.decisions()
    for neck in RICHER_NECKS:
        fixed = {**base, **neck}
        if any(held.get(k, v) != v or v not in decisions[k] for k, v in neck.items()):
            continue
        net = DartsSupernet(space, max(widths), fixed, kinds)
        try:
            cheapest = ExpectedLatency(net, table).range_ms(net.valid)[0]
        except MissingOpError:
            continue
        if cheapest * WIDTH_HEADROOM <= target_ms:
            return fixed
    return base


@register_strategy("darts")
class DartsStrategy(Strategy):
    """Gradient-based search on a weight-sharing supernet, latency-targeted.

    Options: ``steps`` (total optimisation steps), ``batch_size``, ``w_lr``/``a_lr``
    (weights/AdamW, alpha/Adam), ``tau`` start/end (Gumbel temperature, annealed
    exponentially), ``warmup_fraction`` (weights only), ``lam`` (initial latency weight),
    ``width`` (one width for every stage (default 0.75); ``auto``; ``search``: the
    space's widths, searched per stage; or a list of widths to search among), ``fixed`` (neck/head decisions held
    at a value; the rest are searched; default all held, as :func:`choose_fixed` picks for the target; ``{}``
    searches them all), ``data`` (DataConfig fields),
    ``table`` (latency table path; default the committed one at ``threads``),
    ``checkpoint_path`` (set by the engine to the run folder), ``threads``, ``kinds``
    (block kinds searched; default all of the space's), ``measure_rounds`` (derivations
    corrected by onnxruntime measurement; 0 trusts the table alone), ``params_weight`` (weight of
    log parameters against log-probabilities in the derivation; 0: probabilities alone),
    ``allow_ratio`` (the derivation considers, at each position and stage width, the
    candidates at least this fraction as likely as the best; default 0: every candidate,
    still valued by its log-probability; see the module docstring),
    ``candidates`` (networks proposed: the derived one, then ones derived from the
    distribution perturbed by Gumbel noise, i.e. sampled from it under the target; the
    engine evaluates each and keeps the best, as the DARTS paper picks among its searches'
    cells by a short training; the engine refuses a ``budget`` below them),
    ``factorized`` (one architecture parameter per choice value, not per candidate; see
    the module docstring), ``init_from`` (a ``nas supernet train`` checkpoint of the same
    space settings and block kinds, unsplit: every op as built, at the largest width and
    channels, starts from that supernet's weights for its role instead of a fresh draw;
    :meth:`DartsSupernet.inherit`; read once, when the search starts).
    """

    gradient_based = True  # not part of the sampler conformance loop: it trains a supernet

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0, *, steps: int = 300,
                 batch_size: int = 8, w_lr: float = 4e-3, a_lr: float = 3e-2, tau: tuple = (5.0, 0.5),
                 warmup_fraction: float = 0.3, lam: float = 1.0, width: float | str | list = 0.75, fixed: Mapping | None = None,
                 data: Mapping | None = None, table: str | None = None, threads: int = 1, kinds: tuple | None = None,
                 measure_rounds: int = 4, params_weight: float = 2.0, allow_ratio: float = 0.0,
                 candidates: int = 1, factorized: bool = False,
                 init_from: str | None = None, checkpoint_path: str | None = None,
                 checkpoint_every: int = 25, progress: bool = True):
        super().__init__(space, objective, seed)
        # A resumed search has its weights already: init_from is not read again, so a
        # moved file does not stop it (the path is still compared, see search()).
        resuming = bool(checkpoint_path) and Path(checkpoint_path).exists()
        self.check_options(space, objective, dict(
            steps=steps, batch_size=batch_size, w_lr=w_lr, a_lr=a_lr, tau=tau, warmup_fraction=warmup_fraction,
            lam=lam, width=width, fixed=fixed, data=data, threads=threads, kinds=kinds, measure_rounds=measure_rounds,
            params_weight=params_weight, allow_ratio=allow_ratio, candidates=candidates, factorized=factorized,
            checkpoint_every=checkpoint_every,
            progress=progress,
            init_from=None if resuming else init_from))
        init_from = str(Path(init_from).resolve()) if init_from is not None else None
        self.options = dict(steps=steps, batch_size=batch_size, w_lr=w_lr, a_lr=a_lr, tau=tuple(tau),
                            warmup_fraction=warmup_fraction, lam=lam, width=width, threads=threads,
                            measure_rounds=measure_rounds, params_weight=float(params_weight),
                            allow_ratio=float(allow_ratio), candidates=candidates,
                            factorized=factorized, init_from=init_from)
        self.fixed = effective_fixed(space, fixed)
        self.fixed_given = fixed is not None  # else search() picks the neck for the target (choose_fixed)
        self.kinds = tuple(kinds or space.block_kinds)
        self.data_options = dict(data or {})
        self.table_path, self.checkpoint_path = table, checkpoint_path
        self.checkpoint_every, self.progress = checkpoint_every, progress
        self.derived: list[dict] = []
        self.asked = 0                 # derived networks handed out by this process
        self.told: list[str] = []      # ids of those whose results came back
        self.report: dict[str, Any] = {}

    @classmethod
    def check_options(cls, space: SearchSpace, objective: Objective, options: Mapping[str, Any]) -> None:
        """The options a darts search refuses, named, before anything is trained or written:
        no latency target, and any given option of the wrong kind or out of range."""
        from evaluators.data import DataConfig

        if objective.target_ms is None:
            raise InputError("strategy 'darts' needs a latency target: objective.target_ms (mode constrained or soft)")
        _check_candidates(options.get("candidates", 1))
        for name in ("steps", "batch_size", "threads", "checkpoint_every"):
            check_count("darts", options, name, 1)
        check_count("darts", options, "measure_rounds", 0)
        for name in ("w_lr", "a_lr"):
            check_number("darts", options, name, "a number > 0", lambda v: v > 0)
        for name in ("lam", "params_weight"):
            check_number("darts", options, name, "a number >= 0", lambda v: v >= 0)
        check_number("darts", options, "warmup_fraction", "a number in [0, 1)", lambda v: 0 <= v < 1)
        check_number("darts", options, "allow_ratio", "a number in [0, 1]", lambda v: 0 <= v <= 1)
        tau = options.get("tau", option_default(cls, "tau"))
        if not (isinstance(tau, (list, tuple)) and len(tau) == 2
                and all(is_number(t) and t > 0 for t in tau)):
            raise InputError(f"darts option 'tau': {tau!r} is not [start, end], two temperatures > 0")
        check_flags("darts", options, "factorized", "progress")
        data = options.get("data") or {}
        fields = [f.name for f in dataclasses.fields(DataConfig)]
        if not isinstance(data, Mapping) or set(data) - set(fields):
            raise InputError(f"darts option 'data': {data!r} is not a mapping of DataConfig fields {fields}")
        decisions = space.decisions()
        width = options.get("width", option_default(cls, "width"))
        widths = decisions[f"{STAGES[0].name}.width"]
        chosen = list(width) if isinstance(width, (list, tuple)) else [width]
        if width not in ("auto", "search") and (not chosen or any(w not in widths for w in chosen)):
            raise InputError(f"darts option 'width': {width!r} is not one of the space's widths {list(widths)}, "
                             f"a list of them, 'auto' or 'search'")
        whole = space.unrestricted().decisions()
        held = [k for k in decisions if k not in MACRO and len(decisions[k]) < len(whole[k])]
        if held:
            raise InputError(f"strategy 'darts' searches every backbone decision, but the space holds {held}; "
                             f"hold only neck/head decisions ({', '.join(MACRO)}) with darts")
        fixed = options.get("fixed")
        if fixed is not None and not isinstance(fixed, Mapping):
            raise InputError(f"darts option 'fixed': {fixed!r} is not a mapping of neck/head decisions to values")
        for name, value in effective_fixed(space, fixed).items():
            if name not in MACRO or value not in decisions[name]:
                raise InputError(f"darts option 'fixed': {name}={value!r} is not a neck/head decision of the space "
                                 f"with one of its values ({', '.join(f'{m}: {decisions[m]}' for m in MACRO)})")
        init_from = options.get("init_from")
        if init_from is not None:
            cls.init_record(space, init_from)
        kinds = options.get("kinds")
        if kinds is not None and not (isinstance(kinds, (list, tuple)) and all(k in space.block_kinds for k in kinds)):
            raise InputError(f"darts option 'kinds': {kinds!r} is not a list of the space's block kinds "
                             f"{list(space.block_kinds)}")

    @staticmethod
    def init_record(space: SearchSpace, path) -> dict:
        """The checkpoint record of the ``init_from`` option (memory-mapped), checked: a
        `nas supernet train` file for ``space``, unsplit; :class:`InputError` naming the
        option and the file otherwise."""
        from evaluators.supernet import check_checkpoint, load_checkpoint

        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"darts option 'init_from': {path!r} is not a path to a `nas supernet train` checkpoint")
        try:
            record = load_checkpoint(path)
            check_checkpoint(record, space, path)
        except InputError as exc:
            raise InputError(f"darts option 'init_from': {exc}") from None
        if record["train"].get("split"):
            raise InputError(f"darts option 'init_from': {path} is a split supernet ({record['train']['split']}); "
                             "use one trained without --split")
        return record

    def _inherit(self, net: DartsSupernet, path: str) -> None:
        from evaluators.supernet import load_supernet

        try:
            net.inherit(load_supernet(self.init_record(self.space, path), self.space, path))
        except InputError as exc:
            raise InputError(f"darts option 'init_from': {exc}") from None

    @classmethod
    def proposals(cls, options: Mapping[str, Any]) -> int | None:
        """The derived network and the sampled ones: ``candidates``."""
        return _check_candidates(options.get("candidates", 1))

    # ----- the strategy interface ---------------------------------------------------------
    def ask(self) -> Architecture | None:
        if not self.derived:
            archs, report = self.search()
            self.derived, self.report = [a.to_dict() for a in archs], report
        while self.asked < len(self.derived):  # in order, skipping those already told before a resume
            arch = Architecture.from_dict(self.derived[self.asked])
            self.asked += 1
            if arch.id not in self.told:
                return arch
        return None

    def tell(self, arch: Architecture, result: Result) -> None:
        self.told.append(arch.id)  # the metrics go to the log; the derived networks are the answer

    def state_dict(self) -> dict[str, Any]:
        # The told ids, not the asked count: networks still being evaluated when the state is
        # saved (a Ray runner asks ahead) are proposed again after a crash (base.Strategy).
        return {"derived": self.derived, "told": self.told, "report": self.report}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.derived, self.asked = list(state["derived"]), 0
        # A state from before candidates saved "asked" (every asked network was told).
        self.told = list(state["told"]) if "told" in state else \
            [Architecture.from_dict(d).id for d in self.derived[: int(state.get("asked", 0))]]
        self.report = dict(state.get("report", {}))

    # ----- the search ---------------------------------------------------------------------
    def latency_table(self):
        """The latency table the search and derivation use (``table`` option, else the committed one)."""
        from latency_tables.predictor import LatencyTable

        if self.table_path:
            return LatencyTable.load(self.table_path, self.space, self.options["threads"])
        return LatencyTable.default(self.space, self.options["threads"])

    def search(self) -> tuple[list[Architecture], dict]:
        """Train the supernet (resuming from the checkpoint if any); derive the
        ``candidates`` networks (the derived one first); report."""
        from evaluators.data import DataConfig
        from evaluators.trainer import _batch, TrainConfig, supervised_loss
        from latency_tables.progress import progress_bar

        o = self.options
        torch.manual_seed(self.seed)
        table = self.latency_table()
        target = float(self.objective.target_ms)
        width, ranges = o["width"], {}
        ck = None
        if self.checkpoint_path and Path(self.checkpoint_path).exists():
            ck = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if not self.fixed_given:
            # A resumed search keeps the neck it started with, as it keeps its width.
            widths = self.space.decisions()[f"{STAGES[0].name}.width"] if width in ("auto", "search") \
                else as_widths(width)
            self.fixed = ck["state"]["fixed"] if ck and "fixed" in ck["state"] else \
                choose_fixed(self.space, table, target, self.kinds, widths)
        if width == "auto":
            width, ranges = choose_width(self.space, table, target, self.fixed, self.kinds)
            # A resumed search keeps the width it started with (the rule may have changed since).
            width = ck["state"].get("width", width) if ck else width
        else:
            width = list(self.space.decisions()[f"{STAGES[0].name}.width"]) if width == "search" else width
            if ck and as_widths(ck["state"].get("width", width)) != as_widths(width):
                raise InputError(f"{self.checkpoint_path} was trained at width {ck['state']['width']}, the config asks "
                                 f"for {width}; set darts option width to {ck['state']['width']} or start a new run")
        if ck and ck["state"].get("fixed", self.fixed) != self.fixed:
            raise InputError(f"{self.checkpoint_path} was trained with darts option fixed {ck['state']['fixed']}, the "
                             f"config asks for {self.fixed}; set fixed to {ck['state']['fixed']} or start a new run")
        init_from = self.options["init_from"]
        if ck and ck["state"].get("init_from") != init_from:
            raise InputError(f"{self.checkpoint_path} was trained with darts option init_from "
                             f"{ck['state'].get('init_from')!r}, the config asks for {init_from!r}; set it back "
                             f"or start a new run")
        factorized = self.options["factorized"]
        if ck and ck["state"].get("factorized", False) != factorized:
            raise InputError(f"{self.checkpoint_path} was trained with darts option factorized "
                             f"{ck['state'].get('factorized', False)}, the config asks for {factorized}; set it back "
                             f"or start a new run")
        net = DartsSupernet(self.space, width, self.fixed, self.kinds, factorized)
        expected = ExpectedLatency(net, table)
        train_data, _ = DataConfig(**self.data_options).load(self.space.settings()["input_size"])
        half = len(train_data) // 2
        w_idx, a_idx = np.arange(half), np.arange(half, len(train_data))
        w_opt = torch.optim.AdamW(net.weight_parameters(), lr=o["w_lr"], weight_decay=0.05)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=o["a_lr"], betas=(0.5, 0.999))
        gen = torch.Generator().manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        state = {"step": 0, "lam": o["lam"], "history": [], "width": width, "fixed": self.fixed, "factorized": factorized,
                 "init_from": init_from}
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
            state = {**ck["state"], "width": width, "fixed": self.fixed, "factorized": factorized, "init_from": init_from}
        elif init_from:
            self._inherit(net, init_from)
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
            lat = float(expected(net.probabilities().detach(), net.axis_probabilities().detach()))
            if step >= warmup:  # architecture step on the held-out half
                net.set_hard(gen, tau)
                images, targets = _batch(train_data, rng.choice(a_idx, o["batch_size"], replace=False), cfg, rng)
                e_lat = expected(net.probabilities(), net.axis_probabilities())
                a_loss = supervised_loss(net.net, images, targets)["loss"] + state["lam"] * torch.log(e_lat / target) ** 2
                a_opt.zero_grad(set_to_none=True)
                w_opt.zero_grad(set_to_none=True)
                a_loss.backward()
                a_opt.step()
                lat = float(e_lat.detach())
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
        archs, candidates = self.sample_candidates(net, table, target, arch)
        predicted = table.predict(arch)
        report = {"target_ms": target, "width": width, "width_ranges_ms": ranges, "fixed": self.fixed,
                  "derived_table_ms": predicted,
                  "expected_ms": float(expected(net.probabilities(), net.axis_probabilities()).detach()), "off_target": predicted / target - 1,
                  "measurements": measured, "lam": state["lam"], "steps": state["step"],
                  "seconds": time.monotonic() - t0}
        if measured:
            best = _closest(measured, target)
            report.update(measured_ms=best["measured_ms"], measured_off_target=best["measured_ms"] / target - 1)
        if candidates:
            report["candidates"] = candidates
        return archs, report

    def sample_candidates(self, net: DartsSupernet, table, target: float, first: Architecture
                          ) -> tuple[list[Architecture], list[dict]]:
        """``first`` and up to ``candidates - 1`` more distinct networks, each derived from
        the distribution perturbed by fresh Gumbel noise (seeded by the search's seed; with
        ``measure_rounds`` the timings steer each one too, so a rerun can differ). Gives up
        after 4 draws per network wanted (a peaked distribution has few networks to offer);
        a draw whose table-only derivation was seen before is dropped before any timing.
        Returns the networks and, for the added ones, their table and measured latencies."""
        archs, report = [first], []
        if self.options["candidates"] == 1:
            return archs, report
        seen = {self._derive(net, table, target).id}
        gen = torch.Generator().manual_seed(self.seed + 1)
        shapes = (net.valid.shape, net.axis_alpha.shape)
        for _ in range(4 * (self.options["candidates"] - 1)):
            if len(archs) >= self.options["candidates"]:
                break
            noise = tuple(_gumbel(s, gen) for s in shapes)
            draft = self._derive(net, table, target, noise).id
            if draft in seen:
                continue
            seen.add(draft)
            arch, measured = self.derive_measured(net, table, target, noise)
            if arch.id in {a.id for a in archs}:
                continue
            archs.append(arch)
            report.append({"table_ms": table.predict(arch), "measured_ms": (_closest(measured, target) or {}).get("measured_ms")})
        return archs, report

    def derive_measured(self, net: DartsSupernet, table, target: float,
                        noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[Architecture, list[dict]]:
        """Derive against the table; then, up to ``measure_rounds`` times, time the derived
        network under onnxruntime and, while it misses the target by more than 5%,
        re-derive against the target divided by the measured/table ratio (geometric mean
        over the networks timed so far and the table's own ratio 1, which damps timing
        noise and the per-network error of the table). Returns the network measured
        closest to the target.
        ``noise`` perturbs the log-probabilities (see :meth:`derive_choices`)."""
        from latency_tables.profiler import measure_model

        table_target, tried = target, []
        arch = self._derive(net, table, table_target, noise)
        for _ in range(self.options["measure_rounds"]):
            ms = measure_model(self.space, arch, self.options["threads"]).ms
            tried.append({"arch": arch.to_dict(), "table_target_ms": table_target, "table_ms": table.predict(arch),
                          "measured_ms": ms})
            if abs(ms / target - 1) <= 0.05:
                break
            # The table counts as one more reading, at ratio 1: a timing inside the search
            # is about as far from an idle re-timing of the same network as the table is
            # (it read high by a few percent on average), so trusting the readings alone
            # overshot (session 23: a search read +13.7%, the correction landed at -11.7%).
            log_ratio = sum(math.log(t["measured_ms"] / t["table_ms"]) for t in tried) / (len(tried) + 1)
            table_target = target / math.exp(log_ratio)
            arch = self._derive(net, table, table_target, noise)
            if any(t["arch"] == arch.to_dict() for t in tried):
                break
        if tried:
            arch = Architecture.from_dict(_closest(tried, target)["arch"])
        return arch, [{k: v for k, v in t.items() if k != "arch"} for t in tried]

    def _derive(self, net: DartsSupernet, table, target: float, noise=None) -> Architecture:
        """The network of :meth:`derive_choices`."""
        return net.derive(*self.derive_choices(net, table, target, noise))

    def derive_choices(self, net: DartsSupernet, table, target: float,
                       noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[list[int], list[int]]:
        """The choices (a candidate per position, an option index per axis) that maximise
        the value (sum of log-probabilities + ``params_weight`` * log parameters) at the
        target's table latency.

        Only candidates and widths at least ``allow_ratio`` times as likely as their
        position's (stage's) best are allowed (skip never where a stage is at its minimum
        depth); the neck and head take their most probable options. Each allowed
        combination of stage widths is tried; for one, the blocks and the neck/head (one
        more position, whose candidates are the allowed macro combinations) are a
        multiple-choice knapsack (:meth:`_knapsack`). The network within 3% of the target
        (else the closest) of highest value wins.

        ``noise`` (Gumbel draws shaped like the block and axis probabilities) is added to
        the log-probabilities in the value: the argmax of log-probabilities plus Gumbel
        noise is a draw from the distribution, so a perturbed derivation samples a network
        from it, pulled to the target. What is allowed is decided without the noise."""
        probs, aprobs = net.probabilities().detach().double(), net.axis_probabilities().detach().double()
        ratio = self.options["allow_ratio"]
        allowed = (probs >= ratio * probs.max(-1, keepdim=True).values) & (net.valid > 0)
        a_allowed = (aprobs >= ratio * aprobs.max(-1, keepdim=True).values) & (net.axis_valid > 0)
        # The neck and head take their most probable options. Traded against the latency
        # with the parameter term, a nearly flat distribution gave every target a
        # one-level 48-channel head (its latency buys more backbone parameters), where
        # evolution's winners mostly have deep 96-channel ones.
        for a in range(len(STAGES), len(net.axes)):
            a_allowed[a] = aprobs[a] == aprobs[a].max()
        log_probs, log_aprobs = torch.log(probs.clamp_min(1e-12)), torch.log(aprobs.clamp_min(1e-12))
        if noise is not None:
            log_probs, log_aprobs = log_probs + noise[0].double(), log_aprobs + noise[1].double()
        latency, params = ExpectedLatency(net, table), net.param_table()
        n_stage, n_pos = len(STAGES), len(net.positions)
        macro_axes = range(n_stage, len(net.axes))
        sizes = [len(net.axes[a][1]) for a in macro_axes]
        # The macro position: log-probability and allowance of every macro combination.
        macro_lp = torch.zeros(sizes, dtype=torch.float64)
        macro_ok = torch.ones(sizes, dtype=torch.bool)
        for k, a in enumerate(macro_axes):
            view = [1] * len(sizes)
            view[k] = sizes[k]
            macro_lp = macro_lp + log_aprobs[a, : sizes[k]].view(view)
            macro_ok = macro_ok & a_allowed[a, : sizes[k]].view(view)
        n_cols = max(probs.shape[1], macro_lp.numel())

        def stacked(blocks, macro, fill):  # the block rows and the macro row, padded to one width
            out = torch.full((n_pos + 1, n_cols), fill, dtype=blocks.dtype)
            out[:n_pos, : blocks.shape[1]] = blocks
            out[n_pos, : macro.numel()] = macro.flatten()
            return out

        lp_all, ok_all = stacked(log_probs, macro_lp, -1e9), stacked(allowed, macro_ok, False)
        best = None
        for widths in itertools.product(*[a_allowed[s].nonzero().flatten().tolist() for s in range(n_stage)]):
            const_ms, ms, macro_ms = latency.at(widths)
            const_params, cand_params, macro_params = net.at(params, widths)
            choices, ms_total, value = self._knapsack(lp_all, ok_all, stacked(ms, macro_ms, 0.0), const_ms,
                                                      stacked(cand_params, macro_params, 0.0), const_params, target)
            value += float(sum(log_aprobs[s, w] for s, w in enumerate(widths)))
            key = (max(0.0, abs(ms_total / target - 1) - 0.03), -value)
            if best is None or key < best[0]:
                macro = [int(i) for i in np.unravel_index(choices[-1], sizes)]
                best = (key, choices[:-1], list(widths) + macro)
        return best[1], best[2]

    def _knapsack(self, log_probs, allowed, ms, base_ms, params, base_params, target):
        """Per position one allowed candidate, maximising sum(log_probs) + ``params_weight``
        * log(base_params + sum(params)) with base_ms + sum(ms) at the target.

        Solved by its Lagrangian: per position ``argmax(value - mu * ms)``, log parameters
        linearised around the most probable choice's count, ``mu >= 0`` bisected until the
        latency meets the target. Then greedy single-position moves while they bring the
        latency closer to the target (until within 3%): one that also raises the value
        first, else the one that loses the least value per millisecond.
        Returns (choices, latency, value)."""
        weight = self.options["params_weight"]
        rows = torch.arange(ms.shape[0])

        def latency(ch):
            return base_ms + float(ms[rows, ch].sum())

        def total_params(ch):
            return base_params + float(params[rows, ch].sum())

        def value(ch):
            return float(log_probs[rows, ch].sum()) + weight * math.log(max(total_params(ch), 1.0))

        def solve(mu, params_ref):
            score = log_probs + weight * params / params_ref - mu * ms
            return score.masked_fill(~allowed, float("-inf")).argmax(-1)

        ref = total_params(log_probs.masked_fill(~allowed, float("-inf")).argmax(-1))
        choices = solve(0.0, ref)
        if latency(choices) > target:
            lo, hi = 0.0, 1.0
            while latency(solve(hi, ref)) > target and hi < 1e6:
                lo, hi = hi, hi * 4
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if latency(solve(mid, ref)) > target else (lo, mid)
            choices = min((solve(lo, ref), solve(hi, ref)), key=lambda ch: abs(latency(ch) / target - 1))
        choices = choices.clone()
        for _ in range(4 * len(choices)):
            current_ms, current_params = latency(choices), total_params(choices)
            gap = abs(current_ms / target - 1)
            if gap < 0.03:
                break
            # Every single-position move at once: its latency and its change of value.
            trial_ms = current_ms - ms[rows, choices][:, None] + ms
            trial_params = (current_params - params[rows, choices][:, None] + params).clamp_min(1.0)
            gain = log_probs - log_probs[rows, choices][:, None] + weight * (torch.log(trial_params) - math.log(current_params))
            closer = allowed & ((trial_ms / target - 1).abs() < gap)
            closer[rows, choices] = False
            if not closer.any():
                break
            if (closer & (gain > 0)).any():
                score = gain.masked_fill(~(closer & (gain > 0)), float("-inf"))
            else:
                score = (gain / (trial_ms - current_ms).abs().clamp_min(1e-12)).masked_fill(~closer, float("-inf"))
            p, c = divmod(int(score.argmax()), score.shape[1])
            choices[p] = c
        return [int(c) for c in choices], latency(choices), value(choices)

    def _save(self, net, w_opt, a_opt, gen, rng, state) -> None:
        record = {"net": net.state_dict(), "w_opt": w_opt.state_dict(), "a_opt": a_opt.state_dict(),
                  "gen": gen.get_state(), "rng": rng.bit_generator.state, "state": state}
        atomic_write(self.checkpoint_path, lambda f: torch.save(record, f))
