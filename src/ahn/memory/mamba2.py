"""Mamba2 memory (SPEC §2): a selective scan over evicted tokens, state `[H, D, D]`."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ahn import ops
from ahn.memory.base import GroupLinear, MemoryModule, init_A_log, init_dt_bias
from ahn.ops.utils import fp32, l2_normalize, rms_norm

CHUNK_SIZE = 64


class Mamba2(MemoryModule):
    """Official names: `dt_proj.{weight,bias}`, `g_proj.{weight,bias}` ([H, hidden], [H]),
    `A_log, dt_bias` ([H]), `norm.weight` ([H * D]), `o_proj.weight` ([H, D, D]).
    """

    num_gates = 1  # dt

    def __init__(self, hidden_size, num_heads, head_dim, norm_eps=1e-5, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_heads, self.head_dim, self.norm_eps = num_heads, head_dim, norm_eps
        self.dt_proj = nn.Linear(hidden_size, num_heads, bias=True, **factory)
        self.g_proj = nn.Linear(hidden_size, num_heads, bias=True, **factory)
        self.A_log = nn.Parameter(init_A_log(num_heads, 1.0, 16.0, device).to(dtype))
        self.dt_bias = nn.Parameter(init_dt_bias(num_heads, device).to(dtype))
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(torch.ones(num_heads * head_dim, **factory))
        self.o_proj = GroupLinear(num_heads, head_dim, **factory)
        for p in (self.A_log, self.dt_bias):
            p._no_weight_decay = True

    def input_projections(self):
        return [self.dt_proj, self.g_proj]

    def gates(self, z):
        return F.softplus(z + self.dt_bias.float()[:, None])  # [B, T, H, 1]: dt

    def recur(self, q, k, v, gates, initial_state, surprise=False):
        # M_j = exp(dt_j A) M_{j-1} + dt_j k_j v_j^T and r_t = M^T q_t is Mamba2's scan with
        # x = v, B = k, C = q; its state [B, H, P, N] is M^T.
        A = -self.A_log.float().exp()
        state_t = None if initial_state is None else initial_state.transpose(-1, -2)
        k = l2_normalize(k)
        scan = functools.partial(
            ops.mamba_chunk_scan_combined, v, gates[..., 0], A, k, chunk_size=CHUNK_SIZE,
            initial_states=state_t, return_final_states=True,
        )  # fmt: skip
        r, final_t = scan(C=l2_normalize(q))
        if not surprise:
            return r, final_t.transpose(-1, -2)
        return r, final_t.transpose(-1, -2), self.surprise(scan, k, v, gates[..., 0])

    @torch.no_grad()
    def surprise(self, scan, k, v, dt):
        """The delta rules' surprise for Mamba2: `dt_j ||v_j - exp(dt_j A) M_{j-1}^T k_j||`, the
        write strength times what the decayed state could not predict. A second scan, read with
        the keys, gives `M_j^T k_j = exp(dt_j A) M_{j-1}^T k_j + dt_j |k_j|^2 v_j`."""
        read_k, _ = scan(C=k)  # [B, T, H, D]
        dt, kk = dt.float(), fp32(k).square().sum(-1)  # [B, T, H]
        error = fp32(v) * (1 + dt * kk)[..., None] - fp32(read_k)
        return dt * torch.linalg.vector_norm(error, dim=-1)

    def readout(self, r, gate):
        B, T, H, D = r.shape
        gated = r.float() * F.silu(gate).unsqueeze(-1)  # [B, T, H, D]
        o = rms_norm(gated.reshape(B, T, H * D), self.norm.weight, self.norm_eps)
        return self.o_proj(o.reshape(B, T, H, D).to(r.dtype))
