"""The lossless window of a training step (SPEC §5): drawn per step, identical on every rank."""

from __future__ import annotations

import numpy as np

# Candidate sizes of the official recipe: total lossless size, then the sinks inside it.
TOTAL_CHOICES = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
SINK_CHOICES = (0, 32, 64, 128, 512, 2048, 4096)


def draw_window(seed: int, step: int, seq_len: int, min_sinks: int = 0) -> tuple[int, int]:
    """Draw `(sinks, window)` for one optimizer step.

    The total `sinks + window` is uniform over `TOTAL_CHOICES` inside `(seq_len / 8, seq_len)`, the
    sinks uniform over `SINK_CHOICES` up to half of the total. The generator is seeded from
    `(seed, step)` only, so every rank and every resumed run draws the same sizes.

    Args:
        seed: the run's seed.
        step: the optimizer step (0-based).
        seq_len: length of the step's longest sequence.
        min_sinks: leave out sink counts below this (when one remains), e.g. for small bases
            that break down without attention sinks.
    Returns:
        `(sinks, window)`. Past `8 * max(TOTAL_CHOICES)` the largest total is used; at
        `seq_len <= 32` the smallest, which leaves no position to distil on.
    """
    rng = np.random.default_rng([seed, step])
    below = [n for n in TOTAL_CHOICES if n < seq_len] or [TOTAL_CHOICES[0]]
    totals = [n for n in below if seq_len / 8 < n] or below[-1:]
    total = int(rng.choice(totals))
    allowed = [s for s in SINK_CHOICES if s <= total / 2]
    sinks = int(rng.choice([s for s in allowed if s >= min_sinks] or allowed))
    return sinks, total - sinks
