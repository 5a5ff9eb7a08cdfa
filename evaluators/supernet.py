"""A weight-sharing supernet over the ``cpu_detector`` space and the ``supernet`` evaluator.

Training is single-path one-shot with uniform sampling (SPOS, Guo et al. 2020): every
step draws one architecture uniformly from the space, runs the detection loss through
that path only and updates only the weights on it. Scoring a candidate then costs
seconds instead of a training run: inherit its weights, recalibrate BatchNorm on a few
training batches (the supernet's running statistics mix every path, so they are wrong
for any single one) and measure mAP on the validation split.

Weight sharing granularity. The supernet holds one module per *op role* (``"s3.b1"``,
``"neck.lateral0"``, ...) and per distinct *op key* that role takes (the key of
:class:`search_spaces.OpSpec`: kind, every parameter and the input shape). Two paths
share a module exactly where their op at that role is the same op, so an inherited
network is bit-for-bit the network ``space.build(arch)`` makes, loaded with those
weights. Widths are *not* shared by channel slicing (a 0.5x and a 1.0x block are two
modules), nor are kernels (3x3 is not the centre of 5x5): the keys include them. That
costs sharing between neighbouring widths but keeps inheritance exact and simple.

Modules are created lazily, the first time a sampled path uses them: all of the default
space's (role, key) modules together hold about 116M parameters (3,218 modules) at any
input size, most of them in wide, rarely sampled stage-5 blocks. An op that was never
sampled has no trained weights; scoring an architecture that uses one raises
:class:`UntrainedOpsError` rather than scoring random weights.

Checkpoints (one ``torch.save`` file, written atomically) record the space and its
settings, the training and data settings, the ops created (in creation order), the
weights, the AdamW state, the data order and every RNG state, so
:func:`train_supernet` resumes after a crash and ends bit-identical to an uninterrupted
run with the same seed (same thread count and torch build).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from search_spaces import Architecture, OpSpec, SearchSpace
from search_spaces.cpu_detector import CpuDetector
from search_spaces.errors import InputError
from search_spaces.files import atomic_write
from search_spaces.ops import make_op

from .base import Evaluator, register_evaluator
from .data import DataConfig
from .trainer import PreparedData, TrainConfig, TrainingFailure, _batch, evaluate, supervised_loss, to_tensor

CHECKPOINT_FORMAT = "cpu-det-nas/supernet"
CHECKPOINT_VERSION = 1


class UntrainedOpsError(RuntimeError):
    """An architecture uses ops the supernet never trained; the message names them."""


# --------------------------------------------------------------------------- supernet


def slot_name(spec: OpSpec) -> str:
    """Module name of one (role, op key): ``s3_b1__<12 hex>``.

    ``nn.ModuleDict`` names cannot contain dots and keys are long, so the key is hashed;
    the full spec is kept alongside (and in checkpoints) for reading it back.
    """
    digest = hashlib.sha1(spec.key.encode()).hexdigest()[:12]
    return f"{spec.role.replace('.', '_')}__{digest}"


class Supernet(nn.Module):
    """Shared weights for every path of a detector space (see the module docstring).

    ``grow(arch)`` creates the modules a path needs and does not have yet;
    ``subnet(arch)`` is a :class:`CpuDetector` *view* whose modules are the supernet's
    own objects (training the view trains the supernet); ``extract(arch)`` is a state
    dict that ``space.build(arch).load_state_dict`` accepts, giving the same outputs.

    A supernet read from a checkpoint with ``lazy=True`` keeps the stored weights aside
    and only builds a module when a path first needs it, so scoring does not hold all
    the weights in memory.
    """

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        self.choices = nn.ModuleDict()
        self._specs: dict[str, OpSpec] = {}                      # slot -> spec, creation order
        self._stored: dict[str, dict[str, torch.Tensor]] = {}   # slot -> weights not yet built

    # ----- membership ----------------------------------------------------------------
    def op_specs(self) -> list[OpSpec]:
        """Every op the supernet has (built or stored), in creation order."""
        return list(self._specs.values())

    def missing(self, arch: Architecture) -> list[OpSpec]:
        """The ops of ``arch`` (in walk order) that the supernet has no weights for."""
        return [spec for spec in self.space.ops(arch) if slot_name(spec) not in self._specs]

    def grow(self, arch: Architecture) -> list[nn.Module]:
        """Create (freshly initialised, from the global torch RNG) the modules ``arch``
        needs and lacks, in walk order; returns the new modules."""
        return [self._create(spec) for spec in self.missing(arch)]

    def _create(self, spec: OpSpec) -> nn.Module:
        name = slot_name(spec)
        module = make_op(spec)
        self.choices[name] = module
        self._specs[name] = spec
        return module

    def _module(self, spec: OpSpec) -> nn.Module:
        name = slot_name(spec)
        if name in self.choices:
            return self.choices[name]
        if name in self._stored:
            # Built from the stored weights on first use; the random init is overwritten,
            # so draw it from a forked RNG and leave the caller's stream untouched.
            with torch.random.fork_rng(devices=[]):
                module = make_op(spec)
            module.load_state_dict(self._stored.pop(name))
            self.choices[name] = module
            return module
        raise UntrainedOpsError(f"the supernet has no op {spec.key} at role {spec.role}")

    # ----- paths -----------------------------------------------------------------------
    def path_modules(self, arch: Architecture) -> dict[str, nn.Module]:
        """``{role: module}`` for ``arch``; raises :class:`UntrainedOpsError` naming the
        ops it lacks (train longer, or score only architectures it has seen)."""
        absent = self.missing(arch)
        if absent:
            shown = "; ".join(f"{s.role}: {s.key}" for s in absent[:3])
            raise UntrainedOpsError(
                f"the supernet never trained {len(absent)} op(s) of this architecture ({shown}"
                + (", ..." if len(absent) > 3 else "") + "); train it for more steps")
        return {spec.role: self._module(spec) for spec in self.space.ops(arch)}

    def subnet(self, arch: Architecture):
        """A :class:`CpuDetector` sharing this supernet's modules (no copy)."""
        return CpuDetector(self.path_modules(arch), arch, self.space.settings()["num_classes"])

    def extract(self, arch: Architecture) -> dict[str, torch.Tensor]:
        """State dict of ``space.build(arch)`` with the inherited weights (copies, so
        later training of the supernet does not change it)."""
        return {k: v.detach().clone() for k, v in self.subnet(arch).state_dict().items()}

    # ----- checkpoint form ---------------------------------------------------------------
    def record_ops(self) -> list[dict]:
        return [_spec_to_dict(s) for s in self._specs.values()]

    @classmethod
    def from_record(cls, space: SearchSpace, ops: list[dict], weights: dict[str, torch.Tensor],
                    lazy: bool = False) -> "Supernet":
        """Rebuild from a checkpoint's ``ops`` and ``weights``.

        ``lazy=False`` builds every module now, in the recorded creation order (what
        resuming training needs: the optimiser's groups follow that order). Building
        draws initial weights from the global torch RNG; callers restore RNG state after.
        ``lazy=True`` is for scoring: modules are built on first use, and ``state_dict()``
        holds only those built so far.
        """
        net = cls(space)
        specs = [_spec_from_dict(d) for d in ops]
        if lazy:
            grouped: dict[str, dict[str, torch.Tensor]] = {slot_name(s): {} for s in specs}
            for key, tensor in weights.items():
                name, _, rest = key[len("choices."):].partition(".")
                grouped[name][rest] = tensor
            for spec in specs:
                net._specs[slot_name(spec)] = spec
            net._stored = grouped
        else:
            for spec in specs:
                net._create(spec)
            net.load_state_dict(weights)
        return net


