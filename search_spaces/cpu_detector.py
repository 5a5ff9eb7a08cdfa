"""``cpu_detector``: the default space, a one-stage anchor-free detector for CPUs.

Backbone: a fixed 3x3 stem, then five stages (MobileNetV2's stride plan); per stage a
depth and a width multiplier, per block a kind from the op registry, kernel 3/5,
expansion 3/6, squeeze-excite on/off and ReLU/h-swish. Neck: FPN lateral 1x1 convs to
a common width, top-down merges, optional PAN bottom-up merges and ``neck.depth``
depthwise-separable blocks per level. Head (NanoDet/FCOS style, one per level):
``head.depth`` depthwise-separable convs, then a 1x1 conv to class logits and four box
distances; decoding to boxes is part of the network (and of the exported ONNX graph).

``ops()`` is the single walk over a built network; ``build()`` instantiates exactly
those ops (through :func:`search_spaces.ops.make_op`) and wires them, so the latency
table, the predictor and the real model can never disagree on what the network is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Mapping, NamedTuple

from torch import nn

from .architecture import Architecture, ArchitectureError
from .base import OpSpec, SearchSpace, check_assignments
from .errors import InputError
from .ops import BLOCK_PARAMS, make_divisible, make_op
from .registry import register_space


@dataclass(frozen=True)
class StageDef:
    name: str
    stride: int
    base_width: int
    depths: tuple[int, ...]


# MobileNetV2's stride plan; C3/C4/C5 (strides 8/16/32) feed the neck.
STAGES = (
    StageDef("s1", 2, 24, (1, 2)),
    StageDef("s2", 2, 32, (1, 2, 3)),
    StageDef("s3", 2, 64, (1, 2, 3, 4)),
    StageDef("s4", 1, 96, (1, 2, 3)),
    StageDef("s5", 2, 160, (1, 2, 3)),
)
FEATURE_STAGES = ("s2", "s4", "s5")
LEVEL_STRIDES = (8, 16, 32)
STEM_WIDTH = 16
FIXED_ACT = "hswish"  # default activation of the stem and neck (not searched)

WIDTH_MULTS = (0.5, 0.75, 1.0)
KERNELS = (3, 5)
EXPANSIONS = (3, 6)
SE_CHOICES = (False, True)
ACTS = ("relu", "hswish")
NECK_CHANNELS = (48, 64, 96)
NECK_DEPTHS = (0, 1, 2)
HEAD_DEPTHS = (1, 2, 3)
ACT_SHORT = {"relu": "re", "hswish": "hs"}
DEFAULT_BLOCK_KINDS = ("dsconv", "ir", "shuffle", "ghost")


def _down(n: int, stride: int) -> int:
    return math.ceil(n / stride)


class _BlockNames(NamedTuple):
    role: str                                   # "s2.b1"
    kind_key: str                               # "s2.b1.kind"
    params_by_kind: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]   # kind -> (param names, decision keys)


class _StageNames(NamedTuple):
    stage: "StageDef"
    width_key: str
    depth_key: str
    blocks: list[_BlockNames]                   # one per position up to the stage's maximum depth


def _block_spec(kind: str, params: tuple, role: str, c: int, h: int, w: int, cout: int, stride: int) -> list[OpSpec]:
    """The one op of a backbone block (``op_groups``' lazy maker)."""
    return [OpSpec.make(kind, [(1, c, h, w)], role, cout=cout, stride=stride, **dict(params))]


@register_space("cpu_detector")
class CpuDetectorSpace(SearchSpace):
    """The default detector space. Settings: ``num_classes``, ``input_size`` and
    ``fixed_act``, the activation of the stem and neck (``hswish`` or ``relu``; ReLU
    networks quantise better: onnxruntime has no int8 h-swish, see nas.finishing).

    The defaults (6 classes, 256x256, h-swish) match the built-in generated dataset and
    the committed latency tables.

    ``hold`` (``{decision: value}``, e.g. the neck and head) narrows those decisions to
    the one value, so every strategy searches the rest (DARTS: neck and head only); the
    reference architectures get the held values too. It builds no other network, so it
    is not among ``settings()``: latency tables and supernets of the whole space serve a
    held one (:meth:`unrestricted` is the whole space). Why: weight-sharing supernets rank
    backbones under one neck and head, not necks and heads (BENCHMARKS.md, session 19).
    Hold decisions every network uses (the neck and head with ``neck.depth`` >= 1): an
    unused held decision takes the held value where the whole space puts its default, so
    the same network would get another architecture id there.
    """

    def __init__(self, num_classes: int = 6, input_size: int = 256, block_kinds: tuple[str, ...] = DEFAULT_BLOCK_KINDS,
                 fixed_act: str = FIXED_ACT, hold: dict | None = None):
        if int(num_classes) < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}")
        if int(input_size) < 32 or int(input_size) % 32:
            raise InputError(f"input_size must be a multiple of 32 and >= 32, got {input_size}")
        unknown = [k for k in block_kinds if k not in BLOCK_PARAMS]
        if unknown:
            raise InputError(f"unknown block kind(s) {unknown}; registered: {sorted(BLOCK_PARAMS)}")
        if fixed_act not in ACTS:
            raise InputError(f"fixed_act must be one of {list(ACTS)}, got {fixed_act!r}")
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.block_kinds = tuple(block_kinds)
        self.fixed_act = fixed_act
        if hold is not None and not isinstance(hold, Mapping):
            raise InputError(f"hold: {hold!r} is not a mapping of decisions to values (e.g. {{neck.depth: 1}})")
        self.hold = dict(hold or {})
        self._decisions = self._held(self._make_decisions(), self.hold)
        self._walk_names = self._make_walk_names()

    def settings(self):
        # fixed_act only when changed: tables, checkpoints and ONNX files written before
        # the setting existed name the same space.
        extra = {"fixed_act": self.fixed_act} if self.fixed_act != FIXED_ACT else {}
        return {"num_classes": self.num_classes, "input_size": self.input_size, **extra}

    def unrestricted(self) -> "CpuDetectorSpace":
        """This space without ``hold``: the whole space its networks are drawn from."""
        if not self.hold:
            return self
        return CpuDetectorSpace(self.num_classes, self.input_size, self.block_kinds, self.fixed_act)

    # ----- decisions ---------------------------------------------------------------------
    @staticmethod
    def _held(decisions: dict[str, list], hold: dict) -> dict[str, list]:
        """``decisions`` with each held one narrowed to its value; InputError naming the
        decision for one the space lacks or a value it does not offer."""
        check_assignments(hold, decisions, "hold", "cpu_detector",
                          "neck.channels, neck.depth, neck.kernel, neck.pan, head.depth, head.kernel")
        for name, value in hold.items():
            decisions[name] = [value]
        return decisions

    def _make_decisions(self) -> dict[str, list]:
        d: dict[str, list] = {}
        for st in STAGES:
            d[f"{st.name}.depth"] = list(st.depths)
            d[f"{st.name}.width"] = list(WIDTH_MULTS)
            for b in range(max(st.depths)):
                p = f"{st.name}.b{b}"
                d[f"{p}.kind"] = list(self.block_kinds)
                d[f"{p}.kernel"] = list(KERNELS)
                d[f"{p}.expansion"] = list(EXPANSIONS)
                d[f"{p}.se"] = list(SE_CHOICES)
                d[f"{p}.act"] = list(ACTS)
        d["neck.channels"] = list(NECK_CHANNELS)
        d["neck.depth"] = list(NECK_DEPTHS)
        d["neck.kernel"] = list(KERNELS)
        d["neck.pan"] = [False, True]
        d["head.depth"] = list(HEAD_DEPTHS)
        d["head.kernel"] = list(KERNELS)
        return d

    def _make_walk_names(self) -> list["_StageNames"]:
        """The decision names ``op_groups`` reads, built once: every latency prediction
        walks an architecture, and formatting ~100 names each time cost a third of it."""
        return [_StageNames(st, f"{st.name}.width", f"{st.name}.depth",
                            [_BlockNames(role, f"{role}.kind",
                                         {kind: (tuple(BLOCK_PARAMS[kind]), tuple(f"{role}.{p}" for p in BLOCK_PARAMS[kind]))
                                          for kind in self.block_kinds})
                             for role in (f"{st.name}.b{b}" for b in range(max(st.depths)))])
                for st in STAGES]

    def decisions(self):
        return {k: list(v) for k, v in self._decisions.items()}

    def active_decisions(self, arch: Architecture) -> list[str]:
        s = arch.sample
        active = []
        for st in STAGES:
            active += [f"{st.name}.depth", f"{st.name}.width"]
            for b in range(s[f"{st.name}.depth"]):
                p = f"{st.name}.b{b}"
                active.append(f"{p}.kind")
                active += [f"{p}.{param}" for param in sorted(BLOCK_PARAMS[s[f"{p}.kind"]])]
        active += ["neck.channels", "neck.depth", "neck.pan", "head.depth", "head.kernel"]
        if s["neck.depth"] > 0 or s["neck.pan"]:  # the kernel is used by neck blocks and PAN merges only
            active.append("neck.kernel")
        return active

    def stage_width(self, arch: Architecture, stage: StageDef) -> int:
        return make_divisible(stage.base_width * arch.sample[f"{stage.name}.width"])

    # ----- the single walk -----------------------------------------------------------------
    def ops(self, arch: Architecture, input_hw: tuple[int, int] | None = None) -> list[OpSpec]:
        return [spec for _, make in self.op_groups(arch, input_hw) for spec in make()]

    def op_groups(self, arch: Architecture, input_hw: tuple[int, int] | None = None):
        """The walk, as groups: the stem, one group per block, the neck with the head.

        Each group's key holds everything its ops depend on, so the latency predictor
        caches per group: a block's latency is looked up once per (position, input and
        output width, choice), not once per architecture.
        """
        self.validate(arch)
        s = arch.sample
        h, w = input_hw or (self.input_size, self.input_size)
        groups = [(("stem", h, w), lambda h=h, w=w: [OpSpec.make(
            "conv", [(1, 3, h, w)], "stem", cout=STEM_WIDTH, kernel=3, stride=2, act=self.fixed_act)])]
        c, h, w = STEM_WIDTH, _down(h, 2), _down(w, 2)
        features: list[tuple[int, int, int]] = []
        for st, width_key, depth_key, blocks in self._walk_names:
            cout = make_divisible(st.base_width * s[width_key])
            for b, (role, kind_key, params_by_kind) in enumerate(blocks[:s[depth_key]]):
                kind = s[kind_key]
                stride = st.stride if b == 0 else 1
                param_names, param_keys = params_by_kind[kind]
                params = tuple(zip(param_names, map(s.__getitem__, param_keys)))
                groups.append(((kind, params, c, cout, h, w, stride),
                               partial(_block_spec, kind, params, role, c, h, w, cout, stride)))
                if stride != 1:
                    h, w = _down(h, stride), _down(w, stride)
                c = cout
            if st.name in FEATURE_STAGES:
                features.append((c, h, w))
        return groups + self._neck_and_head_groups(s, features)

    def _neck_and_head_groups(self, s, levels):
        """Neck and head ops in small groups (few distinct keys each, so caching pays)."""
        nc, nk, depth = s["neck.channels"], s["neck.kernel"], s["neck.depth"]
        hd, hk, classes = s["head.depth"], s["head.kernel"], self.num_classes
        act = self.fixed_act
        down_act = {} if act == FIXED_ACT else {"act": act}  # keeps the default's op keys as they were
        hw = [(fh, fw) for _, fh, fw in levels]
        groups = []
        for i, (fc, fh, fw) in enumerate(levels):
            groups.append((("lateral", i, fc, fh, fw, nc), lambda i=i, fc=fc, fh=fh, fw=fw: [OpSpec.make(
                "conv", [(1, fc, fh, fw)], f"neck.lateral{i}", cout=nc, kernel=1, stride=1, act=act)]))

        def merges():  # top-down P5 -> P4 -> P3, then bottom-up N3 -> N4 -> N5 (PAN)
            specs = [OpSpec.make("upsample_add", [(1, nc, *hw[i]), (1, nc, *hw[i + 1])], f"neck.td{i}") for i in (1, 0)]
            if s["neck.pan"]:
                specs += [OpSpec.make("down_add", [(1, nc, *hw[i]), (1, nc, *hw[i - 1])], f"neck.bu{i}", kernel=nk, **down_act)
                          for i in (1, 2)]
            return specs

        def towers(prefix, n, kernel):
            return [OpSpec.make("dsconv", [(1, nc, *hw[i])], prefix.format(i=i, b=b), cout=nc, stride=1,
                                kernel=kernel, se=False, act=act) for i in range(3) for b in range(n)]

        def outputs():
            specs = [OpSpec.make("pred", [(1, nc, *hw[i])], f"head{i}.pred", num_classes=classes) for i in range(3)]
            return specs + [OpSpec.make("decode", [(1, classes + 4, *hw[i]) for i in range(3)], "decode",
                                        num_classes=classes, strides="-".join(map(str, LEVEL_STRIDES)))]

        groups.append((("merges", tuple(hw), nc, s["neck.pan"], nk if s["neck.pan"] else None), merges))
        groups.append((("neck_out", tuple(hw), nc, depth, nk), lambda: towers("neck.out{i}.b{b}", depth, nk)))
        groups.append((("head", tuple(hw), nc, hd, hk), lambda: towers("head{i}.b{b}", hd, hk)))
        groups.append((("outputs", tuple(hw), nc, classes), outputs))
        return groups

    def build(self, arch: Architecture, input_hw: tuple[int, int] | None = None) -> "CpuDetector":
        """The detector. ``input_hw`` fixes the decode grid (default: the space's input size)."""
        specs = self.ops(arch, input_hw)
        return CpuDetector({spec.role: make_op(spec) for spec in specs}, arch, self.num_classes)

    def enumerate_ops(self, input_hw: tuple[int, int] | None = None, per_role: bool = False) -> list[OpSpec]:
        """Every distinct op this space can emit at ``input_hw``, found by walking a set of
        architectures that together cover each (position, choice) combination that changes
        an op key. Deterministic order. ``per_role``: an op that several roles can hold
        (``s3.b1`` and ``s3.b2`` alike) is listed once per role, as a supernet needs."""
        if self.hold:  # the covering walk varies every decision: do it in the whole space (a superset)
            return self.unrestricted().enumerate_ops(input_hw, per_role)
        seen: dict[tuple, OpSpec] = {}
        for arch in self._covering_architectures():
            for spec in self.ops(arch, input_hw):
                seen.setdefault((spec.key, spec.role) if per_role else spec.key, spec)
        return list(seen.values())

    def _covering_architectures(self):
        """Architectures whose op lists jointly contain every op key of the space.

        A block's key depends on its kind and params, its input width (previous stage's
        width for a stage's first block) and its own width; the neck/head ops on the
        neck width, the feature widths, kernels and PAN. We vary those jointly and keep
        everything else at defaults, which covers every key without walking the product.
        """
        base = {k: v[0] for k, v in self._decisions.items()}
        for st in STAGES:  # every stage at full depth, so every block position exists
            base[f"{st.name}.depth"] = max(st.depths)
        block_variants = []
        for kind in self.block_kinds:
            params = sorted(BLOCK_PARAMS[kind])
            combos = [{}]
            for param in params:
                choices = {"kernel": KERNELS, "expansion": EXPANSIONS, "se": SE_CHOICES, "act": ACTS}[param]
                combos = [{**c, param: v} for c in combos for v in choices]
            block_variants += [{"kind": kind, **c} for c in combos]
        # Blocks: for each width pair (prev stage, this stage) and each variant, set every
        # block of every stage to that variant.
        for w_prev in WIDTH_MULTS:
            for w_cur in WIDTH_MULTS:
                for variant in block_variants:
                    sample = dict(base)
                    for i, st in enumerate(STAGES):
                        sample[f"{st.name}.width"] = w_cur if i % 2 == 0 else w_prev
                        for b in range(max(st.depths)):
                            for param, value in variant.items():
                                sample[f"{st.name}.b{b}.{param}"] = value
                    yield self.canonicalize(Architecture(self.name, sample))
        # Neck and head: every neck width x feature widths x kernels x PAN x depths.
        for nc in NECK_CHANNELS:
            for width in WIDTH_MULTS:
                for nk in KERNELS:
                    for hk in KERNELS:
                        sample = dict(base)
                        for st in STAGES:
                            sample[f"{st.name}.width"] = width
                        sample.update({"neck.channels": nc, "neck.kernel": nk, "neck.pan": True,
                                       "neck.depth": max(NECK_DEPTHS), "head.depth": max(HEAD_DEPTHS), "head.kernel": hk})
                        yield self.canonicalize(Architecture(self.name, sample))

    # ----- compact string ----------------------------------------------------------------
    def to_string(self, arch: Architecture) -> str:
        """``cpu_detector|s1x0.5:ir_k3_e6_re+dsconv_k5_se_hs|...|neck:c64_d1_k3_pan|head:d2_k3``.

        Blocks beyond a stage's depth and params a block kind does not use are left out,
        so the string round-trips the *canonical* architecture exactly.
        """
        arch = self.canonicalize(arch)
        s = arch.sample
        parts = [self.name]
        for st in STAGES:
            blocks = []
            for b in range(s[f"{st.name}.depth"]):
                p = f"{st.name}.b{b}"
                kind = s[f"{p}.kind"]
                tok = [kind]
                used = BLOCK_PARAMS[kind]
                if "kernel" in used:
                    tok.append(f"k{s[p + '.kernel']}")
                if "expansion" in used:
                    tok.append(f"e{s[p + '.expansion']}")
                if "se" in used and s[p + ".se"]:
                    tok.append("se")
                if "act" in used:
                    tok.append(ACT_SHORT[s[p + ".act"]])
                blocks.append("_".join(tok))
            parts.append(f"{st.name}x{s[st.name + '.width']}:" + "+".join(blocks))
        neck = f"neck:c{s['neck.channels']}_d{s['neck.depth']}_k{s['neck.kernel']}" + ("_pan" if s["neck.pan"] else "")
        parts += [neck, f"head:d{s['head.depth']}_k{s['head.kernel']}"]
        return "|".join(parts)

    def from_string(self, text: str) -> Architecture:
        parts = text.strip().split("|")
        if parts[0] != self.name:
            raise ArchitectureError(f"compact string must start with '{self.name}|', got {text[:30]!r}")
        if len(parts) != len(STAGES) + 3:
            raise ArchitectureError(
                f"compact string has {len(parts) - 1} sections; expected {len(STAGES)} stages, 'neck:' and 'head:'")
        d = self._decisions
        sample = {k: v[0] for k, v in d.items()}
        short_act = {v: k for k, v in ACT_SHORT.items()}
        for st, section in zip(STAGES, parts[1:1 + len(STAGES)]):
            head, _, body = section.partition(":")
            if not head.startswith(f"{st.name}x"):
                raise ArchitectureError(f"stage section {section!r} must start with '{st.name}x<width>:'")
            sample[f"{st.name}.width"] = _number(head[len(st.name) + 1:], f"{st.name}.width")
            blocks = body.split("+") if body else []
            sample[f"{st.name}.depth"] = len(blocks)
            for b, tok in enumerate(blocks):
                p = f"{st.name}.b{b}"
                kind, *flags = tok.split("_")
                if kind not in BLOCK_PARAMS:
                    raise ArchitectureError(f"field '{p}.kind' has value {kind!r}; allowed values: {d.get(p + '.kind', list(self.block_kinds))}")
                sample[f"{p}.kind"] = kind
                for flag in flags:
                    if flag == "se":
                        sample[f"{p}.se"] = True
                    elif flag in short_act:
                        sample[f"{p}.act"] = short_act[flag]
                    elif flag[:1] == "k":
                        sample[f"{p}.kernel"] = _number(flag[1:], f"{p}.kernel")
                    elif flag[:1] == "e":
                        sample[f"{p}.expansion"] = _number(flag[1:], f"{p}.expansion")
                    else:
                        raise ArchitectureError(f"block {tok!r} ({p}): unknown token {flag!r}; use k<kernel>, e<expansion>, se, re or hs")
        neck, head = parts[-2], parts[-1]
        if not neck.startswith("neck:") or not head.startswith("head:"):
            raise ArchitectureError("the last two sections must be 'neck:c<ch>_d<depth>_k<kernel>[_pan]' and 'head:d<depth>_k<kernel>'")
        for flag in neck[5:].split("_"):
            if flag == "pan":
                sample["neck.pan"] = True
            elif flag[:1] in ("c", "d", "k"):
                sample[{"c": "neck.channels", "d": "neck.depth", "k": "neck.kernel"}[flag[0]]] = _number(flag[1:], "neck")
            else:
                raise ArchitectureError(f"neck section: unknown token {flag!r}")
        for flag in head[5:].split("_"):
            if flag[:1] in ("d", "k"):
                sample[{"d": "head.depth", "k": "head.kernel"}[flag[0]]] = _number(flag[1:], "head")
            else:
                raise ArchitectureError(f"head section: unknown token {flag!r}")
        return self.canonicalize(Architecture(self.name, sample))

    # ----- reference architectures ---------------------------------------------------------
    def reference_architectures(self) -> dict[str, Architecture]:
        """Hand-designed baselines at widths 0.5 and 1.0, e.g. ``mobilenetv2_like_w1.0``."""
        refs, whole = {}, self.unrestricted()
        for width in (0.5, 1.0):
            for name, spec in REFERENCES.items():
                arch = whole.from_string(spec.format(w=width))
                refs[f"{name}_w{width}"] = self.canonicalize(arch.replace(**self.hold)) if self.hold else arch
        return refs


