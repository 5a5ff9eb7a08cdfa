"""A weight-sharing supernet over the ``cpu_detector`` space and the ``supernet`` evaluator.

Training is single-path one-shot with uniform sampling (SPOS, Guo et al. 2020): every
step draws one architecture uniformly from the space, runs the detection loss through
that path only and updates only the weights on it. Scoring a candidate then costs
seconds instead of a training run: inherit its weights, recalibrate BatchNorm on a few
training batches (the supernet's running statistics mix every path, so they are wrong
for any single one) and measure mAP on the validation split. ``sampling="sandwich"``
(BigNAS) also trains each drawn path's largest and smallest versions, at three times
the cost per step. Neither ranks this space (BENCHMARKS.md): scored and judged on 512
validation images, the sandwich supernet ranks at 0.08 / 0.16 (two seeds, session 13),
and three times the training steps make most of its paths score higher than the same
networks trained alone but rank no better (-0.02, session 14); the uniform one ranks
at 0.199, and the 4,500-step one ranks the references trained for 2,000 steps no
better (session 15). The sharing favours deep
necks and heads and lifts the networks that are weak alone; a 100-step ``train_proxy``
(0.80) is the cheap signal that ranks. ``sampling="distill"`` is the sandwich with BigNAS's
in-place distillation: the smaller two paths also learn the largest one's class scores;
measured with two seeds, it ranked worse than the plain sandwich (BENCHMARKS.md).

Weight sharing granularity (Once-for-All / BigNAS style). At each op role (``"s3.b1"``,
``"neck.lateral0"``, ...) and for each block kind that role can take, every weight
tensor has *one* shared copy at the largest shape any op of that (role, kind) needs.
An op takes the leading channels of it (the first ``c`` output and input channels)
and, for a kernel smaller than the largest, the centred ``k x k`` window. So a 0.5x
and a 1.0x inverted residual at ``s3.b1`` share their first channels, a 3x3 depthwise
kernel is the centre of the 5x5 one, expansion 3 uses the first half of expansion 6's
hidden channels, and a path's block trains whenever its position and kind are
sampled, not only when its exact (width, kernel, expansion, SE) combination is
(BENCHMARKS.md has what one module per exact op gave). A *split* supernet
(``split``, few-shot NAS) keeps one such copy of the neck and head tensors per value
combination of the named decisions (e.g. neck and head depth); see :class:`Supernet`.
``separate`` shares less in every op: one copy per value of the named op parameters
(say expansion, SE and activation), still shared across widths (and kernels, unless
named). Keeping activation, SE and expansion apart ranked worse than sharing them
(-0.025 against 0.199, uniform, 3,000 steps, session 15): each copy trains on a
fraction of the steps, and inverted residuals were not favoured any more than before.

An inherited network is still exactly ``space.build(arch)`` loaded with those slices
(:meth:`Supernet.extract`), and the supernet's own view of a path
(:meth:`Supernet.subnet`) computes the same outputs through
``torch.func.functional_call`` on the sliced tensors. A shared tensor that no training step
ever reached (say the squeeze-excite of a position only sampled without it) has no
trained values; scoring an architecture that uses one raises
:class:`UntrainedOpsError` rather than scoring initial weights. Two kinds share less
well than the rest: a ghost module's outputs are ``[primary, cheap]``, so at another
expansion or width the same hidden channel index can be a primary channel in one op
and a cheap one in another; and a shape-keeping shuffle unit transforms the second half
of its input, so its branch's input channels shift with the width. Their paths still
compute exactly what the standalone networks do; only the sharing is looser.

Checkpoints (one ``torch.save`` file, written atomically) record the space and its
settings, the training and data settings, the shared weights, the AdamW state, the
data order and every RNG state, so :func:`train_supernet` resumes after a crash and
ends bit-identical to an uninterrupted run with the same seed (same thread count and
torch build).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from search_spaces import Architecture, OpSpec, SearchSpace
from search_spaces.base import check_assignments, is_choice
from search_spaces.cpu_detector import STAGES, CpuDetector
from search_spaces.errors import InputError, is_number
from search_spaces.files import atomic_write
from search_spaces.ops import make_op

from .base import Evaluator, register_evaluator
from .data import DataConfig
from .distillation import DEFAULT_TEMPERATURE, class_distillation
from .trainer import (PreparedData, TrainConfig, TrainingFailure, _batch, dense_loss, dense_outputs, evaluate,
                      to_tensor, train)

CHECKPOINT_FORMAT = "cpu-det-nas/supernet"
CHECKPOINT_VERSION = 2  # 2: weights shared across widths, kernels and expansions


class UntrainedOpsError(RuntimeError):
    """An architecture uses ops the supernet never trained; the message names them."""


# --------------------------------------------------------------------------- supernet


def shared_name(role: str, kind: str, tensor: str) -> str:
    """Name of the shared copy of one weight tensor: ``s3-b1__ir__dw-0-weight``
    (module names cannot contain dots)."""
    return "__".join(part.replace(".", "-") for part in (role, kind, tensor))


# Ops whose weights a split supernet keeps apart per value of the split decisions: the
# neck and the heads (roles "neck.*", "head0.*", ...); the backbone is always shared.
SPLIT_ROLES = ("neck", "head")


# Op parameters whose values a supernet can keep apart (``separate``): one copy of an
# op's tensors per value instead of one shared by all of them. The rest (widths and
# channel counts) are always shared.
SEPARABLE = ("act", "se", "expansion", "kernel")


def _variant(spec: OpSpec, separate: Sequence[str]) -> str:
    """The op's kind, followed by the values of its ``separate`` parameters, as the
    kind part of its shared tensors' names: ``ir`` or ``ir+act-relu+expansion-6``
    (:func:`_kind_of` reads the kind back)."""
    params = spec.param_dict
    return "".join([spec.kind] + [f"+{p}-{params[p]}" for p in separate if p in params])


def _kind_of(name: str) -> str:
    """The block kind in a shared tensor's name: ``ir`` in ``s3-b1__ir+expansion-6__...``."""
    return name.split("__")[1].split("+")[0]


