"""Per-token reference of the delta rule: the gated delta rule with g = 0."""

from __future__ import annotations

import torch

from ahn.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule


def naive_recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    output_write_norm: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Delta rule `S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T`, `o_t = scale * S_t^T q_t`.

    Args and Returns as `naive_recurrent_gated_delta_rule`, without g.
    """
    g = torch.zeros_like(beta) if isinstance(beta, torch.Tensor) else beta
    return naive_recurrent_gated_delta_rule(
        q,
        k,
        v,
        g,
        beta,
        scale,
        initial_state,
        output_final_state,
        use_qk_l2norm_in_kernel,
        output_write_norm,
    )
