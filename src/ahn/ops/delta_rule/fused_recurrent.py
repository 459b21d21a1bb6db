"""Token-by-token delta rule (the gated recurrence with no decay)."""

from __future__ import annotations

import torch

from ahn.ops.gated_delta_rule.fused_recurrent import recurrent_gated_delta_rule
from ahn.ops.utils import check_delta_inputs, dispatch


@dispatch("fla.ops.delta_rule", on=("q", "k", "v"), local=("output_write_norm",))
def fused_recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    output_write_norm: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Delta rule token by token (fla's `fused_recurrent_delta_rule`).

    `S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T`, `o_t = scale * S_t^T q_t`.

    Args:
        q, k: `[B, T, H, K]`.  v: `[B, T, H, V]`.  beta: `[B, T, H]`, default ones.
        scale: default `K ** -0.5`.  initial_state: `[B, H, K, V]` float32.
        output_final_state, use_qk_l2norm_in_kernel: as in fla.
        output_write_norm: also return `||u_t||` `[B, T, H]` (see `chunk_gated_delta_rule`).

    Returns:
        o `[B, T, H, V]` in the dtype of v, the final state `[B, H, K, V]` float32 or None, and
        the write norms when asked.
    """
    beta = torch.ones_like(q[..., 0]) if beta is None else beta
    check_delta_inputs(q, k, v, None, beta, initial_state)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return recurrent_gated_delta_rule(
        q,
        k,
        v,
        None,
        beta,
        scale,
        initial_state,
        output_final_state,
        use_qk_l2norm_in_kernel,
        output_write_norm,
    )