def checked_separate(separate: Sequence[str]) -> tuple[str, ...]:
    """``separate`` in :data:`SEPARABLE`'s order (the shared names depend on it), or
    :class:`InputError` naming what is not separable."""
    if isinstance(separate, str):
        raise InputError(f"supernet option separate (--separate): give a list of parameter names, "
                         f"not the string {separate!r}")
    unknown = sorted(set(separate) - set(SEPARABLE))
    if unknown:
        raise InputError(f"supernet option separate (--separate): {unknown} are not op parameters a supernet "
                         f"can keep apart; choose among {list(SEPARABLE)}")
    return tuple(p for p in SEPARABLE if p in separate)


def _is_split(role: str, split: Sequence[str]) -> bool:
    return bool(split) and role.startswith(SPLIT_ROLES)


def _group_tag(indices: dict[str, int]) -> str:
    """Names one combination of split decision values by their index among the
    decision's choices (a value such as 0.75 cannot appear in a tensor name):
    ``@neck-depth1,head-depth2``."""
    return "@" + ",".join(f"{k.replace('.', '-')}{i}" for k, i in indices.items()) if indices else ""


def _in_group(name: str, tag: str) -> str:
    """``shared_name`` with the group tag after the role, so names still end with the tensor."""
    role, rest = name.split("__", 1)
    return f"{role}{tag}__{rest}"


def _ungrouped(name: str) -> str:
    """The inverse of :func:`_in_group`: the name without its group tag (if any)."""
    role, rest = name.split("__", 1)
    return f"{role.split('@', 1)[0]}__{rest}"


