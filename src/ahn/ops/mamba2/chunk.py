"""Chunked Mamba2 (SSD) scan, `mamba_chunk_scan_combined` of mamba_ssm."""

from __future__ import annotations

import torch

from ahn.ops.mamba2.naive import naive_recurrent_mamba2
from ahn.ops.utils import check_chunk_size, fast_path


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
        B, C: `[b, T, G, N]`, G dividing H.  chunk_size: positive int.
        D: `[H]` or `[H, P]`.  z: `[b, T, H, P]`.
        dt_bias: `[H]`, added to dt before the optional softplus; dt is then clamped to dt_limit.
        initial_states: `[b, H, P, N]` float32 (receives gradients).

    Returns:
        y `[b, T, H, P]` in the dtype of x, or `(y, final_states [b, H, P, N] float32)`
        when return_final_states. On CUDA with `mamba_ssm` installed, its kernel computes it.
    """
    ssm = fast_path("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined", x, B, C)
    if ssm is not None:
        return ssm(
            x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
            initial_states=initial_states, dt_softplus=dt_softplus, dt_limit=dt_limit,
            return_final_states=return_final_states,
        )  # fmt: skip
    check_chunk_size(chunk_size)
    return naive_recurrent_mamba2(
        x, dt, A, B, C, D, z, dt_bias, initial_states, dt_softplus, dt_limit, return_final_states
    )
