"""Readable per-token reference of the Mamba2 (SSD) scan."""

from __future__ import annotations

import torch

from ahn.ops.mamba2.common import check_mamba2_inputs, discretize_dt, expand_groups, skip_and_gate


def naive_recurrent_mamba2(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
):
    """Mamba2 scan, one token at a time, in fp32.

    Per head, with state h `[P, N]`:
        h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T
        y_t = h_t C_t + D x_t           (then `* silu(z_t)` when z is given)

    Args:
        x: `[b, T, H, P]`.  dt: `[b, T, H]`.  A: `[H]` (negative).
        B, C: `[b, T, G, N]`, G dividing H.  D: `[H]` or `[H, P]`.  z: `[b, T, H, P]`.
        dt_bias: `[H]`, added to dt before the optional softplus; dt is then clamped to dt_limit.
        initial_states: `[b, H, P, N]` float32.

    Returns:
        y `[b, T, H, P]` in the dtype of x, or `(y, final_states [b, H, P, N] float32)`
        when return_final_states.
    """
    check_mamba2_inputs(x, dt, A, B, C, D, z, dt_bias, initial_states)
    b, T, H, P = x.shape
    N = B.shape[-1]
    dt = discretize_dt(dt, dt_bias, dt_softplus, dt_limit)
    xf, A = x.float(), A.float()
    B, C = expand_groups(B.float(), H), expand_groups(C.float(), H)  # [b, T, H, N]
    h = xf.new_zeros(b, H, P, N) if initial_states is None else initial_states
    y = []
    # unbind rather than x[:, t], whose backward would zero-fill a full-size gradient per token
    for dt_t, x_t, B_t, C_t in zip(*(u.unbind(1) for u in (dt, xf, B, C)), strict=True):
        decay = torch.exp(dt_t * A)[..., None, None]  # [b, H, 1, 1]
        h = decay * h + torch.einsum("bh,bhp,bhn->bhpn", dt_t, x_t, B_t)
        y.append(torch.einsum("bhpn,bhn->bhp", h, C_t))
    y = skip_and_gate(torch.stack(y, dim=1), xf, D, z).to(x.dtype)
    return (y, h) if return_final_states else y
