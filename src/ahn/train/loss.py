"""Distillation loss from last hidden states, with vocabulary-sized tensors built chunk by chunk."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def loss_positions(targets: torch.Tensor, sinks: int, window: int) -> torch.Tensor:
    """Positions whose next-token prediction is trained on.

    Args:
        targets: `[B, T]` bool, the token may be predicted (False on padding).
        sinks, window: the lossless set of the step; positions `t < sinks + window` see no memory
            and get no loss.
    Returns:
        `[B, T - 1]` bool: position `t` predicts token `t + 1`.
    """
    mask = targets[:, 1:].clone()
    mask[:, : sinks + window] = False
    return mask


def _chunk_sums(
    lm_head: torch.nn.Module,
    h_student: torch.Tensor,
    h_teacher: torch.Tensor | None,
    labels: torch.Tensor,
) -> torch.Tensor:
    """`[kl, student_ce, teacher_ce]` summed over the `[N, hidden]` rows of one chunk."""
    logp_s = F.log_softmax(lm_head(h_student).float(), dim=-1)  # [N, V]
    ce_s = -logp_s.gather(-1, labels[:, None]).sum()
    if h_teacher is None:
        nan = torch.full_like(ce_s, float("nan"))
        return torch.stack([nan, ce_s, nan])
    with torch.no_grad():
        logp_t = F.log_softmax(lm_head(h_teacher).float(), dim=-1)  # [N, V]
        ce_t = -logp_t.gather(-1, labels[:, None]).sum()
    kl = (logp_t.exp() * (logp_t - logp_s)).sum()
    return torch.stack([kl, ce_s, ce_t])


def distill_sums(
    lm_head: torch.nn.Module,
    h_student: torch.Tensor,
    h_teacher: torch.Tensor | None,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    chunk: int = 1024,
) -> torch.Tensor:
    """Summed KL(teacher || student), student CE and teacher CE over the selected positions.

    Logits exist for at most `chunk` positions at a time, in forward and in backward (each chunk
    is recomputed from its hidden states), so memory does not grow with `T x vocab`.

    Args:
        lm_head: the frozen vocabulary projection.
        h_student: `[B, T, hidden]` last hidden states of the student (with grad).
        h_teacher: `[B, T, hidden]` of the teacher (no grad), or None to skip KL and teacher CE.
        input_ids: `[B, T]` the tokens (labels are the next tokens).
        positions: `[B, T - 1]` bool from `loss_positions`.
        chunk: positions per chunk.
    Returns:
        `[3]` float32 sums `[kl, student_ce, teacher_ce]` (nan where `h_teacher` is None); divide by
        the number of positions of the global batch for per-token means.
    """
    rows_s = h_student[:, :-1][positions]  # [N, hidden]
    rows_t = None if h_teacher is None else h_teacher[:, :-1][positions]
    labels = input_ids[:, 1:][positions]  # [N]
    total = h_student.new_zeros(3, dtype=torch.float32)
    for start in range(0, labels.numel(), chunk):
        part = slice(start, start + chunk)
        teacher = None if rows_t is None else rows_t[part]
        total = total + checkpoint(
            _chunk_sums, lm_head, rows_s[part], teacher, labels[part], use_reentrant=False
        )
    return total
