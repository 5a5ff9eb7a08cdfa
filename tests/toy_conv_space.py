"""A tiny space of plain conv stacks, small enough to profile inside a test."""
from torch import nn

from search_spaces import OpSpec, SearchSpace, register_space
from search_spaces.ops import make_op


@register_space("toy_conv")
class ToyConvSpace(SearchSpace):
    """1-2 conv layers, width 8/16, kernel 3/5, on a 16x16 input."""

    def __init__(self, input_size: int = 16):
        self.input_size = input_size

    def settings(self):
        return {"input_size": self.input_size}

    def decisions(self):
        return {"depth": [1, 2], "width": [8, 16], "kernel": [3, 5]}

    def active_decisions(self, arch):
        return list(self.decisions())

    def ops(self, arch, input_hw=None):
        h, w = input_hw or (self.input_size, self.input_size)
        specs, c = [], 3
        for i in range(arch.sample["depth"]):
            specs.append(OpSpec.make("conv", [(1, c, h, w)], f"conv{i}", cout=arch.sample["width"],
                                     kernel=arch.sample["kernel"], stride=1, act="relu"))
            c = arch.sample["width"]
        return specs

    def enumerate_ops(self, input_hw=None):
        seen = {}
        for depth in (1, 2):
            for width in (8, 16):
                for kernel in (3, 5):
                    arch = self.from_sample({"depth": depth, "width": width, "kernel": kernel})
                    for op in self.ops(arch, input_hw):
                        seen.setdefault(op.key, op)
        return list(seen.values())

    def build(self, arch):
        return nn.Sequential(*[make_op(s) for s in self.ops(arch)])

    def reference_architectures(self):
        return {}
