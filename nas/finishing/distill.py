"""Knowledge distillation for the detectors of the space.

Three terms, added to the supervised detection loss with their weights: soft class
targets and objectness-weighted box distillation (:mod:`evaluators.distillation`, where
they are defined and explained, shared with the supernet's in-place distillation), and

* **feature imitation** on the neck outputs (FitNets, Romero et al.): a trained 1x1
  adaptation conv maps each student level to the teacher's width; mean squared error.

:func:`distillation_losses` is exactly zero when student and teacher outputs are equal
and the adapters are identities (:func:`make_adapters` starts them so when widths
match).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.distillation import box_distillation, class_distillation
from evaluators.trainer import dense_loss, split_dense


@dataclass
class DetectorOutputs:
    """What distillation compares, from one forward pass of a detector of the space."""
    cls_logits: torch.Tensor        # [B, N, C] raw class logits over all levels
    boxes: torch.Tensor             # [B, N, 4] decoded xyxy boxes in pixels
    neck: list[torch.Tensor]        # neck output per level, [B, C_neck, H, W]


def detector_outputs(model, images: torch.Tensor) -> DetectorOutputs:
    """One forward of a :class:`search_spaces.cpu_detector.CpuDetector` (or a pruned one),
    keeping the neck outputs that ``forward_levels`` discards."""
    neck = model.neck(model.features(images))
    dense = model.decode.flatten(*[head(level) for head, level in zip(model.heads, neck)])
    return DetectorOutputs(*split_dense(model, dense), neck)


def neck_widths(model) -> list[int]:
    """Output channels of each neck level (a forward on a tiny input would cost more)."""
    return [int(lat[0].out_channels) for lat in model.laterals]


def make_adapters(student_widths: list[int], teacher_widths: list[int]) -> nn.ModuleList:
    """One 1x1 conv per level, student width -> teacher width; identity when they match
    (so a student that already equals its teacher starts at zero imitation loss)."""
    adapters = nn.ModuleList()
    for cs, ct in zip(student_widths, teacher_widths):
        conv = nn.Conv2d(cs, ct, 1, bias=False)
        if cs == ct:
            with torch.no_grad():
                conv.weight.copy_(torch.eye(cs).view(cs, cs, 1, 1))
        adapters.append(conv)
    return adapters


def distillation_losses(student_out: DetectorOutputs, teacher_out: DetectorOutputs, adapters: nn.ModuleList,
                        temperature: float = 2.0) -> dict[str, torch.Tensor]:
    """Unweighted distillation terms ``{"kd_cls", "kd_box", "kd_feat"}`` (scalars).

    ``teacher_out`` should be computed without gradients. Both outputs must cover the
    same points (same input size and strides) and the same classes.
    """
    kd_cls = class_distillation(student_out.cls_logits, teacher_out.cls_logits, temperature)
    kd_box = box_distillation(student_out.boxes, teacher_out.boxes, teacher_out.cls_logits)
    kd_feat = sum(F.mse_loss(adapter(s), t_feat) for adapter, s, t_feat in
                  zip(adapters, student_out.neck, teacher_out.neck)) / len(adapters)
    return {"kd_cls": kd_cls, "kd_box": kd_box, "kd_feat": kd_feat}


class DistillStudent(nn.Module):
    """The student plus its adaptation convs, so one optimiser trains both; the
    teacher is deliberately not a submodule (it must stay frozen and in eval mode)."""

    def __init__(self, student: nn.Module, adapters: nn.ModuleList):
        super().__init__()
        self.student = student
        self.adapters = adapters


class DistillLoss:
    """``loss_fn(wrapper, images, targets)`` for :func:`evaluators.trainer.train`:
    supervised loss + weighted distillation terms; the parts are returned too."""

    def __init__(self, teacher: nn.Module, temperature: float, cls_weight: float, box_weight: float,
                 feature_weight: float):
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature = temperature
        self.weights = {"kd_cls": cls_weight, "kd_box": box_weight, "kd_feat": feature_weight}

    def __call__(self, wrapper: DistillStudent, images: torch.Tensor, targets: list[dict]) -> dict:
        model = wrapper.student
        out = detector_outputs(model, images)
        with torch.no_grad():
            teacher_out = detector_outputs(self.teacher, images)
        # The supervised loss from the same forward (trainer.supervised_loss would run a second one).
        losses = dict(dense_loss(model, out.cls_logits, out.boxes, targets))
        kd = distillation_losses(out, teacher_out, wrapper.adapters, self.temperature)
        losses["loss"] = losses["loss"] + sum(self.weights[k] * v for k, v in kd.items())
        return {**losses, **kd}
