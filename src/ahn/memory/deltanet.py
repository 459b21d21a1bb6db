"""DeltaNet memory (SPEC §2): the delta rule (GatedDeltaNet with g = 0) over evicted tokens."""

from __future__ import annotations

import torch
from torch import nn

from ahn import ops
from ahn.memory.base import GroupLinear, HeadNormReadout, MemoryModule, delta_rule


class DeltaNet(HeadNormReadout, MemoryModule):
    """Official names: `b_proj, g_proj` ([H, hidden]), `o_norm.weight` ([D]), `o_proj.weight`."""

    num_gates = 1  # beta

    def __init__(self, hidden_size, num_heads, head_dim, norm_eps=1e-5, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_heads, self.head_dim, self.norm_eps = num_heads, head_dim, norm_eps
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=False, **factory)
        self.g_proj = nn.Linear(hidden_size, num_heads, bias=False, **factory)
        self.o_norm = nn.Module()
        self.o_norm.weight = nn.Parameter(torch.ones(head_dim, **factory))
        self.o_proj = GroupLinear(num_heads, head_dim, **factory)

    def input_projections(self):
        return [self.b_proj, self.g_proj]

    def gates(self, z):
        return z.sigmoid()  # [B, T, H, 1]: beta

    def step(self, q, k, v, z, state, gate, surprise=False):
        return self.delta_step(q, k, v, z[..., 0].sigmoid(), None, state, gate, surprise)

    def recur(self, q, k, v, gates, initial_state, surprise=False):
        chunk, recurrent = ops.chunk_delta_rule, ops.fused_recurrent_delta_rule
        return delta_rule(chunk, recurrent, q, k, v, gates[..., 0], initial_state, surprise)
