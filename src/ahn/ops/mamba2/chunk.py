"""Chunked Mamba2 (SSD) scan, `mamba_chunk_scan_combined` of mamba_ssm.

Within a chunk with cumulative log-decay `ac = cumsum(dt A)` and state h_0 `[P, N]` entering it:

    y_t = sum_{s<=t} exp(ac_t - ac_s) (C_t·B_s) dt_s x_s  +  exp(ac_t) h_0 C_t
    h_C = exp(ac_C) h_0 + sum_s exp(ac_C - ac_s) dt_s x_s B_s^T

Everything except the chunk-to-chunk recurrence of h is batched matmuls over all chunks (the
SSD algorithm of the Mamba2 paper, as in mamba_ssm's `ssd_minimal`); autograd differentiates it
chunk by chunk, with no per-token loop.
"""

from __future__ import annotations

import torch

from ahn.ops.mamba2.common import check_mamba2_inputs, discretize_dt, expand_groups, skip_and_gate
from ahn.ops.utils import check_chunk_size, decay_mask, dispatch, from_chunks, to_chunks


def ssd_chunk_scan(x, a, B, C, h0):
    """SSD over chunked fp32 inputs.

    Args:
        x: `[Nc, M, L, P]` inputs already multiplied by dt (M = batch * heads, L = chunk length).
        a: `[Nc, M, L]` log-decays `dt * A`.
        B, C: `[Nc, M, L, N]`.
        h0: `[M, P, N]` or None.

    Returns:
        y `[Nc, M, L, P]` and the final state `[M, P, N]`.
    """
    ac = a.cumsum(-1)
    y = (C @ B.transpose(-1, -2) * decay_mask(ac, strict=False)) @ x
    to_end = (ac[..., -1:] - ac).exp()[..., None]
    states = (x * to_end).transpose(-1, -2) @ B  # [Nc, M, P, N]: each chunk's own writes
    chunk_decay = ac[..., -1].exp()[..., None, None]
    h = [x.new_zeros(states.shape[1:]) if h0 is None else h0]
    # unbind, not states[n]: the backward of each index would zero-fill a full-size gradient
    for decay_n, states_n in zip(chunk_decay.unbind(0), states.unbind(0), strict=True):
        h.append(decay_n * h[-1] + states_n)
    entering = torch.stack(h[:-1])  # [Nc, M, P, N]
    y = y + ac.exp()[..., None] * (C @ entering.transpose(-1, -2))
    return y, h[-1]


@dispatch("mamba_ssm.ops.triton.ssd_combined", on=("x", "B", "C"))
def mamba_chunk_scan_combined(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
):
    """Mamba2 scan over a sequence, chunk by chunk.

    Per head, with state h `[P, N]`:
        h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T
        y_t = h_t C_t + D x_t           (then `* silu(z_t)` when z is given)

    Args:
        x: `[b, T, H, P]`.  dt: `[b, T, H]`.  A: `[H]` (negative).
        B, C: `[b, T, G, N]`, G dividing H.  chunk_size: positive int (T < chunk_size runs
        as one chunk of T tokens, so decoding one token costs no padding).
        D: `[H]` or `[H, P]`.  z: `[b, T, H, P]`.
        dt_bias: `[H]`, added to dt before the optional softplus; dt is then clamped to dt_limit.
        initial_states: `[b, H, P, N]` float32 (receives gradients).

    Returns:
        y `[b, T, H, P]` in the dtype of x, or `(y, final_states [b, H, P, N] float32)`
        when return_final_states. On CUDA with `mamba_ssm` installed, its kernel computes it.
    """
    check_chunk_size(chunk_size)
    check_mamba2_inputs(x, dt, A, B, C, D, z, dt_bias, initial_states)
    b, T, H, P = x.shape
    chunk = min(chunk_size, T)
    dt = discretize_dt(dt, dt_bias, dt_softplus, dt_limit)  # [b, T, H]
    xf = x.float()
    Bh, Ch = expand_groups(B.float(), H), expand_groups(C.float(), H)  # [b, T, H, N]
    h0 = None if initial_states is None else initial_states.flatten(0, 1)
    y, hT = ssd_chunk_scan(
        to_chunks(xf * dt[..., None], chunk),
        to_chunks(dt * A.float(), chunk),
        to_chunks(Bh, chunk),
        to_chunks(Ch, chunk),
        h0,
    )
    y = skip_and_gate(from_chunks(y, b, T), xf, D, z).to(x.dtype)
    return (y, hT.unflatten(0, (b, H))) if return_final_states else y
