"""Output distillation terms between two detectors of the space (a student and a teacher
over the same points and classes), used by the supernet's in-place distillation
(:mod:`evaluators.supernet`, sampling ``distill``) and by the finishing pass
(:mod:`nas.finishing.distill`, which adds feature imitation).

Each is scaled like the supervised loss (:mod:`evaluators.detection_loss`), so a weight
of 1 gives a gradient of about the same size; a first version (a mean KL over all points
and classes, an L1 on box distances) had gradients 0.1x and 3x the supervised one, and
the distilled student lost 7.7 points mAP@.5 against training without a teacher.

* **soft class targets** (Hinton et al.): the teacher's sigmoid scores (at temperature T)
  are the student's targets under the same quality focal loss the supervised term uses:
  per-class binary KL divergence modulated by ``|student - teacher|^beta``, summed and
  divided by the teacher's objectness mass (its stand-in for the number of positives),
  times T^2. The scores are independent sigmoids, so each class is its own Bernoulli.
  The KL is computed as ``BCE(student) - BCE(teacher)`` with the same targets, so it is
  exactly zero when the logits are equal.
* **objectness-weighted box distillation** (Mehta & Ozturk, "Object detection at 200
  Frames Per Second"): GIoU loss between the student's and the teacher's decoded boxes,
  weighted by the teacher's objectness squared, so its arbitrary boxes on background
  points teach nothing (this head has no objectness output; the teacher's max class
  score plays it; squared, the points below 0.1 carry 2% of the weight instead of 29%).

Teacher tensors should come without gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .boxes import giou_loss_torch
from .detection_loss import QFL_BETA

DEFAULT_TEMPERATURE = 2.0  # of the finishing pass and of the supernet's in-place distillation


def class_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-class-target term (scalar) for class logits ``[B, N, C]`` of both networks."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student outputs {tuple(student_logits.shape)} and teacher outputs "
                         f"{tuple(teacher_logits.shape)} differ; distillation needs the same classes and input size")
    t = float(temperature)
    objectness = torch.sigmoid(teacher_logits).max(-1).values                   # [B, N]
    soft_target = torch.sigmoid(teacher_logits / t)
    # KL(teacher || student) per Bernoulli = CE(teacher, student) - H(teacher).
    kl = (F.binary_cross_entropy_with_logits(student_logits / t, soft_target, reduction="none")
          - F.binary_cross_entropy_with_logits(teacher_logits / t, soft_target, reduction="none"))
    focus = (torch.sigmoid(student_logits / t) - soft_target).abs().pow(QFL_BETA)
    return (kl * focus).sum() / objectness.sum().clamp(min=1e-6) * t * t


def box_distillation(student_boxes: torch.Tensor, teacher_boxes: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Objectness-weighted GIoU term (scalar) for decoded xyxy boxes ``[B, N, 4]``."""
    weight = torch.sigmoid(teacher_logits).max(-1).values.square()
    return (giou_loss_torch(student_boxes, teacher_boxes) * weight).sum() / weight.sum().clamp(min=1e-6)