def _number(raw: str, field: str):
    try:
        return float(raw) if "." in raw else int(raw)
    except ValueError:
        raise ArchitectureError(f"field '{field}' expects a number, got {raw!r}") from None


# Reference networks written in the compact form; {w} is the width multiplier.
REFERENCES = {
    # MobileNetV2: inverted residuals, expansion 6, 3x3, ReLU(6), no SE.
    "mobilenetv2_like": "cpu_detector|s1x{w}:ir_k3_e6_re+ir_k3_e6_re|s2x{w}:ir_k3_e6_re+ir_k3_e6_re+ir_k3_e6_re"
    "|s3x{w}:ir_k3_e6_re+ir_k3_e6_re+ir_k3_e6_re+ir_k3_e6_re|s4x{w}:ir_k3_e6_re+ir_k3_e6_re+ir_k3_e6_re"
    "|s5x{w}:ir_k3_e6_re+ir_k3_e6_re+ir_k3_e6_re|neck:c96_d0_k3|head:d2_k3",
    # PP-LCNet: depthwise-separable convs, h-swish, 5x5 and SE only in the last stages.
    "pp_lcnet_like": "cpu_detector|s1x{w}:dsconv_k3_hs|s2x{w}:dsconv_k3_hs+dsconv_k3_hs|s3x{w}:dsconv_k3_hs+dsconv_k3_hs"
    "|s4x{w}:dsconv_k5_hs+dsconv_k5_hs+dsconv_k5_hs|s5x{w}:dsconv_k5_se_hs+dsconv_k5_se_hs|neck:c96_d1_k5_pan|head:d2_k5",
    # ShuffleNetV2: shuffle units, 3x3, ReLU, no SE.
    "shufflenetv2_like": "cpu_detector|s1x{w}:shuffle_k3_re|s2x{w}:shuffle_k3_re+shuffle_k3_re+shuffle_k3_re"
    "|s3x{w}:shuffle_k3_re+shuffle_k3_re+shuffle_k3_re+shuffle_k3_re|s4x{w}:shuffle_k3_re+shuffle_k3_re+shuffle_k3_re"
    "|s5x{w}:shuffle_k3_re+shuffle_k3_re+shuffle_k3_re|neck:c96_d1_k5_pan|head:d2_k5",
    # GhostNet: ghost bottlenecks, 5x5 and SE in the later stages, ReLU.
    "ghostnet_like": "cpu_detector|s1x{w}:ghost_k3_e3_re+ghost_k3_e3_re|s2x{w}:ghost_k5_e3_se_re+ghost_k5_e3_se_re"
    "|s3x{w}:ghost_k3_e6_re+ghost_k3_e3_re+ghost_k3_e3_re+ghost_k3_e6_se_re|s4x{w}:ghost_k3_e6_se_re+ghost_k3_e6_se_re"
    "|s5x{w}:ghost_k5_e6_se_re+ghost_k5_e6_re+ghost_k5_e6_se_re|neck:c96_d1_k3_pan|head:d2_k3",
}


