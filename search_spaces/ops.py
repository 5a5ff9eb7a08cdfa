"""The op registry: every op a space can emit, as a torch module built from an OpSpec.

Blocks register with ``@register_op("name")``; a registered builder receives the op's
parameters and its input shapes and returns an ``nn.Module``. The detector builder,
the latency profiler and the supernet all construct ops through :func:`make_op`, so the
module a table measures is exactly the module a network contains.

Block kinds and where they come from:
  * ``dsconv``  PP-LCNet's depthwise-separable conv (dw kxk, optional SE, pw 1x1)
  * ``ir``      MobileNetV2/V3 inverted residual (expand, dw, optional SE, project)
  * ``shuffle`` ShuffleNetV2 unit (channel split / two-branch downsampling + shuffle)
  * ``ghost``   GhostNet bottleneck (two Ghost modules around an optional strided dw)
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import ArchitectureError
from .base import OpSpec

_OPS: dict[str, Callable[..., nn.Module]] = {}
# Which searchable parameters each block kind actually uses: decisions outside this set
# are inactive for that kind (the space canonicalises them away).
BLOCK_PARAMS: dict[str, frozenset[str]] = {}

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True),
    "none": nn.Identity,
}


def register_op(name: str, block_params: tuple[str, ...] | None = None):
    """Decorator registering an op builder ``f(input_shapes, **params) -> nn.Module``.

    ``block_params`` marks the op as a searchable block kind and lists which of the
    per-block decisions (kernel, expansion, se, act) it uses.
    """

    def decorate(fn):
        if name in _OPS:
            raise ValueError(f"op {name!r} is already registered")
        _OPS[name] = fn
        if block_params is not None:
            BLOCK_PARAMS[name] = frozenset(block_params)
        return fn

    return decorate


def block_kinds() -> list[str]:
    return list(BLOCK_PARAMS)


def make_op(spec: OpSpec) -> nn.Module:
    """Instantiate the module for one op spec (fresh, randomly initialised weights)."""
    try:
        builder = _OPS[spec.kind]
    except KeyError:
        raise ArchitectureError(f"unknown op kind {spec.kind!r}; registered: {sorted(_OPS)}") from None
    return builder(spec.input_shapes, **spec.param_dict)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` (never down by more than 10%), as MobileNet does."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: str = "relu"):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            ACTIVATIONS[act](),
        )


class SqueezeExcite(nn.Module):
    """SE with a hard-sigmoid gate (MobileNetV3), reduction 4, channels rounded to 8."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        mid = make_divisible(channels / reduction)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.expand(F.relu(self.reduce(s), inplace=True))
        return x * F.hardsigmoid(s)


def _se(channels: int, se: bool) -> nn.Module:
    return SqueezeExcite(channels) if se else nn.Identity()


class DepSepConv(nn.Module):
    """PP-LCNet block: dw kxk (stride) + BN + act, optional SE, pw 1x1 + BN + act."""

    def __init__(self, cin, cout, stride, kernel, se, act):
        super().__init__()
        self.dw = ConvBNAct(cin, cin, kernel, stride, groups=cin, act=act)
        self.se = _se(cin, se)
        self.pw = ConvBNAct(cin, cout, 1, act=act)

    def forward(self, x):
        return self.pw(self.se(self.dw(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block; residual when the shape is kept."""

    def __init__(self, cin, cout, stride, kernel, expansion, se, act):
        super().__init__()
        mid = make_divisible(cin * expansion)
        self.expand = ConvBNAct(cin, mid, 1, act=act) if expansion != 1 else nn.Identity()
        self.dw = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = _se(mid, se)
        self.project = ConvBNAct(mid, cout, 1, act="none")
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit. Shape-keeping: split channels, transform one half. Otherwise
    (stride 2 or a channel change) both branches see the whole input, as in the paper's
    downsampling unit. SE (ShuffleNetV2+) sits at the end of the transformed branch."""

    def __init__(self, cin, cout, stride, kernel, se, act):
        super().__init__()
        self.split = stride == 1 and cin == cout
        if cout % 2:
            raise ArchitectureError(f"shuffle block needs an even output width, got {cout}")
        branch_out = cout // 2
        branch_in = cin // 2 if self.split else cin
        self.branch = nn.Sequential(
            ConvBNAct(branch_in, branch_out, 1, act=act),
            ConvBNAct(branch_out, branch_out, kernel, stride, groups=branch_out, act="none"),
            ConvBNAct(branch_out, branch_out, 1, act=act),
            _se(branch_out, se),
        )
        if self.split:
            self.shortcut = None
        else:
            self.shortcut = nn.Sequential(
                ConvBNAct(cin, cin, kernel, stride, groups=cin, act="none"),
                ConvBNAct(cin, cout - branch_out, 1, act=act),
            )

    def forward(self, x):
        if self.split:
            keep, x2 = x.chunk(2, dim=1)
            out = torch.cat([keep, self.branch(x2)], 1)
        else:
            out = torch.cat([self.shortcut(x), self.branch(x)], 1)
        return channel_shuffle(out, 2)


class GhostModule(nn.Module):
    """Half the outputs from a 1x1 conv, the other half from a cheap dw 3x3 on them."""

    def __init__(self, cin, cout, act):
        super().__init__()
        self.cout = cout
        primary = (cout + 1) // 2
        self.primary = ConvBNAct(cin, primary, 1, act=act)
        self.cheap = ConvBNAct(primary, primary, 3, groups=primary, act=act)

    def forward(self, x):
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], 1)[:, : self.cout]


class GhostBottleneck(nn.Module):
    """GhostNet bottleneck: ghost(expand) [+ dw kxk stride 2] [+ SE] + ghost(project)."""

    def __init__(self, cin, cout, stride, kernel, expansion, se, act):
        super().__init__()
        mid = make_divisible(cin * expansion)
        self.ghost1 = GhostModule(cin, mid, act)
        self.dw = ConvBNAct(mid, mid, kernel, stride, groups=mid, act="none") if stride > 1 else nn.Identity()
        self.se = _se(mid, se)
        self.ghost2 = GhostModule(mid, cout, "none")
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                ConvBNAct(cin, cin, kernel, stride, groups=cin, act="none"),
                ConvBNAct(cin, cout, 1, act="none"),
            )

    def forward(self, x):
        return self.ghost2(self.se(self.dw(self.ghost1(x)))) + self.shortcut(x)