def _spec_to_dict(spec: OpSpec) -> dict:
    return {"role": spec.role, "kind": spec.kind, "params": [list(p) for p in spec.params],
            "input_shapes": [list(s) for s in spec.input_shapes]}


def _spec_from_dict(d: dict) -> OpSpec:
    return OpSpec(d["kind"], tuple((k, v) for k, v in d["params"]),
                  tuple(tuple(int(x) for x in s) for s in d["input_shapes"]), d["role"])


# --------------------------------------------------------------------------- checkpoints


def _train_settings(cfg: TrainConfig) -> dict:
    """Everything about training that a resumed run must share (``time_budget_s`` is not:
    it only limits one invocation)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "time_budget_s"}


def load_checkpoint(path: str | os.PathLike, mmap: bool = True) -> dict:
    """The checkpoint's record; memory-mapped by default (weights are read only when
    touched, which is what scoring wants; resuming reads everything anyway).

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
        raise InputError(f"{path}: supernet checkpoint version {record.get('version')!r}; "
                         f"this version reads {CHECKPOINT_VERSION}")
    return record


def check_checkpoint(record: dict, space: SearchSpace, path) -> None:
    """Raise :class:`InputError` naming ``path`` unless the checkpoint is for ``space``
    with the same settings (input size and classes change every op key)."""
    if record["space"] != space.name or record["settings"] != space.settings():
        raise InputError(
            f"supernet checkpoint {path} was trained for space {record['space']!r} with settings "
            f"{record['settings']}, not {space.name!r} with {space.settings()}; "
            "train a supernet for this space or use the matching checkpoint")


