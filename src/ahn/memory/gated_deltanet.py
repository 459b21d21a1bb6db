"""GatedDeltaNet memory (SPEC §2): gated delta rule over evicted tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ahn import ops
from ahn.memory.base import (
    GroupLinear,
    HeadNormReadout,
    MemoryModule,
    cached,
    delta_rule,
    init_A_log,
    init_dt_bias,
)


class GatedDeltaNet(HeadNormReadout, MemoryModule):
    """Parameters use the official checkpoint names: `b_proj, a_proj, g_proj` ([H, hidden]),
    `A_log, D, dt_bias` ([H]), `o_norm.weight` ([D]), `o_proj.weight` ([H, D, D]).
    `D` is kept for checkpoint compatibility; the official forward does not use it.
    """

    num_gates = 2  # beta, g

    def __init__(self, hidden_size, num_heads, head_dim, norm_eps=1e-5, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_heads, self.head_dim, self.norm_eps = num_heads, head_dim, norm_eps
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=False, **factory)
        self.a_proj = nn.Linear(hidden_size, num_heads, bias=False, **factory)
        self.g_proj = nn.Linear(hidden_size, num_heads, bias=False, **factory)
        self.A_log = nn.Parameter(init_A_log(num_heads, 0.0, 16.0, device).to(dtype))
        self.D = nn.Parameter(torch.ones(num_heads, **factory))
        self.dt_bias = nn.Parameter(init_dt_bias(num_heads, device).to(dtype))
        self.o_norm = nn.Module()
        self.o_norm.weight = nn.Parameter(torch.ones(head_dim, **factory))
        self.o_proj = GroupLinear(num_heads, head_dim, **factory)
        for p in (self.A_log, self.D, self.dt_bias):
            p._no_weight_decay = True

    def input_projections(self):
        return [self.b_proj, self.a_proj, self.g_proj]

    def gates(self, z):
        return torch.stack(self.beta_g(z), dim=-1)  # [B, T, H, 2]

    def beta_g(self, z):
        """Write-gate logits `[B, T, H, 2]` -> (beta, g) `[B, T, H]`."""
        params = (self.A_log, self.dt_bias)
        neg_A, dt_bias = cached(self, "_decay", params, lambda: (-self.A_log.float().exp(),
                                                                 self.dt_bias.float()))  # fmt: skip
        return z[..., 0].sigmoid(), F.softplus(z[..., 1] + dt_bias) * neg_A

    def step(self, q, k, v, z, state, gate, surprise=False):
        beta, g = self.beta_g(z)
        return self.delta_step(q, k, v, beta, g.exp(), state, gate, surprise)

    def recur(self, q, k, v, gates, initial_state, surprise=False):
        chunk, recurrent = ops.chunk_gated_delta_rule, ops.fused_recurrent_gated_delta_rule
        beta, g = gates[..., 0], gates[..., 1]
        return delta_rule(chunk, recurrent, q, k, v, beta, initial_state, surprise, g=g)