def take(shared: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The part of ``shared`` an op of ``shape`` uses: leading slices, except the two
    kernel dimensions of a conv weight, which take the centred window. A view, so
    gradients and in-place BatchNorm statistics updates reach ``shared``."""
    index = []
    for dim, (have, want) in enumerate(zip(shared.shape, shape)):
        start = (have - want) // 2 if shared.dim() == 4 and dim >= 2 else 0
        index.append(slice(start, start + want))
    return shared[tuple(index)]


def _skeleton(spec: OpSpec) -> nn.Module:
    """The op's module without weights of its own (on the meta device); the tensors
    come from the supernet at every call. An op with non-persistent buffers (the decode
    grid) is built for real: those are constants, not shared weights."""
    with torch.device("meta"):
        module = make_op(spec)
    if {n for n, _ in module.named_buffers()} - set(module.state_dict()):
        with torch.random.fork_rng(devices=[]):  # its random init is irrelevant: leave the caller's RNG alone
            module = make_op(spec)
    return module


class _SharedOp(nn.Module):
    """One op of a path, computing with slices of the supernet's shared tensors."""

    def __init__(self, skeleton: nn.Module, tensors: Callable[[], dict[str, torch.Tensor]]):
        super().__init__()
        object.__setattr__(self, "skeleton", skeleton)  # not a submodule: its state is not ours
        self.tensors = tensors

    def forward(self, *inputs):
        self.skeleton.train(self.training)
        return functional_call(self.skeleton, self.tensors(), inputs)


@dataclass(frozen=True)
class _Layout:
    """Which shared tensors a space's supernet has: ``source[name]``, an op whose tensor
    ``tensor_of[name]`` has the largest shape (it initialises the shared one);
    ``parameters``, the names that are weights (the rest are BatchNorm statistics)."""
    source: dict[str, OpSpec]
    tensor_of: dict[str, str]
    parameters: frozenset[str]


_LAYOUTS: dict[str, _Layout] = {}


def _layout(space: SearchSpace, separate: Sequence[str] = ()) -> _Layout:
    """The :class:`_Layout` of ``space``'s supernet keeping ``separate`` apart, worked out
    once per process (it builds a skeleton of each of the space's ~3,000 ops, about 6 s)."""
    # block_kinds is not among the settings (a config can restrict it), but changes the ops.
    cache_key = f"{space.name}{sorted(space.settings().items())}{getattr(space, 'block_kinds', None)}{separate}"
    if cache_key in _LAYOUTS:
        return _LAYOUTS[cache_key]
    largest: dict[str, torch.Size] = {}
    by_shape: dict[str, dict[torch.Size, OpSpec]] = {}
    tensor_of: dict[str, str] = {}
    parameters: set[str] = set()
    seen: set[tuple] = set()
    for spec in space.enumerate_ops(per_role=True):
        # The activation changes no tensor's shape: one of each pair is enough (unless
        # kept apart, when the variant names it).
        variant = _variant(spec, separate)
        shape_key = (spec.role, variant, spec.input_shapes, tuple(p for p in spec.params if p[0] != "act"))
        if shape_key in seen:
            continue
        seen.add(shape_key)
        skeleton = _skeleton(spec)
        own_parameters = {n for n, _ in skeleton.named_parameters()}
        for tensor, value in skeleton.state_dict().items():
            name = shared_name(spec.role, variant, tensor)
            tensor_of[name] = tensor
            if tensor in own_parameters:
                parameters.add(name)
            have = largest.get(name, value.shape)
            largest[name] = torch.Size(max(a, b) for a, b in zip(have, value.shape))
            by_shape.setdefault(name, {}).setdefault(value.shape, spec)
    source = {}
    for name, shape in largest.items():
        if shape not in by_shape[name]:  # no single op spans every dimension: never the case in cpu_detector
            raise ValueError(f"no op of {name} has its largest shape {tuple(shape)}; the supernet cannot initialise it")
        source[name] = by_shape[name][shape]
    _LAYOUTS[cache_key] = _Layout(source, tensor_of, frozenset(parameters))
    return _LAYOUTS[cache_key]


class Supernet(nn.Module):
    """Shared weights for every path of a detector space (see the module docstring).

    ``subnet(arch)`` is a :class:`CpuDetector` *view* computing with the shared tensors
    (training the view trains the supernet); ``extract(arch)`` is a state dict that
    ``space.build(arch).load_state_dict`` accepts, giving the same outputs.

    The shared tensors are created at construction, for every op the space can emit,
    initialised from the space's own op initialisation (the draw uses the global torch
    RNG: seed it first). ``trained_steps`` counts, per shared weight (in the order of
    ``weights``), the training steps that gave it a gradient (after :meth:`inherit`,
    the source checkpoint's count included).

    The views of ``subnet`` own no parameters (``view.parameters()`` is empty): optimise
    ``supernet.weights``.

    ``split`` (few-shot NAS, Zhao et al. 2021, applied to the neck and head only): decision
    names whose every value combination gets its own copy of the neck and head tensors
    (a path uses its combination's copy); the backbone stays shared. Why: trained fully
    shared, the supernet scores deeper necks and heads far above what training them
    alone gives (session 10, ``bench/proxy_marginals.py`` over the 32 networks of
    bench/proxy_ranking.py: Spearman of head depth with the sandwich supernet's score
    +0.52, with their trained mAP +0.04; neck depth +0.42 against -0.23), so one shared
    neck and head serve every depth badly. Split by both (uniform sampling, 3,000 steps)
    it ranked at 0.491 with seed 0 but 0.051 with seed 1 (BENCHMARKS.md): each group's
    neck and head train only on the steps that sample it (1/9 of them for neck and head
    depth under uniform sampling), too few to rank repeatably. Started from a trained
    unsplit supernet (:meth:`inherit`) the groups repeat across seeds (0.71 / 0.63) but
    rank no better than that supernet (session 12). With ``sandwich`` sampling the largest
    and smallest paths always train the deepest and the shallowest group, so the groups
    train unevenly: use uniform sampling with a split.

    ``separate`` (op parameters among :data:`SEPARABLE`): an op's tensors get one copy
    per value of these parameters (their names carry the values, ``s3-b1__ir+expansion-6__...``)
    instead of one per position and kind; widths, and kernels unless named, still share.
    """

    def __init__(self, space: SearchSpace, split: Sequence[str] = (), separate: Sequence[str] = ()):
        super().__init__()
        # Over the whole space even for a narrowed one (cpu_detector's hold): its tensors
        # and groups match a checkpoint of the whole space, and every held path is in it.
        space = space.unrestricted()
        self.space = space
        decisions = space.decisions()
        if isinstance(split, str):
            raise InputError(f"supernet split: give a list of decision names, not the string {split!r}")
        self.separate = checked_separate(separate)
        self.split = tuple(dict.fromkeys(d.strip() for d in split))  # in order, without repeats
        unknown = [d for d in self.split if d not in decisions]
        if unknown:
            raise InputError(f"supernet split: {unknown} are not decisions of space {space.name!r} "
                             f"(e.g. neck.depth, head.depth)")
        self._choices = {d: list(decisions[d]) for d in self.split}
        groups = [_group_tag(dict(zip(self.split, indices)))
                  for indices in itertools.product(*(range(len(c)) for c in self._choices.values()))]
        self.weights = nn.ParameterDict()
        self.statistics = nn.Module()  # BatchNorm running statistics, shared like the weights
        self._skeletons: dict[tuple[str, str], nn.Module] = {}
        layout = _layout(space, self.separate)
        self._plans: dict[tuple[str, str, str], list[tuple[str, str, torch.Size]]] = {}
        built: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        for name, spec in layout.source.items():
            if (spec.role, spec.key) not in built:
                built[(spec.role, spec.key)] = make_op(spec).state_dict()
            value = built[(spec.role, spec.key)][layout.tensor_of[name]]
            for tag in (groups if _is_split(spec.role, self.split) else [""]):
                copy = value.detach().clone()  # each group starts from the same initial values
                if name in layout.parameters:
                    self.weights[_in_group(name, tag)] = nn.Parameter(copy)
                else:
                    self.statistics.register_buffer(_in_group(name, tag), copy)
        self._weight_index = {name: i for i, name in enumerate(self.weights)}
        self.register_buffer("trained_steps", torch.zeros(len(self.weights), dtype=torch.long))

    # ----- paths -----------------------------------------------------------------------
    def _skeleton(self, spec: OpSpec) -> nn.Module:
        key = (spec.role, spec.key)  # per role: two positions with the same op are two modules
        if key not in self._skeletons:
            self._skeletons[key] = _skeleton(spec)
        return self._skeletons[key]

    def _shared(self, name: str) -> torch.Tensor:
        return self.weights[name] if name in self.weights else getattr(self.statistics, name)

    def _tag(self, spec: OpSpec, arch: Architecture) -> str:
        """The group tag of ``spec``'s shared tensors in ``arch``: its split decisions'
        values for a neck or head op of a split supernet, else none."""
        if not _is_split(spec.role, self.split):
            return ""
        return _group_tag({d: self._choices[d].index(arch.sample[d]) for d in self.split})

    def _plan(self, spec: OpSpec, tag: str) -> list[tuple[str, str, torch.Size]]:
        """``(tensor name in the op, shared name, shape)`` for each tensor of ``spec`` in
        the group ``tag`` (see :meth:`_tag`)."""
        key = (spec.role, spec.key, tag)
        if key not in self._plans:
            variant = _variant(spec, self.separate)
            self._plans[key] = [(tensor, _in_group(shared_name(spec.role, variant, tensor), tag), value.shape)
                                for tensor, value in self._skeleton(spec).state_dict().items()]
        return self._plans[key]

    def _slices(self, spec: OpSpec, arch: Architecture) -> Callable[[], dict[str, torch.Tensor]]:
        plan = self._plan(spec, self._tag(spec, arch))
        return lambda: {tensor: take(self._shared(name), shape) for tensor, name, shape in plan}

    def op_state(self, spec: OpSpec) -> dict[str, torch.Tensor]:
        """The state dict ``make_op(spec)`` accepts with this supernet's weights and
        BatchNorm statistics for that op (copies): what any path holding ``spec`` inherits.
        An op whose tensors are split by group has none without an architecture:
        :class:`InputError`."""
        if _is_split(spec.role, self.split):
            raise InputError(f"op {spec.role} ({spec.kind}): a split supernet keeps one copy per value of "
                             f"{list(self.split)}, so it has no single state for it; use an unsplit supernet")
        return {tensor: take(self._shared(name), shape).detach().clone() for tensor, name, shape in self._plan(spec, "")}

    def missing(self, arch: Architecture) -> list[tuple[OpSpec, str]]:
        """``(op, tensor)`` for each weight of ``arch`` (in walk order) that no training
        step ever gave a gradient, e.g. the SE of a position only sampled without SE.
        (Counted per shared tensor: a tensor trained only through narrower ops counts.)"""
        return [(spec, tensor) for spec in self.space.ops(arch)
                for tensor, name, _ in self._plan(spec, self._tag(spec, arch))
                if name in self._weight_index and self.trained_steps[self._weight_index[name]] == 0]

    def count_trained(self) -> None:
        """After a backward pass: count a step for every shared weight with a gradient."""
        got = torch.tensor([p.grad is not None for p in self.weights.values()], dtype=torch.long)
        self.trained_steps += got

    def inherit(self, record: dict, path) -> None:
        """Start every tensor from a trained checkpoint's (few-shot NAS initialises its
        sub-supernets from the one-shot supernet, then fine-tunes them): a tensor takes
        the checkpoint's tensor of the same name, or, for a split group's copy, the
        checkpoint's unsplit tensor of that name; so each group of a split supernet
        starts from an unsplit supernet's neck and head. Training counts come along, so
        inherited weights count as trained. :class:`InputError` naming ``path``, with
        nothing changed, when the checkpoint lacks a tensor or holds it at another shape."""
        theirs = record["weights"]
        counts = dict(zip(record["weight_names"], theirs["trained_steps"].tolist()))
        ours = self.state_dict()
        sources = {}  # checked in full before anything is copied
        for key, value in ours.items():
            if key == "trained_steps":
                continue
            kind, name = key.split(".", 1)  # "weights.<name>" or "statistics.<name>"
            source = next((f"{kind}.{n}" for n in (name, _ungrouped(name)) if f"{kind}.{n}" in theirs), None)
            if source is None or theirs[source].shape != value.shape:
                held = f"holds {source!r} at {tuple(theirs[source].shape)}" if source else f"has no {key!r}"
                raise InputError(f"cannot start from supernet checkpoint {path}: it {held}, this supernet needs "
                                 f"{tuple(value.shape)}; use a supernet of the same space and block kinds, "
                                 "unsplit or with the same split, and with the same separate")
            sources[key] = source
        with torch.no_grad():
            for key, source in sources.items():
                ours[key].copy_(theirs[source])
                kind, name = key.split(".", 1)
                if kind == "weights":
                    self.trained_steps[self._weight_index[name]] = counts[source.split(".", 1)[1]]

    def check_trained(self, arch: Architecture) -> None:
        """Raise :class:`UntrainedOpsError` naming the ops of ``arch`` that were never
        trained (train longer, or score only architectures it has seen)."""
        absent = self.missing(arch)
        if absent:
            shown = "; ".join(f"{spec.role} ({spec.kind}): {tensor}" for spec, tensor in absent[:3])
            raise UntrainedOpsError(
                f"the supernet never trained {len(absent)} weight(s) of this architecture ({shown}"
                + (", ..." if len(absent) > 3 else "") + "); train it for more steps")

    def subnet(self, arch: Architecture) -> CpuDetector:
        """A :class:`CpuDetector` computing with this supernet's tensors (no copy)."""
        modules = {}
        for spec in self.space.ops(arch):
            skeleton = self._skeleton(spec)
            # An op without state (merges, the decode) is used as it is: callers reach
            # into the decode's methods, which a wrapper would hide.
            modules[spec.role] = _SharedOp(skeleton, self._slices(spec, arch)) if skeleton.state_dict() else skeleton
        return CpuDetector(modules, arch, self.space.settings()["num_classes"])

    def extract(self, arch: Architecture) -> dict[str, torch.Tensor]:
        """State dict of ``space.build(arch)`` with the inherited weights (copies, so
        later training of the supernet does not change it)."""
        specs = {spec.role: spec for spec in self.space.ops(arch)}
        skeletons = {role: self._skeleton(spec) for role, spec in specs.items()}
        role_of = {id(module): role for role, module in skeletons.items()}
        layout = CpuDetector(skeletons, arch, self.space.settings()["num_classes"])
        state = {}
        for prefix, module in layout.named_modules():
            if id(module) in role_of:
                for tensor, value in self._slices(specs[role_of[id(module)]], arch)().items():
                    state[f"{prefix}.{tensor}"] = value.detach().clone()
        return state


# --------------------------------------------------------------------------- checkpoints


def _train_settings(cfg: TrainConfig) -> dict:
    """Everything about training that a resumed run must share (``time_budget_s`` is not:
    it only limits one invocation)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "time_budget_s"}


def load_checkpoint(path: str | os.PathLike, mmap: bool = True) -> dict:
    """The checkpoint's record; memory-mapped by default (the optimiser state, which
    scoring never needs, is then not read into memory).

    Raises :class:`InputError` naming the file when it is missing or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"supernet checkpoint {path} does not exist; "
                         f"train one with `nas supernet train --steps N --out {path}`")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated, not a zip, not a torch file: all the same to the user
        raise InputError(f"{path} is not a readable supernet checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a supernet checkpoint (written by `nas supernet train`)")
    if record.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: supernet checkpoint version {record.get('version')!r}; this version reads "
                         f"{CHECKPOINT_VERSION} (version 2 shares weights across widths and kernels); "
                         "train it again with `nas supernet train`")
    return record


