"""Pieces shared by the Mamba2 reference and the chunked scan: validation and dt handling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ahn.ops.utils import check_state, check_tensor


def check_mamba2_inputs(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    initial_states: torch.Tensor | None,
) -> None:
    """Validate Mamba2 scan inputs; shapes as in `mamba_chunk_scan_combined`."""
    check_tensor("x", x, (None, None, None, None))
    b, T, H, P = x.shape
    check_tensor("dt", dt, (b, T, H))
    check_tensor("A", A, (H,))
    check_tensor("B", B, (b, T, None, None))
    G, N = B.shape[2:]
    if H % G != 0:
        raise ValueError(f"B has {G} groups, which does not divide the {H} heads of x")
    check_tensor("C", C, (b, T, G, N))
    if D is not None:
        check_tensor("D", D, (H,) if D.dim() == 1 else (H, P))
    if z is not None:
        check_tensor("z", z, (b, T, H, P))
    if dt_bias is not None:
        check_tensor("dt_bias", dt_bias, (H,))
    check_state("initial_states", initial_states, (b, H, P, N))


def discretize_dt(
    dt: torch.Tensor,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
) -> torch.Tensor:
    """The step sizes the scan uses: `clamp(softplus?(dt + dt_bias), *dt_limit)` in fp32."""
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    if dt_limit != (0.0, float("inf")):
        dt = dt.clamp(*dt_limit)
    return dt


def expand_groups(x: torch.Tensor, H: int) -> torch.Tensor:
    """Repeat the G groups of `x` `[b, T, G, N]` to H heads (head h reads group h // (H // G))."""
    return x.repeat_interleave(H // x.shape[2], dim=2)


def skip_and_gate(
    y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None
) -> torch.Tensor:
    """`y + D x`, then `* silu(z)` when z is given. All `[b, T, H, P]`, fp32."""
    if D is not None:
        y = y + x * (D.float()[:, None] if D.dim() == 1 else D.float())
    if z is not None:
        y = y * F.silu(z.float())
    return y
