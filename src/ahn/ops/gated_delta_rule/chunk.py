"""Chunkwise-parallel gated delta rule (training and prefill path)."""

from __future__ import annotations

import torch

from ahn.ops.gated_delta_rule.fused_recurrent import recurrent_gated_delta_rule
from ahn.ops.utils import check_delta_inputs, fast_path


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule over a whole sequence (fla's `chunk_gated_delta_rule`).

    Per head, with state S `[K, V]`:
        S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - exp(g_t) S_{t-1}^T k_t)^T
        o_t = scale * S_t^T q_t

    Args:
        q, k: `[B, T, H, K]`.
        v: `[B, T, H, V]`.
        g: `[B, T, H]` log-decay (<= 0).
        beta: `[B, T, H]` write strength.
        scale: query scale, default `K ** -0.5`.
        initial_state: `[B, H, K, V]` float32, default zeros; receives gradients.
        output_final_state: also return the state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise q and k per head inside (gradients included).

    Returns:
        o `[B, T, H, V]` in the dtype of v, and the final state `[B, H, K, V]` float32 or None.
        On CUDA with `fla` installed, fla's kernel computes it.
    """
    fla = fast_path("fla.ops.gated_delta_rule", "chunk_gated_delta_rule", q, k, v)
    if fla is not None:
        return fla(
            q=q, k=k, v=v, g=g, beta=beta, scale=scale, initial_state=initial_state,
            output_final_state=output_final_state,
            use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        )  # fmt: skip
    check_delta_inputs(q, k, v, g, beta, initial_state)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return recurrent_gated_delta_rule(
        q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel
    )
