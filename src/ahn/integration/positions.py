"""Positions inside the cache (SPEC §2c, `AHNConfig(positions="bounded")`).

Keys are cached after RoPE at their original positions. Under "bounded" the window keys keep
their true distance to the query, and the sinks and the salient store are seen in a frame of
their own ("far"), turned back with the base's own rotary embedding:

- the query at logical position `t` is seen at `min(t, C)`, `C = S + G + W - 1`;
- a sink or stored key at logical position `j` is seen at `min(j, S + G - 1)`: a sink at its own
  position, a token stored after the first `S + G` at the last position before the window.

So past `C` every sink sits at distance `C - j` (at most `S + G + W - 1`) and every stored token
at distance `W` (those from the first `S + G` tokens at up to `W + G - 1`), whatever `t`: the
layout StreamingLLM uses (sinks right before the window), the store in between. Up to `C` nothing
is turned (every distance is the original one), so short inputs are computed as under "original".
A key's turn is fixed when it is stored (the query that evicts token `j` is at `j + W`, so both
use `far_turn`), the query's per query: a function of positions only, the same on every path.

RoPE turns by angles proportional to the position, so turning back by `d` positions is a RoPE
rotation by `-d`: cos(d), -sin(d) from the base's rotary embedding (its `attention_scaling`
divided out), applied with the base's own `rotate_half`.
"""

from __future__ import annotations

import sys

import torch
from torch import nn


class Rerotation:
    """Turns tensors after RoPE back by a number of positions, per row and token, with the base's
    rotary embedding (`model.model.rotary_emb`) and `rotate_half` (of its modeling module)."""

    def __init__(self, rotary_emb: nn.Module, rotate_half) -> None:
        self.rotary_emb = rotary_emb
        self.rotate_half = rotate_half

    def back(self, x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
        """x: [B, h, T, D] after RoPE; turn: [B, T] long >= 0. Returns x seen `turn` positions
        earlier, in x's dtype (the rotation itself in float32)."""
        anchor = x.new_empty(0, dtype=torch.float32)
        cos, sin = self.rotary_emb(anchor, turn)  # [B, T, D] float32, times attention_scaling
        scale = float(getattr(self.rotary_emb, "attention_scaling", 1.0) or 1.0)
        cos, sin = cos[:, None] / scale, sin[:, None] / scale
        xf = x.float()
        return (xf * cos - self.rotate_half(xf) * sin).to(x.dtype)


def find_rerotation(decoder: nn.Module) -> Rerotation | None:
    """The base's rotary embedding and `rotate_half`, or None when it has no such pair."""
    rotary = getattr(decoder, "rotary_emb", None)
    attn = decoder.layers[0].self_attn
    rotate_half = getattr(sys.modules.get(type(attn).__module__), "rotate_half", None)
    if not isinstance(rotary, nn.Module) or not callable(rotate_half):
        return None
    return Rerotation(rotary, rotate_half)


def horizon(sinks: int, salient: int, window: int) -> int:
    """C: the largest position a query is seen at by the sinks and the store."""
    return sinks + salient + window - 1


def far_turn(slots: torch.Tensor, pad: torch.Tensor, C: int) -> torch.Tensor:
    """[B, T] positions the queries at `slots` [T] (rows left-padded by `pad` [B]) are turned
    back for the sinks and the store: `max(0, t - C)` of their logical position t."""
    return (slots[None, :] - pad[:, None] - C).clamp(min=0)


def two_frames(q, q_far, k_far, v_far, k_near, v_near):
    """One softmax over keys in two frames: `q . k` for the window keys (`k_near`), `q_far . k`
    for the sinks and the store (`k_far`), by concatenating along the head dimension:
    [q | q_far] against [k_near | 0] and [0 | k_far] (exact: the zeros add nothing).

    q, q_far: [B, H, Tq, D]; k_far, v_far: [B, Hkv, F, D]; k_near, v_near: [B, Hkv, N, D].
    Returns (q [B, H, Tq, D'], k [B, Hkv, F + N, D'], v [B, Hkv, F + N, D]), D' = D or 2D;
    `q_far` None: the one frame of "original".
    """
    v = torch.cat([v_far, v_near], dim=-2)
    if q_far is None:
        return q, torch.cat([k_far, k_near], dim=-2), v
    k = torch.cat(
        [
            torch.cat([torch.zeros_like(k_far), k_far], dim=-1),
            torch.cat([k_near, torch.zeros_like(k_near)], dim=-1),
        ],
        dim=-2,
    )
    return torch.cat([q, q_far], dim=-1), k, v