# --------------------------------------------------------------------------- training


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The trainer's schedule: linear warm-up, then cosine decay to 0 at ``cfg.steps``."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / max(1, cfg.steps)))


def add_to_optimizer(opt: torch.optim.Optimizer | None, modules: list[nn.Module],
                     cfg: TrainConfig) -> torch.optim.Optimizer | None:
    """One AdamW param group per new module that has parameters, in the given order.

    Groups are per module so that a resumed run can rebuild the same groups from the
    recorded creation order. Returns the optimiser (created on the first parameters).
    """
    groups = [{"params": list(m.parameters())} for m in modules]
    groups = [g for g in groups if g["params"]]
    if not groups:
        return opt
    if opt is None:
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    for g in groups:
        opt.add_param_group(g)
    return opt


def train_step(supernet: Supernet, opt: torch.optim.Optimizer | None, arch: Architecture, images: torch.Tensor,
               targets: list[dict], cfg: TrainConfig, lr: float) -> tuple[float, torch.optim.Optimizer]:
    """One SPOS step on ``arch``: grow its missing ops, detection loss through its path,
    clip, AdamW step. Only the path's parameters get gradients, and AdamW skips
    parameters without one, so the rest of the supernet is untouched (no weight decay
    either). Returns ``(loss, optimiser)``; raises :class:`TrainingFailure` on NaN/inf.
    """
    opt = add_to_optimizer(opt, supernet.grow(arch), cfg)
    view = supernet.subnet(arch)
    view.train()
    loss = supervised_loss(view, images, targets)["loss"]
    if not torch.isfinite(loss):
        raise TrainingFailure(f"supernet loss became {loss.item()} (lr {lr:.2e}) on {arch.id}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(view.parameters(), cfg.grad_clip)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
    return float(loss.detach()), opt


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

    def __init__(self, supernet: Supernet, seed: int, n_train: int):
        import random

        self.supernet = supernet
        self.opt: torch.optim.Optimizer | None = None
        self.step = 0
        self.seconds = 0.0
        self.losses: list[float] = []
        self.arch_rng = random.Random(seed)         # which path each step trains
        self.data_rng = np.random.default_rng(seed)  # batch order and augmentation
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
                "ops": self.supernet.record_ops(), "weights": self.supernet.state_dict(),
                "optimizer": self.opt.state_dict() if self.opt is not None else None,
                "order": torch.from_numpy(self.order.astype(np.int64)), "cursor": self.cursor,
                "rng": {"python": self.arch_rng.getstate(), "numpy": self.data_rng.bit_generator.state,
                        "torch": torch.get_rng_state()}}

    def restore(self, record: dict, cfg: TrainConfig) -> None:
        space = self.supernet.space
        self.supernet = Supernet.from_record(space, record["ops"], record["weights"])
        # Same groups, same order as when the modules were first created.
        self.opt = add_to_optimizer(None, list(self.supernet.choices.values()), cfg)
        if record["optimizer"] is not None:
            self.opt.load_state_dict(record["optimizer"])
        self.step, self.seconds, self.losses = int(record["step"]), float(record["seconds"]), list(record["losses"])
        self.order, self.cursor = record["order"].numpy().copy(), int(record["cursor"])
        # RNG last: rebuilding the modules above drew from the torch RNG.
        self.arch_rng.setstate(record["rng"]["python"])
        self.data_rng.bit_generator.state = record["rng"]["numpy"]
        torch.set_rng_state(record["rng"]["torch"])


