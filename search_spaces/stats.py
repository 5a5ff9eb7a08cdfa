"""Parameter and FLOP counts of a built network (torch's own FLOP counter)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, input_hw: tuple[int, int]) -> int:
    """FLOPs of one forward pass at batch 1 (a multiply-add counts as 2 FLOPs)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, *input_hw))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