class CpuDetector(nn.Module):
    """The built detector. ``forward(x)`` returns ``(scores [B,N,C], boxes [B,N,4])``,
    decoded and in input pixels; ``forward_levels(x)`` the raw per-level head outputs
    that the trainer's loss works on. Modules are looked up by the roles of ``ops()``."""

    def __init__(self, modules: dict[str, nn.Module], arch: Architecture, num_classes: int):
        super().__init__()
        self.arch_json = arch.to_json()
        self.num_classes = num_classes
        s = arch.sample
        self.stem = modules["stem"]
        self.stages = nn.ModuleList(
            nn.Sequential(*[modules[f"{st.name}.b{b}"] for b in range(s[f"{st.name}.depth"])]) for st in STAGES)
        self.feature_index = [i for i, st in enumerate(STAGES) if st.name in FEATURE_STAGES]
        self.laterals = nn.ModuleList(modules[f"neck.lateral{i}"] for i in range(3))
        self.top_down = nn.ModuleList(modules[f"neck.td{i}"] for i in range(2))
        self.bottom_up = nn.ModuleList(modules[f"neck.bu{i}"] for i in (1, 2)) if s["neck.pan"] else nn.ModuleList()
        self.neck_out = nn.ModuleList(
            nn.Sequential(*[modules[f"neck.out{i}.b{b}"] for b in range(s["neck.depth"])]) for i in range(3))
        self.heads = nn.ModuleList(
            nn.Sequential(*[modules[f"head{i}.b{b}"] for b in range(s["head.depth"])], modules[f"head{i}.pred"])
            for i in range(3))
        self.decode = modules["decode"]

    def features(self, x):
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.feature_index:
                feats.append(x)
        return feats

    def neck(self, feats):
        p = [lat(f) for lat, f in zip(self.laterals, feats)]
        p[1] = self.top_down[1](p[1], p[2])
        p[0] = self.top_down[0](p[0], p[1])
        if len(self.bottom_up):
            p[1] = self.bottom_up[0](p[1], p[0])
            p[2] = self.bottom_up[1](p[2], p[1])
        return [blocks(level) for blocks, level in zip(self.neck_out, p)]

    def forward_levels(self, x):
        return [head(level) for head, level in zip(self.heads, self.neck(self.features(x)))]

    def forward(self, x):
        return self.decode(*self.forward_levels(x))