def train_supernet(space: SearchSpace, data_cfg: DataConfig, steps: int, batch_size: int, seed: int,
                   out_path: str | os.PathLike, time_budget_s: float | None = None, progress: bool = True,
                   save_every: int = 100, lr: float = 4e-3, weight_decay: float = 0.05, warmup_steps: int = 30,
                   callback: Callable[[int, float], None] | None = None) -> SupernetRun:
    """Train a supernet of ``space`` with SPOS for ``steps`` steps and save it to ``out_path``.

    Step ``i`` trains ``space.sample(rng)``, ``rng = random.Random(seed)`` drawn in order,
    on one batch (the trainer's augmentation and schedule). The checkpoint is written
    atomically every ``save_every`` steps and at the end; if ``out_path`` already holds
    a checkpoint of the same space, data and settings, training resumes from it (a
    finished one is returned as is); different settings raise :class:`InputError`.
    ``time_budget_s`` stops this invocation early (after saving); run again to go on.
    ``callback(step, loss)`` is called after each step (progress reporting, tests).
    """
    path = Path(out_path)
    if steps < 1 or batch_size < 1 or save_every < 1:
        raise InputError(f"steps, batch_size and save_every must be >= 1, got {steps}, {batch_size}, {save_every}")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      warmup_steps=warmup_steps, seed=seed)
    settings = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "space": space.name,
                "settings": space.settings(), "train": _train_settings(cfg), "data": dataclasses.asdict(data_cfg)}
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
    train_data, _ = data_cfg.load(space.settings()["input_size"])
    _check_data(train_data, space, data_cfg)
    if len(train_data) < batch_size:
        raise InputError(f"the training split has {len(train_data)} images, fewer than batch_size {batch_size}")

    torch.manual_seed(seed)  # initial weights of lazily created ops
    state = _State(Supernet(space), seed, len(train_data))
    if record is not None:
        state.restore(record, cfg)

    def save() -> None:
        record = {**settings, **state.to_record()}
        atomic_write(path, lambda f: torch.save(record, f))

    from tqdm import tqdm

    bar = tqdm(total=steps, initial=state.step, desc="supernet", unit="step", disable=not progress, leave=False)
    start = time.monotonic()
    seconds_before = state.seconds
    dirty = False
    while state.step < steps:
        arch = space.sample(state.arch_rng)
        images, targets = _batch(train_data, state.next_indices(batch_size), cfg, state.data_rng)
        loss, state.opt = train_step(state.supernet, state.opt, arch, images, targets, cfg, lr_at(state.step, cfg))
        state.step += 1
        state.losses.append(loss)
        state.seconds = seconds_before + time.monotonic() - start
        dirty = True
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", ops=len(state.supernet.choices))
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

    ``checkpoint`` is a file from ``nas supernet train``; ``data`` (DataConfig fields)
    defaults to the data the supernet was trained on. The checkpoint is read once
    (memory-mapped) and only the ops candidates use are built. An architecture with an
    op the supernet never sampled raises :class:`UntrainedOpsError` (the trial fails).
    """

    cost = "train"

    def __init__(self, checkpoint: str, data: dict | None = None, bn_batches: int = 4, batch_size: int = 16,
                 threads: int | None = None):
        if bn_batches < 1 or batch_size < 1:
            raise InputError(f"evaluator 'supernet': bn_batches and batch_size must be >= 1, got {bn_batches}, {batch_size}")
        self.path = Path(checkpoint)
        self.data_options = data
        self.bn_batches, self.batch_size, self.threads = bn_batches, batch_size, threads
        self._record = load_checkpoint(self.path)  # fail at construction on a missing/bad file
        self._supernet: Supernet | None = None
        self._data: tuple[PreparedData, PreparedData] | None = None

    def _load(self, space: SearchSpace) -> Supernet:
        check_checkpoint(self._record, space, self.path)
        if self._supernet is None or self._supernet.space.settings() != space.settings():
            self._supernet = Supernet.from_record(space, self._record["ops"], self._record["weights"], lazy=True)
            cfg = DataConfig(**(self.data_options if self.data_options is not None else self._record["data"]))
            self._data = cfg.load(space.settings()["input_size"])
            _check_data(self._data[0], space, cfg)
        return self._supernet

    def __call__(self, arch: Architecture, space: SearchSpace):
        if self.threads:
            torch.set_num_threads(self.threads)
        supernet = self._load(space)
        train_data, val_data = self._data
        model = space.build(arch)
        model.load_state_dict(supernet.extract(arch))
        recalibrate_bn(model, calibration_images(train_data, self.bn_batches * self.batch_size), self.batch_size)
        metrics = evaluate(model, val_data)
        self.last_model = model  # as train_proxy: the engine saves the best candidate's weights from here
        return {"supernet_map": metrics["map"], "supernet_map50": metrics["map50"]}
