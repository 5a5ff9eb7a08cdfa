"""Zero-cost proxies: scores of an untrained network from one batch, without training.

Every proxy is ``proxy(model, images, targets) -> float`` and is registered by name in
:data:`PROXIES`. ``images`` is a float batch (B, 3, S, S) in [0, 1] and ``targets`` the
trainer's per-image ``{"boxes", "labels"}`` dicts (see :func:`first_batch`). Higher is
meant to predict better accuracy after training, as in the papers:

  * ``synflow``   Tanaka et al. 2020, as used by Abdelfattah et al. 2021: parameters
                  made absolute, an all-ones input, R = sum of the raw head outputs,
                  score = sum |theta * dR/dtheta| (float64, BN in eval mode).
  * ``naswot``    Mellor et al. 2021 ("without training"): binary codes of which units
                  of every ReLU/h-swish are active, K = c c^T + (1-c)(1-c)^T,
                  score = log|det K|.
  * ``jacob_cov`` Mellor et al. (arXiv v1): correlation matrix of the per-image input
                  Jacobians of the summed outputs, score = -sum(log(e+k) + 1/(e+k)).
  * ``grad_norm`` Abdelfattah et al. 2021: sum of the L2 norms of the gradients of the
                  detection loss.
  * ``snip``      Lee et al. 2019 / Abdelfattah et al. 2021: sum |theta * dL/dtheta|
                  of the detection loss.

As in Abdelfattah et al.'s reference code, the per-parameter sums run over the weights
of conv and linear layers (the "prunable" weights), not over BN affines or biases.

Every registered proxy works on a private deep copy of the model (the caller's weights,
BN statistics and gradients are never touched), runs under a fixed torch seed (so it is
deterministic for a given model, batch and thread count) and raises :class:`ProxyError`
naming itself if the score is not finite: a proxy never returns a made-up value.
"""
from __future__ import annotations

import copy
import functools
import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from search_spaces.errors import InputError

from .base import Evaluator, register_evaluator
from .data import DataConfig
from .trainer import PreparedData, TrainConfig, _batch, supervised_loss

Proxy = Callable[[nn.Module, torch.Tensor, list], float]
PROXIES: dict[str, Proxy] = {}
PROXY_SEED = 0           # every proxy runs under this torch seed
JACOB_COV_K = 1e-5       # Mellor et al.'s regulariser of the eigenvalues


class ProxyError(RuntimeError):
    """A proxy could not produce a finite score for a network; the message names it."""


def register_proxy(name: str) -> Callable[[Proxy], Proxy]:
    """Register ``fn(model, images, targets) -> float`` as proxy ``name``.

    The registered callable deep-copies the model before calling ``fn`` (so ``fn`` may
    change it freely: absolute weights, float64, train mode), seeds torch inside a forked
    RNG (the caller's random state is left as it was) and checks the score is finite.
    """

    def decorate(fn: Proxy) -> Proxy:
        if name in PROXIES:
            raise ValueError(f"zero-cost proxy {name!r} is already registered")

        @functools.wraps(fn)
        def run(model: nn.Module, images: torch.Tensor, targets: list) -> float:
            private = copy.deepcopy(model)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(PROXY_SEED)
                value = float(fn(private, images, targets))
            if not math.isfinite(value):
                raise ProxyError(f"zero-cost proxy {name!r} gave a non-finite score ({value}) for this network")
            return value

        PROXIES[name] = run
        return run

    return decorate


def prunable_weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights of every conv and linear layer, in module order."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _sum_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sum of all raw per-level head outputs (before decoding: the decode's softplus and
    sigmoid would only squash what the proxies measure)."""
    return sum(level.sum() for level in model.forward_levels(x))


def _detection_loss(model: nn.Module, images: torch.Tensor, targets: list) -> torch.Tensor:
    """The trainer's detection loss; labels the model has no class for are an input error
    (the loss would otherwise fail deep inside with an index error)."""
    top = max((int(t["labels"].max()) for t in targets if t["labels"].numel()), default=-1)
    if top >= model.num_classes:
        raise InputError(f"the batch has class id {top} but the network predicts {model.num_classes} classes; "
                         "make the space's num_classes match the data")
    return supervised_loss(model, images, targets)["loss"]


def _gradients(model: nn.Module, images: torch.Tensor, targets: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, dL/dweight) for every prunable weight, BN on batch statistics (train mode,
    as in the papers). A weight the loss does not reach has a zero gradient."""
    model.train()
    weights = prunable_weights(model)
    grads = torch.autograd.grad(_detection_loss(model, images, targets), weights, allow_unused=True)
    return [(w, torch.zeros_like(w) if g is None else g) for w, g in zip(weights, grads)]


@register_proxy("synflow")
def synflow(model: nn.Module, images: torch.Tensor, targets: list) -> float:
    """Sum over prunable weights of |theta * dR/dtheta|, R the summed outputs of the
    network with |theta| for every parameter and buffer, on one all-ones image.

    float64 because R is a product of absolute weights through the whole depth: at
    256 px it is ~1e35 for the reference networks and ~5e41 for the largest network of
    the space, beyond float32's 3.4e38. BN in
    eval mode, so the fresh running statistics (mean 0, var 1) make it an affine map and
    a single image needs no batch statistics. Data-independent: ``images`` only gives
    the input size.
    """
    model.double().eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64)
    weights = prunable_weights(model)
    grads = torch.autograd.grad(_sum_outputs(model, ones), weights, allow_unused=True)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads) if g is not None))