def check_checkpoint(record: dict, space: SearchSpace, path) -> None:
    """Raise :class:`InputError` naming ``path`` unless the checkpoint is for ``space``
    with the same settings (the classes change the head's tensors; the input size
    changes no tensor but every path's statistics) and block kinds (not among the
    settings: read from the stage blocks' tensor names, ``s3-b1__ir__...``)."""
    if record["space"] != space.name or record["settings"] != space.settings():
        raise InputError(
            f"supernet checkpoint {path} was trained for space {record['space']!r} with settings "
            f"{record['settings']}, not {space.name!r} with {space.settings()}; "
            "train a supernet for this space or use the matching checkpoint")
    block_roles = {f"{st.name}-b{b}" for st in STAGES for b in range(max(st.depths))}
    kinds = {_kind_of(name) for name in record["weight_names"] if name.split("__")[0] in block_roles}
    if kinds != set(space.block_kinds):
        raise InputError(f"supernet checkpoint {path} was trained with block kinds {sorted(kinds)}, the space has "
                         f"{sorted(space.block_kinds)}; train a supernet with the space's block kinds")


def load_weights(supernet: Supernet, record: dict, path) -> None:
    """Load a checkpoint's shared tensors into ``supernet``; :class:`InputError` naming
    ``path`` if the checkpoint holds other tensors (a space with other block kinds, or
    another version of the ops), rather than restoring optimiser moments by position
    onto the wrong weights."""
    if record["weight_names"] != list(supernet.weights):
        theirs, ours = set(record["weight_names"]), set(supernet.weights)
        raise InputError(f"supernet checkpoint {path} holds other shared tensors than this space's supernet "
                         f"({len(theirs - ours)} not in this space, {len(ours - theirs)} missing; e.g. "
                         f"{sorted(theirs ^ ours)[:2]}): it was trained for other block kinds or ops; "
                         "train a supernet for this space")
    supernet.load_state_dict(record["weights"])


