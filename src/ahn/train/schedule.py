"""Learning-rate schedule: linear warmup then cosine decay to zero (the paper's recipe)."""

from __future__ import annotations

import math


def get_lr(step: int, lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based).

    Args:
        step: the step about to be taken, in `[0, total_steps)`.
        lr: peak learning rate, reached at the end of the warmup.
        warmup_steps: steps of linear warmup from `lr / warmup_steps`.
        total_steps: steps of the whole run; the cosine reaches zero one step after the last.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
