"""A third-party search space: a tiny CNN classifier family (width x depth x kernel).

It lives in its own package and reaches the engine only through the
``nas.search_spaces`` entry point declared in this package's pyproject.toml.
"""
from torch import nn

from search_spaces import SearchSpace


class TinyPluginSpace(SearchSpace):
    """A plugin space of tiny CNNs (entry point 'tiny_plugin')."""

    name = "tiny_plugin"

    def __init__(self, input_size: int = 32):
        self.input_size = input_size

    def settings(self):
        return {"input_size": self.input_size}

    def decisions(self):
        return {"width": [8, 16], "depth": [1, 2, 3], "kernel": [3, 5]}

    def build(self, arch):
        s = arch.sample
        layers, c = [], 3
        for _ in range(s["depth"]):
            layers += [nn.Conv2d(c, s["width"], s["kernel"], padding=s["kernel"] // 2), nn.ReLU()]
            c = s["width"]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

    def ops(self, arch, input_hw=None):
        from search_spaces import OpSpec

        h = w = self.input_size
        return [OpSpec.make("conv", [(1, 3, h, w)], "body", cout=arch.sample["width"], kernel=arch.sample["kernel"], stride=1, act="relu")]