def load_supernet(record: dict, space: SearchSpace, path) -> Supernet:
    """The checkpoint's supernet for ``space`` (its split and separate included), weights loaded; the
    caller's torch RNG is left as it was (the initial draw is overwritten anyway)."""
    check_checkpoint(record, space, path)
    with torch.random.fork_rng(devices=[]):
        supernet = Supernet(space, record["train"].get("split", ()), record["train"].get("separate", ()))
    load_weights(supernet, record, path)
    return supernet


# --------------------------------------------------------------------------- training


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The trainer's schedule: linear warm-up, then cosine decay to 0 at ``cfg.steps``."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / max(1, cfg.steps)))


def make_optimizer(supernet: Supernet, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over every shared weight, in the supernet's (deterministic) order."""
    return torch.optim.AdamW(supernet.weights.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)


SAMPLING_RULES = ("uniform", "sandwich", "distill")


def step_paths(space: SearchSpace, rng, rule: str = "uniform") -> list[Architecture]:
    """The paths one training step trains, drawn from ``rng``.

    ``uniform`` (SPOS): one architecture, uniform per decision (``space.sample``'s draw).
    ``sandwich`` (BigNAS): that architecture plus its largest and smallest versions:
    every ordered decision (numbers and booleans: widths, depths, kernels, expansions,
    SE, PAN, neck and head sizes) at its largest or smallest choice, the categorical
    ones (block kinds, activations) as drawn. Without it the channels only wide paths
    use are trained a fraction of the time and tuned to narrow neighbours, so wide
    and narrow paths score alike. ``distill`` trains the sandwich's paths too (see
    :func:`train_step` for what it adds). The draw is the same in every rule, so the
    sampled paths are the same sequence.
    """
    decisions = space.decisions()
    drawn = {k: rng.choice(choices) for k, choices in decisions.items()}
    arch = space.from_sample(drawn)
    if rule == "uniform":
        return [arch]

    def extreme(pick) -> Architecture:
        ordered = {k: pick(c) for k, c in decisions.items() if all(isinstance(v, (int, float)) for v in c)}
        return space.from_sample({**drawn, **ordered})

    return [extreme(max), extreme(min), arch]  # the largest first: distill's teacher


def train_step(supernet: Supernet, opt: torch.optim.Optimizer, archs: list[Architecture], images: torch.Tensor,
               targets: list[dict], cfg: TrainConfig, lr: float, distill: bool = False) -> float:
    """One SPOS step on the paths ``archs`` (one, or a sandwich): the detection loss
    through each path on the same batch, gradients summed, clip, AdamW step.

    ``distill`` (BigNAS's in-place distillation): every path after the first also learns
    the first path's class scores (:func:`evaluators.distillation.class_distillation`,
    weight 1, temperature ``DEFAULT_TEMPERATURE``; the teacher's outputs are detached,
    so it learns from the labels alone). BigNAS's reason: a shared weight pulled by every
    path toward the same teacher outputs is pulled less in opposite directions. Here it
    ranked worse than the plain sandwich with both seeds (BENCHMARKS.md, session 13).

    Only the shared tensors of the path's (role, kind)s get gradients; AdamW skips the
    others, so they are untouched (no weight decay either). Inside a shared tensor the
    channels the path did not use get a zero gradient: Adam's momentum still moves them
    a little, as in Once-for-All, and the decoupled weight decay shrinks them by
    ``lr * weight_decay`` (at the defaults, to about 0.74 over 3,000 steps if they were
    never used, less for the channels every width shares). Returns the last path's
    loss (the sampled one; with ``distill``, its distillation term included, so the
    figure does not compare with the other rules'); raises :class:`TrainingFailure` on NaN/inf.
    """
    opt.zero_grad(set_to_none=True)
    teacher_logits = None
    for arch in archs:
        view = supernet.subnet(arch)
        view.train()
        logits, boxes = dense_outputs(view, images)
        loss = dense_loss(view, logits, boxes, targets)["loss"]
        if teacher_logits is not None:
            loss = loss + class_distillation(logits, teacher_logits, DEFAULT_TEMPERATURE)
        elif distill:
            teacher_logits = logits.detach()
        if not torch.isfinite(loss):
            raise TrainingFailure(f"supernet loss became {loss.item()} (lr {lr:.2e}) on {arch.id}")
        loss.backward()
    supernet.count_trained()
    torch.nn.utils.clip_grad_norm_([p for p in supernet.weights.values() if p.grad is not None], cfg.grad_clip)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
    return float(loss.detach())


@dataclass
class SupernetRun:
    """What :func:`train_supernet` did: steps done of ``steps`` (fewer when the time
    budget ran out; run again to resume), per-step losses of the whole run so far."""
    supernet: Supernet
    path: Path
    step: int
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.step >= self.steps


class _State:
    """Everything a step changes, so that it can be saved and restored as one."""

    def __init__(self, supernet: Supernet, cfg: TrainConfig, n_train: int):
        import random

        self.supernet = supernet
        self.opt = make_optimizer(supernet, cfg)
        self.step = 0
        self.seconds = 0.0
        self.losses: list[float] = []
        self.arch_rng = random.Random(cfg.seed)         # which path each step trains
        self.data_rng = np.random.default_rng(cfg.seed)  # batch order and augmentation
        self.order = self.data_rng.permutation(n_train)
        self.cursor = 0

    def next_indices(self, batch_size: int) -> np.ndarray:
        """The trainer's epoch order: a fresh permutation whenever the last one runs out."""
        if self.cursor + batch_size > len(self.order):
            self.order, self.cursor = self.data_rng.permutation(len(self.order)), 0
        idx = self.order[self.cursor:self.cursor + batch_size]
        self.cursor += batch_size
        return idx

    def to_record(self) -> dict:
        return {"step": self.step, "seconds": self.seconds, "losses": list(self.losses),
                "weight_names": list(self.supernet.weights), "weights": self.supernet.state_dict(),
                "optimizer": self.opt.state_dict(),
                "order": torch.from_numpy(self.order.astype(np.int64)), "cursor": self.cursor,
                "rng": {"python": self.arch_rng.getstate(), "numpy": self.data_rng.bit_generator.state,
                        "torch": torch.get_rng_state()}}

    def restore(self, record: dict, path) -> None:
        load_weights(self.supernet, record, path)
        self.opt.load_state_dict(record["optimizer"])
        self.step, self.seconds, self.losses = int(record["step"]), float(record["seconds"]), list(record["losses"])
        self.order, self.cursor = record["order"].numpy().copy(), int(record["cursor"])
        self.arch_rng.setstate(record["rng"]["python"])
        self.data_rng.bit_generator.state = record["rng"]["numpy"]
        torch.set_rng_state(record["rng"]["torch"])


def train_supernet(space: SearchSpace, data_cfg: DataConfig, steps: int, batch_size: int, seed: int,
                   out_path: str | os.PathLike, time_budget_s: float | None = None, progress: bool = True,
                   save_every: int = 100, lr: float = 4e-3, weight_decay: float = 0.05, warmup_steps: int = 30,
                   sampling: str = "uniform", split: Sequence[str] = (), separate: Sequence[str] = (),
                   init_from: str | os.PathLike | None = None, callback: Callable[[int, float], None] | None = None) -> SupernetRun:
    """Train a supernet of ``space`` with SPOS for ``steps`` steps and save it to ``out_path``.

    Step ``i`` trains ``step_paths(space, rng, sampling)`` (``rng = random.Random(seed)``,
    drawn in order) on one batch (the trainer's augmentation and schedule); ``sampling``
    is ``uniform`` (one path), ``sandwich`` (three, so a step costs three times as much)
    or ``distill`` (the sandwich with in-place distillation from its largest path). The checkpoint is written
    atomically every ``save_every`` steps and at the end; if ``out_path`` already holds
    a checkpoint of the same space, data and settings, training resumes from it (a
    finished one is returned as is); different settings raise :class:`InputError`.
    ``split`` (decision names, e.g. ``("neck.depth", "head.depth")``) keeps the neck and
    head weights apart per combination of those decisions' values (:class:`Supernet`);
    ``separate`` (op parameters among :data:`SEPARABLE`, e.g. ``("expansion",)``) keeps an
    op's tensors apart per value of those parameters instead of sharing them.
    ``init_from`` (a checkpoint of the same space, block kinds and ``separate``, unsplit
    or with the same split) gives the starting weights instead of a fresh draw
    (:meth:`Supernet.inherit`): few-shot NAS's fine-tuning of split groups from a
    trained one-shot supernet. The optimiser and the schedule start afresh. The file
    is read only at the start; a resumed run must name the same file (compared by
    resolved path).
    ``time_budget_s`` stops this invocation early (after saving); run again to go on.
    ``callback(step, loss)`` is called after each step (progress reporting, tests).
    """
    path = Path(out_path)
    if sampling not in SAMPLING_RULES:
        raise InputError(f"sampling must be one of {list(SAMPLING_RULES)}, got {sampling!r}")
    if steps < 1 or batch_size < 1 or save_every < 1:
        raise InputError(f"steps, batch_size and save_every must be >= 1, got {steps}, {batch_size}, {save_every}")
    if not lr > 0:
        raise InputError(f"the learning rate must be > 0, got {lr}")
    if not 0 <= weight_decay < math.inf:
        raise InputError(f"the weight decay (--weight-decay) must be a number >= 0 (0: none), got {weight_decay}")
    separate = checked_separate(separate)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      warmup_steps=warmup_steps, seed=seed)
    settings = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "space": space.name,
                "settings": space.settings(),
                # split and separate only when set, so checkpoints from before them still resume
                "train": {**_train_settings(cfg), "sampling": sampling, **({"split": list(split)} if split else {}),
                          **({"separate": list(separate)} if separate else {}),
                          **({"init_from": str(Path(init_from).resolve())} if init_from else {})},
                "data": dataclasses.asdict(data_cfg)}
    record = None
    if path.exists():  # checked before the data are prepared, so a wrong --out fails at once
        # Read into memory: the optimiser keeps the loaded moment tensors as they are,
        # and they should not live in a mapping of a file the next save replaces.
        record = load_checkpoint(path, mmap=False)
        check_checkpoint(record, space, path)
        for key in ("train", "data"):
            if record[key] != settings[key]:
                was, now = record[key], settings[key]
                diff = ", ".join(f"{k}={was.get(k)!r} (now {now.get(k)!r})"
                                 for k in sorted(was.keys() | now.keys()) if was.get(k) != now.get(k))
                raise InputError(f"{path} holds a supernet trained with other {key} settings: {diff}; "
                                 "resume with the same settings or choose another --out")
    start_from = None
    if init_from and record is None:
        try:
            start_from = load_checkpoint(init_from)
            check_checkpoint(start_from, space, init_from)
        except InputError as exc:
            raise InputError(f"init_from: {exc}") from None
        theirs = tuple(start_from["train"].get("separate", ()))
        if theirs != separate:  # their tensors would be named and shaped otherwise: refuse before any work
            raise InputError(f"init_from: {init_from} was trained with separate={list(theirs)}, this run has "
                             f"{list(separate)}; pass the same --separate")
    train_data, _ = data_cfg.load(space.settings()["input_size"])
    _check_data(train_data, space, data_cfg)
    if len(train_data) < batch_size:
        raise InputError(f"the training split has {len(train_data)} images, fewer than batch_size {batch_size}")

    torch.manual_seed(seed)  # initial shared weights
    state = _State(Supernet(space, split, separate), cfg, len(train_data))
    if record is not None:
        state.restore(record, path)
    elif start_from is not None:
        state.supernet.inherit(start_from, init_from)
        del start_from  # unmaps the file

    def save() -> None:
        record = {**settings, **state.to_record()}
        atomic_write(path, lambda f: torch.save(record, f))

    from tqdm import tqdm

    bar = tqdm(total=steps, initial=state.step, desc="supernet", unit="step", disable=not progress, leave=False)
    start = time.monotonic()
    seconds_before = state.seconds
    dirty = False
    while state.step < steps:
        archs = step_paths(space, state.arch_rng, sampling)
        images, targets = _batch(train_data, state.next_indices(batch_size), cfg, state.data_rng)
        loss = train_step(state.supernet, state.opt, archs, images, targets, cfg, lr_at(state.step, cfg),
                          distill=sampling == "distill")
        state.step += 1
        state.losses.append(loss)
        state.seconds = seconds_before + time.monotonic() - start
        dirty = True
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if callback is not None:
            callback(state.step, loss)
        if state.step % save_every == 0:
            save()
            dirty = False
        if time_budget_s is not None and time.monotonic() - start > time_budget_s:
            break
    bar.close()
    if dirty or not path.exists():
        save()
    return SupernetRun(state.supernet, path, state.step, steps, state.seconds, state.losses)