def _cin(input_shapes) -> int:
    return int(input_shapes[0][1])


@register_op("dsconv", block_params=("kernel", "se", "act"))
def _dsconv(input_shapes, cout, stride, kernel, se, act):
    return DepSepConv(_cin(input_shapes), cout, stride, kernel, bool(se), act)


@register_op("ir", block_params=("kernel", "expansion", "se", "act"))
def _ir(input_shapes, cout, stride, kernel, expansion, se, act):
    return InvertedResidual(_cin(input_shapes), cout, stride, kernel, expansion, bool(se), act)


@register_op("shuffle", block_params=("kernel", "se", "act"))
def _shuffle(input_shapes, cout, stride, kernel, se, act):
    return ShuffleUnit(_cin(input_shapes), cout, stride, kernel, bool(se), act)


@register_op("ghost", block_params=("kernel", "expansion", "se", "act"))
def _ghost(input_shapes, cout, stride, kernel, expansion, se, act):
    return GhostBottleneck(_cin(input_shapes), cout, stride, kernel, expansion, bool(se), act)


@register_op("conv")
def _conv(input_shapes, cout, kernel, stride, act):
    """Plain conv + BN + act (stem, FPN laterals)."""
    return ConvBNAct(_cin(input_shapes), cout, kernel, stride, act=act)


class UpsampleAdd(nn.Module):
    """FPN top-down merge: nearest 2x upsample of the coarse map, added to the fine one."""

    def forward(self, fine, coarse):
        return fine + F.interpolate(coarse, size=fine.shape[-2:], mode="nearest")


@register_op("upsample_add")
def _upsample_add(input_shapes):
    return UpsampleAdd()


class DownAdd(nn.Module):
    """PAN bottom-up merge: strided dw conv of the fine map, added to the coarse one."""

    def __init__(self, channels, kernel, act="hswish"):
        super().__init__()
        self.down = ConvBNAct(channels, channels, kernel, 2, groups=channels, act=act)

    def forward(self, coarse, fine):
        return coarse + self.down(fine)


@register_op("down_add")
def _down_add(input_shapes, kernel, act="hswish"):
    return DownAdd(_cin(input_shapes), kernel, act)


@register_op("pred")
def _pred(input_shapes, num_classes):
    """Head output: class logits and 4 box distances per location (1x1 conv).

    The class bias starts at -4.6 (prior probability 0.01) as in RetinaNet, so the
    focal loss does not explode in the first steps.
    """
    conv = nn.Conv2d(_cin(input_shapes), num_classes + 4, 1)
    with torch.no_grad():
        conv.bias[:num_classes].fill_(-4.6)
        conv.bias[num_classes:].fill_(0.0)
    return conv


class Decode(nn.Module):
    """Dense outputs of all levels -> (scores [B,N,C] after sigmoid, boxes [B,N,4] xyxy px).

    Box distances are ``softplus(raw) * stride`` from each location's centre, so they are
    positive without an exp that overflows early in training.
    """

    def __init__(self, num_classes: int, strides: tuple[int, ...], level_hw: tuple[tuple[int, int], ...]):
        super().__init__()
        self.num_classes = num_classes
        centres, stride_per_point = [], []
        for s, (h, w) in zip(strides, level_hw):
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
            centres.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s], 1))
            stride_per_point.append(torch.full((h * w, 1), float(s)))
        # Buffers, so they travel with .to() and appear as constants in the ONNX graph.
        self.register_buffer("centres", torch.cat(centres), persistent=False)
        self.register_buffer("point_strides", torch.cat(stride_per_point), persistent=False)

    def flatten(self, *level_outputs: torch.Tensor) -> torch.Tensor:
        """[B, C+4, H, W] per level -> [B, N, C+4]."""
        return torch.cat([o.flatten(2).transpose(1, 2) for o in level_outputs], 1)

    def distances(self, raw_box: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw_box) * self.point_strides

    def boxes(self, raw_box: torch.Tensor) -> torch.Tensor:
        d = self.distances(raw_box)
        c = self.centres
        return torch.cat([c - d[..., :2], c + d[..., 2:]], -1)

    def forward(self, *level_outputs: torch.Tensor):
        dense = self.flatten(*level_outputs)
        cls, box = dense[..., : self.num_classes], dense[..., self.num_classes:]
        return torch.sigmoid(cls), self.boxes(box)


@register_op("decode")
def _decode(input_shapes, num_classes, strides):
    strides_t = tuple(int(s) for s in str(strides).split("-"))
    return Decode(num_classes, strides_t, tuple((int(s[2]), int(s[3])) for s in input_shapes))
