"""The chunkwise gated delta rule's autograd Function and API (fla's `chunk_gated_delta_rule`);
the forward is in `chunk_fwd`, the backward in `chunk_bwd`."""

from __future__ import annotations

import torch

from ahn.ops.gated_delta_rule.chunk_bwd import chunk_bwd
from ahn.ops.gated_delta_rule.chunk_fwd import CHUNK_SIZE, chunk_fwd
from ahn.ops.gated_delta_rule.fused_recurrent import recurrent_gated_delta_rule
from ahn.ops.utils import check_delta_inputs, dispatch, l2norm


class ChunkGatedDeltaRuleFunction(torch.autograd.Function):
    """Autograd wrapper of `chunk_fwd` / `chunk_bwd` on fp32 `[B, T, H, D]` tensors."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, h0, chunk_size, keep_states, write_norm):
        o, S, saved, norms = chunk_fwd(
            q, k, v, g, beta, scale, h0, chunk_size, keep_states, write_norm
        )
        if keep_states:
            ctx.save_for_backward(q, k, v, *saved)
            ctx.scale, ctx.chunk_size = scale, chunk_size
        if norms is None:
            return o, S
        ctx.mark_non_differentiable(norms)
        return o, S, norms

    @staticmethod
    def backward(ctx, do, dS, *_):
        q, k, v, *saved = ctx.saved_tensors
        need_dg = ctx.needs_input_grad[3]
        grads = chunk_bwd(q, k, v, saved, ctx.scale, ctx.chunk_size, do, dS, need_dg)
        dq, dk, dv, dg, dbeta, dh0 = grads
        dh0 = dh0 if ctx.needs_input_grad[6] else None
        return dq, dk, dv, dg, dbeta, None, dh0, None, None, None


def chunk_gated_delta_rule_fwd(
    q,
    k,
    v,
    g,
    beta,
    scale,
    initial_state,
    output_final_state,
    use_qk_l2norm_in_kernel,
    output_write_norm=False,
):
    """Validated `[B, T, H, D]` inputs in, `(o, final_state)` out (and the write norms `[B, T, H]`
    when `output_write_norm`); `g=None`: no decay.

    Casts to fp32, L2-normalises q/k if asked and runs `ChunkGatedDeltaRuleFunction` over
    chunks of `CHUNK_SIZE` tokens (T for shorter inputs). A single token (decoding) takes the
    token recurrence, 5x cheaper.
    """
    B, T, H, K = q.shape
    if T == 1:
        args = (initial_state, output_final_state, use_qk_l2norm_in_kernel, output_write_norm)
        return recurrent_gated_delta_rule(q, k, v, g, beta, scale, *args)
    dtype = v.dtype
    q, k, v, beta = (x.float() for x in (q, k, v, beta))
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    g = torch.zeros_like(beta) if g is None else g.float()
    h0 = None if initial_state is None else initial_state.flatten(0, 1)
    chunk = min(CHUNK_SIZE, T)
    tensors = (q, k, v, g, beta, h0)
    keep = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)
    o, S, *norms = ChunkGatedDeltaRuleFunction.apply(
        *tensors[:5], scale, h0, chunk, keep, output_write_norm
    )
    return o.to(dtype), (S.unflatten(0, (B, H)) if output_final_state else None), *norms


@dispatch("fla.ops.gated_delta_rule", on=("q", "k", "v"), local=("output_write_norm",))
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
    output_write_norm: bool = False,
) -> tuple[torch.Tensor, ...]:
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
        output_write_norm: also return `||u_t||` `[B, T, H]` float32, the norm of the value each
            token writes, `u_t = beta_t (v_t - exp(g_t) S_{t-1}^T k_t)` (ours, not fla's: the
            salient store's "surprise"; no gradient flows through it).

    Returns:
        o `[B, T, H, V]` in the dtype of v, the final state `[B, H, K, V]` float32 or None, and
        the write norms when asked. On CUDA with `fla` installed, fla's kernel computes it
        (not when the write norms are asked: fla has no such output).
    """
    check_delta_inputs(q, k, v, g, beta, initial_state)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    args = (initial_state, output_final_state, use_qk_l2norm_in_kernel, output_write_norm)
    return chunk_gated_delta_rule_fwd(q, k, v, g, beta, scale, *args)