def _check_data(data: PreparedData, space: SearchSpace, data_cfg: DataConfig) -> None:
    expected = space.settings()["num_classes"]
    if data.num_classes != expected:
        raise InputError(f"data {data_cfg.source!r} has {data.num_classes} classes but the space is set up for "
                         f"{expected} (num_classes); make them agree")


# --------------------------------------------------------------------------- scoring


def recalibrate_bn(model: nn.Module, images: np.ndarray, batch_size: int) -> None:
    """Replace every BatchNorm's running statistics by the exact average over ``images``
    (uint8 NHWC) in train-mode forwards, as SPOS does before evaluating a path. Leaves
    the model in eval mode; no parameter changes."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches, not an EMA
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model.forward_levels(to_tensor(images[start:start + batch_size]))
    model.eval()


def calibration_images(data: PreparedData, n: int) -> np.ndarray:
    """A fixed random subset of ``n`` training images (the same for every candidate, so
    scores compare; random so that a dataset sorted by scene does not bias it)."""
    n = min(n, len(data))
    idx = np.sort(np.random.default_rng(0).choice(len(data), n, replace=False))
    return data.images[idx]


@register_evaluator("supernet")
class SupernetScore(Evaluator):
    """``supernet_map`` and ``supernet_map50``: mAP of a candidate with weights inherited
    from a trained supernet, after recalibrating BatchNorm on ``bn_batches`` batches of
    ``batch_size`` training images.

    ``finetune_steps`` (default 0: none) trains the inherited network alone for that
    many steps of ``batch_size`` training images first (the trainer's defaults otherwise:
    AdamW at ``finetune_lr`` with weight decay, cosine-decayed, no warm-up, flip and
    brightness augmentation, seed 0; repeatable at a fixed thread count, so set
    ``threads``), as one-shot evaluations that fine-tune each
    candidate briefly do, to loosen the shared weights' compromise before BatchNorm
    is recalibrated and mAP measured. Measured (BENCHMARKS.md, session 18): it lifted
    the uniform supernets' ranking (0.199 to 0.344 at 10 steps, 0.429 at 30), moved the
    two sandwich seeds in opposite directions (0.082 to -0.001, 0.157 to 0.218), kept
    the head-depth bias, never reached params or FLOPs, and took a median of
    7.47-13.03 s per candidate against 4.98-6.10 s; hence off by default.

    What it ranks (BENCHMARKS.md, session 19; two samples of 32 networks): with the neck
    and head held (the space's ``hold``), six supernets of the whole space ranked the
    backbones at 0.398 to 0.834 against 400-step training, five of them above params and
    FLOPs, and four of them 0.797 to 0.878 on the second sample; with the neck and head
    free, at -0.022 to 0.199 on the first sample, below them (they over-rate deep necks
    and heads; one supernet of session 20 ranks the second free sample at 0.399). A held
    space is scored by a supernet of the whole space (:meth:`Supernet` is built over
    ``space.unrestricted()``). Cost (session 20, AMD EPYC, 1 thread): a median of 2.78 s
    per candidate on 512 validation images.

    ``substitute`` (decision: value; default none) scores each candidate with those
    decisions replaced, e.g. the neck and head DARTS holds: the candidate is then scored
    as its backbone under that neck and head, where the supernet ranks (above), and its
    own neck and head play no part in the score. Its weights are kept for the engine only
    when the candidate already has those decisions (otherwise they are another
    network's, and a winner without them is exported untrained). A latency-aware search
    then moves to the cheapest necks and heads, which cost it nothing in accuracy. With
    DARTS's neck and head, two supernets ranked two samples of free networks at 0.710 /
    0.826 and 0.802 / 0.827 against 400-step training, above params, FLOPs and NASWOT
    (BENCHMARKS.md, session 20). A substitute that contradicts the space's ``hold`` is
    refused. Each substituted network is scored once per evaluator (scoring is
    deterministic); the candidates that map to it get the same scores.

    ``checkpoint`` is a file from ``nas supernet train``; ``data`` (DataConfig fields)
    defaults to the data the supernet was trained on; ``split`` and ``separate`` come
    from the checkpoint too. The checkpoint is read once. An
    architecture with a (role, kind) the supernet never sampled raises
    :class:`UntrainedOpsError` (the trial fails).
    """

    cost = "train"

    def __init__(self, checkpoint: str, data: dict | None = None, bn_batches: int = 4, batch_size: int = 16,
                 threads: int | None = None, finetune_steps: int = 0, finetune_lr: float = 1e-3,
                 substitute: Mapping | None = None):
        if bn_batches < 1 or batch_size < 1:
            raise InputError(f"evaluator 'supernet': bn_batches and batch_size must be >= 1, got {bn_batches}, {batch_size}")
        if not (is_number(finetune_steps, int) and finetune_steps >= 0 and is_number(finetune_lr) and finetune_lr > 0):
            raise InputError(f"evaluator 'supernet': finetune_steps must be a whole number >= 0 (0: no fine-tuning) "
                             f"and finetune_lr a number > 0, got {finetune_steps!r}, {finetune_lr!r}")
        self.finetune = TrainConfig(steps=finetune_steps, batch_size=batch_size, lr=finetune_lr, warmup_steps=0,
                                    seed=0)
        if substitute is not None and not isinstance(substitute, Mapping):
            raise InputError(f"evaluator 'supernet': substitute must be a mapping of decision: value "
                             f"(e.g. {{head.depth: 2}}), got {substitute!r}")
        self.substitute = dict(substitute or {})
        self.path = Path(checkpoint)
        self.data_options = data
        self.bn_batches, self.batch_size, self.threads = bn_batches, batch_size, threads
        self._record = load_checkpoint(self.path)  # fail at construction on a missing/bad file
        self._supernet: Supernet | None = None
        self._data: tuple[PreparedData, PreparedData] | None = None
        # Substituted networks already scored: many candidates map to one (every neck and
        # head of a backbone), and scoring is deterministic, so each is scored once.
        self._substituted_scores: dict[str, dict] = {}

    def prepare(self, space: SearchSpace) -> Supernet:
        """Load the supernet and the data for ``space`` (the first call does it anyway;
        calling it first keeps that one-off cost out of a candidate's time)."""
        self.check(space)
        if self._supernet is None or self._supernet.space.settings() != space.settings():
            self._supernet = load_supernet(self._record, space, self.path)
            self._substituted_scores = {}
            cfg = DataConfig(**(self.data_options if self.data_options is not None else self._record["data"]))
            self._data = cfg.load(space.settings()["input_size"])
            _check_data(self._data[0], space, cfg)
        return self._supernet

    def check(self, space: SearchSpace) -> None:
        """InputError for a checkpoint of other space settings, and for a substituted
        decision the whole space lacks or value it does not offer, or one that ``space``
        narrows (its ``hold``) to another value: the search would be scored on networks
        it can never produce."""
        check_checkpoint(self._record, space, self.path)
        whole, narrowed = space.unrestricted().decisions(), space.decisions()
        check_assignments(self.substitute, whole, "evaluator 'supernet': substitute", space.name,
                          ", ".join(n for n in whole if n.startswith(("neck.", "head."))))
        for name, value in self.substitute.items():
            if not is_choice(value, narrowed[name]):
                raise InputError(f"evaluator 'supernet': substitute: {name} = {value!r} but the space holds it at "
                                 f"{narrowed[name]}; substitute only what the search leaves free, or drop the hold")

    def scored_architecture(self, arch: Architecture, space: SearchSpace) -> Architecture:
        """The network a candidate is scored as: ``arch`` itself, or with ``substitute``'s
        decisions replaced, then canonicalised in the whole space (so a substituted
        decision the result leaves inactive, e.g. ``neck.kernel`` at ``neck.depth: 0``,
        takes its default there)."""
        if not self.substitute:
            return arch
        return space.unrestricted().canonicalize(arch.replace(**self.substitute))

    def __call__(self, arch: Architecture, space: SearchSpace):
        if self.threads:
            torch.set_num_threads(self.threads)
        supernet = self.prepare(space)
        train_data, val_data = self._data
        whole = space.unrestricted()
        scored = self.scored_architecture(arch, space)
        # As train_proxy: the engine saves the best candidate's weights from last_model,
        # unless the substitute made the model another network than the candidate.
        other_network = bool(self.substitute) and scored != whole.canonicalize(arch)
        if other_network and scored.id in self._substituted_scores:
            self.last_model = None
            return dict(self._substituted_scores[scored.id])
        supernet.check_trained(scored)
        model = whole.build(scored)
        model.load_state_dict(supernet.extract(scored))
        if self.finetune.steps:
            with torch.random.fork_rng(devices=[]):  # train() seeds torch: leave the caller's RNG alone
                train(model, train_data, self.finetune)  # a diverged loss raises TrainingFailure: the trial fails
        recalibrate_bn(model, calibration_images(train_data, self.bn_batches * self.batch_size), self.batch_size)
        metrics = evaluate(model, val_data)
        self.last_model = None if other_network else model
        scores = {"supernet_map": metrics["map"], "supernet_map50": metrics["map50"]}
        if self.substitute:  # also a candidate that is the substituted network: later ones may map to it
            self._substituted_scores[scored.id] = dict(scores)
        return scores
