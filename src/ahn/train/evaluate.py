"""Held-out check of a trained AHN: how far each mode's predictions are from the full model's."""

from __future__ import annotations

from collections.abc import Iterable

import torch

import ahn
from ahn.train.data import Sample, collate
from ahn.train.loss import distill_sums, loss_positions


@torch.no_grad()
def evaluate_kl(
    model: torch.nn.Module,
    sequences: Iterable[list[int]],
    sinks: int,
    window: int,
    modes: tuple[str, ...] = ("ahn", "sliding"),
    chunk: int = 1024,
) -> dict[str, float]:
    """Mean per-token KL(full || mode) over the positions `t >= sinks + window`.

    Args:
        model: an augmented model.
        sequences: token-id lists, evaluated one at a time.
        sinks, window: the lossless set the modes run with.
        modes: the student modes to compare with the "full" teacher.
        chunk: positions per chunk of vocabulary-sized logits.
    Returns:
        `{mode: mean KL}`, plus `"positions"`: how many positions were averaged.
    """
    device = model.get_output_embeddings().weight.device
    sums = dict.fromkeys(modes, 0.0)
    count = 0
    for ids in sequences:
        input_ids, targets = (t.to(device) for t in collate([Sample(list(ids))]))
        positions = loss_positions(targets, sinks, window)
        if not positions.any():
            continue
        count += int(positions.sum())
        with ahn.window(model, window=window, sinks=sinks):
            teacher = hidden_states(model, input_ids, "full")
            for mode in modes:
                student = hidden_states(model, input_ids, mode)
                sums[mode] += float(
                    distill_sums(model.lm_head, student, teacher, input_ids, positions, chunk)[0]
                )
    if count == 0:
        raise ValueError(f"no sequence is longer than sinks + window + 1 = {sinks + window + 1}")
    return {mode: total / count for mode, total in sums.items()} | {"positions": count}


def hidden_states(model, input_ids: torch.Tensor, mode: str) -> torch.Tensor:
    """Last hidden states `[B, T, hidden]` of `model` run in `mode`."""
    with ahn.mode(model, mode):
        return model.model(input_ids=input_ids, use_cache=False).last_hidden_state
