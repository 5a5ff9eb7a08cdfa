"""Structured channel pruning that never changes a block's interface.

Only channels that live *inside* one block (or between two blocks whose connection
nothing else reads) are removed, so residual adds, the shuffle unit's split/concat/
shuffle, the ghost module's concat and the FPN/PAN merges keep their widths and stay
valid without a dependency graph:

* ``InvertedResidual``: the expansion width (expand conv out -> dw -> SE -> project in);
* ``ShuffleUnit``: the transformed branch's middle width (1x1 out -> dw -> 1x1 in);
* ``GhostBottleneck``: the first ghost module's primary channels; each one also makes
  one cheap (dw) channel, so both halves of the concat shrink together, then the
  optional strided dw, the SE and the second ghost module's input follow;
* ``DepSepConv`` -> consumer inside one ``nn.Sequential`` (a block followed by another
  block of its stage, neck level or head, or a head's last block followed by the
  prediction conv): the pointwise output, when the consumer is a depthwise-separable
  conv or a plain conv. A sequence's last module is its output and is never pruned.

Depthwise convs are pruned with their groups; BN statistics and SE convs follow the
kept channels. Every group keeps the same fraction of channels, chosen by an importance
criterion on the conv/BN that produces them (:data:`IMPORTANCE`), rounded up to a
multiple of ``round_to`` (SIMD-friendly widths) and never below it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from search_spaces.ops import DepSepConv, GhostBottleneck, InvertedResidual, ShuffleUnit, SqueezeExcite

# Importance of each output channel of a (conv, BN) pair; higher is kept.
IMPORTANCE: dict[str, Callable[[nn.Conv2d, nn.BatchNorm2d], torch.Tensor]] = {
    "l1": lambda conv, bn: conv.weight.detach().abs().flatten(1).sum(1),       # Li et al. 2017
    "bn": lambda conv, bn: bn.weight.detach().abs(),                            # network slimming, Liu et al. 2017
}


# ----- rebuilding modules with a subset of channels --------------------------------------
def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> nn.Conv2d:
    out_ch, in_per_group = weight.shape[:2]
    new = nn.Conv2d(in_per_group * groups, out_ch, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    groups=groups, bias=bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def conv_keep_out(conv: nn.Conv2d, idx: torch.Tensor) -> nn.Conv2d:
    """Dense conv with only output channels ``idx``."""
    assert conv.groups == 1
    return _new_conv(conv, conv.weight[idx], conv.bias[idx] if conv.bias is not None else None, 1)


def conv_keep_in(conv: nn.Conv2d, idx: torch.Tensor) -> nn.Conv2d:
    """Dense conv reading only input channels ``idx``."""
    assert conv.groups == 1
    return _new_conv(conv, conv.weight[:, idx], conv.bias, 1)


def conv_keep_depthwise(conv: nn.Conv2d, idx: torch.Tensor) -> nn.Conv2d:
    """Depthwise conv over channels ``idx`` only (channel i in -> channel i out)."""
    assert conv.groups == conv.in_channels == conv.out_channels
    return _new_conv(conv, conv.weight[idx], conv.bias[idx] if conv.bias is not None else None, len(idx))


def bn_keep(bn: nn.BatchNorm2d, idx: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[idx])
            new.bias.copy_(bn.bias[idx])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[idx])
            new.running_var.copy_(bn.running_var[idx])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)  # a fresh module is in training mode: BN would use batch statistics


def cba_keep_out(cba: nn.Sequential, idx) -> None:
    """A ConvBNAct (conv, BN, act) producing only channels ``idx``; in place."""
    cba[0], cba[1] = conv_keep_out(cba[0], idx), bn_keep(cba[1], idx)


def cba_keep_depthwise(cba: nn.Sequential, idx) -> None:
    cba[0], cba[1] = conv_keep_depthwise(cba[0], idx), bn_keep(cba[1], idx)


def se_keep(se: nn.Module, idx) -> None:
    """An SE (or Identity) acting on channels ``idx`` only: the squeeze reads them, the
    excite gates them. Its own bottleneck width is left alone."""
    if isinstance(se, SqueezeExcite):
        se.reduce = conv_keep_in(se.reduce, idx)
        se.expand = conv_keep_out(se.expand, idx)


# ----- choosing channels -----------------------------------------------------------------
@dataclass(frozen=True)
class PruneSettings:
    ratio: float            # fraction of each group's channels kept, in (0, 1]
    criterion: str          # a key of IMPORTANCE
    round_to: int           # kept counts are rounded up to a multiple of this


def n_keep(n: int, settings: PruneSettings, multiple: int | None = None) -> int:
    m = multiple or settings.round_to
    return min(n, max(min(m, n), math.ceil(settings.ratio * n / m) * m))


def top_channels(conv: nn.Conv2d, bn: nn.BatchNorm2d, k: int, settings: PruneSettings) -> torch.Tensor:
    """Indices of the ``k`` most important output channels, in their original order."""
    score = IMPORTANCE[settings.criterion](conv, bn)
    return torch.sort(torch.topk(score, k).indices).values


# ----- per-block pruners: (module, settings) -> (channels before, after) or None -------------
def _prune_ir(block: InvertedResidual, s: PruneSettings):
    if not isinstance(block.expand, nn.Sequential):
        return None  # expansion 1: the "internal" width is the block's input
    mid = block.expand[0].out_channels
    k = n_keep(mid, s)
    if k == mid:
        return None
    idx = top_channels(block.expand[0], block.expand[1], k, s)
    cba_keep_out(block.expand, idx)
    cba_keep_depthwise(block.dw, idx)
    se_keep(block.se, idx)
    block.project[0] = conv_keep_in(block.project[0], idx)
    return mid, k


def _prune_shuffle(block: ShuffleUnit, s: PruneSettings):
    first, dw, last = block.branch[0], block.branch[1], block.branch[2]
    mid = first[0].out_channels
    k = n_keep(mid, s)
    if k == mid:
        return None
    idx = top_channels(first[0], first[1], k, s)
    cba_keep_out(first, idx)
    cba_keep_depthwise(dw, idx)
    last[0] = conv_keep_in(last[0], idx)
    return mid, k


def _prune_ghost(block: GhostBottleneck, s: PruneSettings):
    g1 = block.ghost1
    p = g1.primary[0].out_channels
    if g1.cout != 2 * p:
        return None  # an odd width slices off the last cheap channel; not worth a special case
    # Kept primary channels come in pairs with their cheap twins, so a multiple of
    # round_to/2 primaries gives a block width that is a multiple of round_to.
    k = n_keep(p, s, max(1, s.round_to // 2))
    if k == p:
        return None
    idx = top_channels(g1.primary[0], g1.primary[1], k, s)
    cba_keep_out(g1.primary, idx)
    cba_keep_depthwise(g1.cheap, idx)
    g1.cout = 2 * k
    full = torch.cat([idx, idx + p])  # ghost1's output = cat([primary, cheap(primary)])
    if isinstance(block.dw, nn.Sequential):
        cba_keep_depthwise(block.dw, full)
    se_keep(block.se, full)
    block.ghost2.primary[0] = conv_keep_in(block.ghost2.primary[0], full)
    return 2 * p, 2 * k


BLOCK_PRUNERS: dict[type, Callable] = {
    InvertedResidual: _prune_ir,
    ShuffleUnit: _prune_shuffle,
    GhostBottleneck: _prune_ghost,
}


# ----- producer -> consumer pairs inside an nn.Sequential ----------------------------------
def _consume_dsconv(block: DepSepConv, idx) -> None:
    cba_keep_depthwise(block.dw, idx)
    se_keep(block.se, idx)
    block.pw[0] = conv_keep_in(block.pw[0], idx)


def _consume_conv(conv: nn.Conv2d, idx):
    return conv_keep_in(conv, idx)


# Modules that may read a pruned DepSepConv output; a consumer returning a module
# replaces itself in the sequence (a bare conv cannot be edited in place).
CONSUMERS: dict[type, Callable] = {
    DepSepConv: _consume_dsconv,
    nn.Conv2d: _consume_conv,
}


def _prune_pair(seq: nn.Sequential, i: int, s: PruneSettings):
    producer, consumer = seq[i], seq[i + 1]
    if isinstance(consumer, nn.Conv2d) and consumer.groups != 1:
        return None
    c = producer.pw[0].out_channels
    k = n_keep(c, s)
    if k == c:
        return None
    idx = top_channels(producer.pw[0], producer.pw[1], k, s)
    cba_keep_out(producer.pw, idx)
    replaced = CONSUMERS[type(consumer)](consumer, idx)
    if replaced is not None:
        seq[i + 1] = replaced
    return c, k


@dataclass
class PruneReport:
    groups: int                 # channel groups pruned
    channels_before: int        # summed over those groups
    channels_after: int
    params_before: int
    params_after: int

    def summary(self) -> str:
        return (f"{self.groups} channel groups {self.channels_before} -> {self.channels_after} channels; "
                f"params {self.params_before} -> {self.params_after}")


def prune_channels(model: nn.Module, ratio: float = 0.5, criterion: str = "l1", round_to: int = 8) -> PruneReport:
    """Prune ``model`` in place (see the module docstring for what is pruned).

    ``ratio`` is the fraction of each group's channels kept. Returns what changed.
    The model keeps its class, inputs and outputs; only internal widths shrink.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio (the fraction of channels kept) must be in (0, 1], got {ratio}")
    if criterion not in IMPORTANCE:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {sorted(IMPORTANCE)}")
    s = PruneSettings(float(ratio), criterion, int(round_to))
    params_before = sum(p.numel() for p in model.parameters())
    was_training = model.training
    changes = []
    with torch.no_grad():
        for module in list(model.modules()):
            pruner = BLOCK_PRUNERS.get(type(module))
            if pruner is not None:
                changes.append(pruner(module, s))
        for module in list(model.modules()):
            if type(module) is nn.Sequential:
                for i in range(len(module) - 1):
                    if isinstance(module[i], DepSepConv) and type(module[i + 1]) in CONSUMERS:
                        changes.append(_prune_pair(module, i, s))
    model.train(was_training)  # fresh modules start in training mode; restore the model's mode
    changes = [c for c in changes if c is not None]
    return PruneReport(len(changes), sum(c[0] for c in changes), sum(c[1] for c in changes),
                       params_before, sum(p.numel() for p in model.parameters()))