@register_proxy("naswot")
def naswot(model: nn.Module, images: torch.Tensor, targets: list) -> float:
    """log|det K|, K[i, j] = number of ReLU/h-swish units on which images i and j agree
    about being active (input > 0), summed over every activation module.

    Pre-hooks read the activation's input before the in-place op overwrites it. K is
    accumulated per module instead of concatenating codes, which at 256 px would be
    millions of units per image. BN on batch statistics, as in the paper's code.
    """
    n = images.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def accumulate(module, inputs):
        codes = (inputs[0].detach() > 0).flatten(1).double()
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    hooks = [m.register_forward_pre_hook(accumulate) for m in model.modules() if isinstance(m, (nn.ReLU, nn.Hardswish))]
    if not hooks:
        raise ProxyError("zero-cost proxy 'naswot' found no nn.ReLU/nn.Hardswish module in this network")
    model.train()
    try:
        with torch.no_grad():
            model.forward_levels(images)
    finally:
        for h in hooks:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    if sign <= 0:  # K is PSD: a zero determinant means two images share every code
        raise ProxyError("zero-cost proxy 'naswot': the activation-code kernel is singular "
                         "(two images have identical codes); use more varied images")
    return float(logdet)


@register_proxy("jacob_cov")
def jacob_cov(model: nn.Module, images: torch.Tensor, targets: list) -> float:
    """-sum(log(e + k) + 1/(e + k)) over the eigenvalues e of the correlation matrix of
    the images' input Jacobians (of the summed outputs), k = 1e-5. Needs >= 2 images."""
    if images.shape[0] < 2:
        raise ProxyError("zero-cost proxy 'jacob_cov' needs a batch of at least 2 images")
    model.train()
    x = images.clone().requires_grad_(True)
    (jacobian,) = torch.autograd.grad(_sum_outputs(model, x), x)
    rows = jacobian.flatten(1).double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant row gives NaN, caught below
        corr = np.corrcoef(rows)
    if not np.isfinite(corr).all():
        raise ProxyError("zero-cost proxy 'jacob_cov': an input Jacobian is constant, its correlation is undefined")
    eig = np.linalg.eigvalsh(corr)
    return float(-np.sum(np.log(eig + JACOB_COV_K) + 1.0 / (eig + JACOB_COV_K)))


@register_proxy("grad_norm")
def grad_norm(model: nn.Module, images: torch.Tensor, targets: list) -> float:
    """Sum over prunable weights of ||dL/dtheta||_2, L the detection loss."""
    return float(sum(g.norm() for _, g in _gradients(model, images, targets)))


@register_proxy("snip")
def snip(model: nn.Module, images: torch.Tensor, targets: list) -> float:
    """Sum over prunable weights of |theta * dL/dtheta|, L the detection loss."""
    return float(sum((w.detach() * g).abs().sum() for w, g in _gradients(model, images, targets)))


def first_batch(data: PreparedData, batch_size: int) -> tuple[torch.Tensor, list[dict]]:
    """The first ``batch_size`` images of ``data`` as the trainer feeds them, without
    augmentation (no flip, no brightness), so the batch is the same on every call."""
    if len(data) < batch_size:
        raise InputError(f"zero-cost proxies need {batch_size} images but the training data has {len(data)}; "
                         "lower batch_size or raise n_train")
    return _batch(data, np.arange(batch_size), TrainConfig(hflip=False, brightness=0.0), np.random.default_rng(0))


def check_proxy_names(names) -> list[str]:
    """``names`` as a list, or an input error listing the registered proxies."""
    if isinstance(names, str) or not names:
        raise InputError(f"proxies must be a non-empty list of names from {sorted(PROXIES)}, got {names!r}")
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise InputError(f"unknown zero-cost proxy {unknown[0]!r}; valid names: {sorted(PROXIES)}")
    return list(names)


@register_evaluator("zero_cost")
class ZeroCost(Evaluator):
    """``zc_<proxy>`` for each requested proxy, at initialisation, on one training batch.

    The network is built under ``torch.manual_seed(seed)``, i.e. with the very weights
    that ``train_proxy`` (same seed) would start training from. The batch is the first
    ``batch_size`` images of the training split of ``data`` (DataConfig fields).
    """

    cost = "measure"

    def __init__(self, proxies: list[str] | None = None, batch_size: int = 8, data: dict | None = None, seed: int = 0):
        self.proxies = sorted(PROXIES) if proxies is None else check_proxy_names(proxies)
        if int(batch_size) < 2:
            raise InputError(f"zero_cost: batch_size must be >= 2 (naswot and jacob_cov compare images), got {batch_size}")
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.data = DataConfig(**(data or {}))
        self._batches: dict[int, tuple[torch.Tensor, list[dict]]] = {}

    def batch(self, input_size: int) -> tuple[torch.Tensor, list[dict]]:
        """The proxy batch at ``input_size`` (loaded once per size)."""
        if input_size not in self._batches:
            train_data, _ = self.data.load(input_size)
            self._batches[input_size] = first_batch(train_data, self.batch_size)
        return self._batches[input_size]

    def __call__(self, arch, space):
        images, targets = self.batch(space.settings()["input_size"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = space.build(arch)
        return {f"zc_{name}": PROXIES[name](model, images, targets) for name in self.proxies}
