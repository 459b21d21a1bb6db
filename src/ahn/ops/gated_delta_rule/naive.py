"""Readable per-token reference of the gated delta rule (the ground truth of the tests)."""

from __future__ import annotations

import torch

from ahn.ops.utils import check_delta_inputs, l2norm


def naive_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    output_write_norm: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Gated delta rule, one token at a time, in fp32.

    Per head, with state S `[K, V]`:
        S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - exp(g_t) S_{t-1}^T k_t)^T
        o_t = scale * S_t^T q_t

    Args:
        q, k: `[B, T, H, K]`.
        v: `[B, T, H, V]`.
        g: `[B, T, H]` log-decay (<= 0).
        beta: `[B, T, H]` write strength.
        scale: query scale, default `K ** -0.5`.
        initial_state: `[B, H, K, V]` float32, default zeros.
        output_final_state: also return the state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise q and k per head first.
        output_write_norm: also return `||u_t||` `[B, T, H]`, the norm of the written value
            `u_t = beta_t (v_t - exp(g_t) S_{t-1}^T k_t)`.

    Returns:
        o `[B, T, H, V]` in the dtype of v, the final state `[B, H, K, V]` float32 or None, and
        the write norms when asked.
    """
    check_delta_inputs(q, k, v, g, beta, initial_state)
    B, T, H, K = q.shape
    V, dtype = v.shape[-1], v.dtype
    scale = K**-0.5 if scale is None else scale
    q, k, v, g, beta = (x.float() for x in (q, k, v, g, beta))
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state
    o, u = [], []
    # unbind rather than x[:, t], whose backward would zero-fill a full-size gradient per token
    steps = zip(q.unbind(1), k.unbind(1), v.unbind(1), g.unbind(1), beta.unbind(1), strict=True)
    for q_t, k_t, v_t, g_t, beta_t in steps:  # [B, H, K], [B, H, K], [B, H, V], [B, H], [B, H]
        S = S * g_t.exp()[..., None, None]
        v_old = torch.einsum("bhkv,bhk->bhv", S, k_t)
        v_new = beta_t[..., None] * (v_t - v_old)
        S = S + torch.einsum("bhk,bhv->bhkv", k_t, v_new)
        o.append(scale * torch.einsum("bhkv,bhk->bhv", S, q_t))
        u.append(v_new.detach().norm(dim=-1))  # [B, H]
    o = torch.stack(o, dim=1).to(dtype)
    out = o, (S if output_final_state else None)
    return (*out, torch.stack(u, dim=1)) if output_write_norm else out
