"""Chunkwise-parallel gated delta rule (training and prefill path).

Within a chunk of C tokens with cumulative log-decay `gc` (`Γ = exp(gc)`), starting from
state S_0 `[K, V]`, the delta-rule updates unroll to the WY / UT form (as in fla):

    L   = strict_tril(beta_t exp(gc_t - gc_j) k_t·k_j)          # [C, C]
    w   = (I + L)^{-1} (beta Γ k),  u = (I + L)^{-1} (beta v)   # [C, K], [C, V]
    U   = u - w S_0                                             # the written values
    o   = scale ((Γ q) S_0 + (q k^T ⊙ exp(gc_t - gc_j))_{j<=t} U)
    S_C = Γ_C S_0 + (exp(gc_C - gc) k)^T U

Everything but the `S_0 -> S_C` recurrence is batched over a block of chunks (and all heads);
the backward is the hand-derived reverse of these formulas, block by block in reverse, with
the chunk states h, `(I + L)^{-1}` and `[w | u]` kept from the forward.
"""

from __future__ import annotations

import torch

from ahn.ops.gated_delta_rule.fused_recurrent import recurrent_gated_delta_rule
from ahn.ops.utils import (
    check_delta_inputs,
    decay_mask,
    fast_path,
    from_chunks,
    l2norm,
    to_chunks,
    unit_tril_inverse,
)

# Tokens per chunk on CPU (a power of two): large enough for the matmuls to run near peak.
CHUNK_SIZE = 64
# Rows (chunks x heads x tokens) processed together between two steps of the state recurrence.
BLOCK_TOKENS = 4096


def _intra_chunk(k, v, gc, beta):
    """Chunk-local pieces: `(decay, E, kk, Tinv, wu)`.

    decay `exp(gc)` `[G, M, C]`, E the causal decay mask and kk `k k^T` `[G, M, C, C]`,
    Tinv `(I + L)^{-1}`, wu `[w | u]` `[G, M, C, K + V]`.
    """
    decay = gc.exp()
    E = decay_mask(gc, strict=False)
    kk = k @ k.mT
    Tinv = unit_tril_inverse(kk * E * beta[..., :, None])  # reads only the strict lower part
    wu = Tinv @ torch.cat([k * (beta * decay)[..., None], v * beta[..., None]], dim=-1)
    return decay, E, kk, Tinv, wu


def _block_fwd(q, k, v, gc, beta, scale, o, h, saved):
    """One block of G chunks `[G, M, C, D]`, filling o, h and saved in place.

    h `[G + 1, M, K, V]`: h[0] holds the state entering the block; h[n + 1] receives the state
    leaving chunk n. saved: None, or buffers `(Tinv, wu)` to keep those for the backward.
    """
    decay, E, kk, Tinv, wu = _intra_chunk(k, v, gc, beta)
    if saved is not None:
        saved[0].copy_(Tinv)
        saved[1].copy_(wu)
    w, u = wu.split([k.shape[-1], v.shape[-1]], dim=-1)
    k_end = (k * (gc[..., -1:] - gc).exp()[..., None]).mT  # k decayed to the chunk end
    U = torch.empty_like(u)
    for n in range(k.shape[0]):
        torch.baddbmm(u[n], w[n], h[n], alpha=-1, out=U[n])
        torch.baddbmm(h[n] * decay[n, :, -1, None, None], k_end[n], U[n], out=h[n + 1])
    torch.matmul(q * (scale * decay)[..., None], h[:-1], out=o)
    o.flatten(0, 1).baddbmm_(((q @ k.mT) * E).flatten(0, 1), U.flatten(0, 1), alpha=scale)


def _block_size(M: int, C: int) -> int:
    """Chunks per block: about BLOCK_TOKENS rows of `B * H` heads, so the block's temporaries
    stay small (cache-friendly, and reused by the allocator instead of fresh pages)."""
    return max(1, BLOCK_TOKENS // (M * C))


def chunk_fwd(q, k, v, g, beta, scale, h0, keep_states=True):
    """Forward over chunks. Inputs `[N, M, C, D]` (g, beta `[N, M, C]`), h0 `[M, K, V]` or None.

    Returns o `[N, M, C, V]`, the final state `[M, K, V]` and, when keep_states, what the
    backward needs besides the inputs: h `[N, M, K, V]` (the state entering each chunk), Tinv
    `[N, M, C, C]` and wu `[N, M, C, K + V]`; otherwise None.
    """
    N, M, C, K = k.shape
    V = v.shape[-1]
    gc = g.cumsum(-1)
    G = _block_size(M, C)
    o = torch.empty_like(v)
    h = k.new_empty(N + 1 if keep_states else G + 1, M, K, V)
    h[0] = 0 if h0 is None else h0
    kept = (k.new_empty(N, M, C, C), k.new_empty(N, M, C, K + V)) if keep_states else None
    for b in range(0, N, G):
        blk = slice(b, b + G)
        hb = h[b : b + G + 1] if keep_states else h[: min(G, N - b) + 1]
        saved = None if kept is None else tuple(x[blk] for x in kept)
        _block_fwd(q[blk], k[blk], v[blk], gc[blk], beta[blk], scale, o[blk], hb, saved)
        if not keep_states:
            h[0] = hb[-1]  # the next block starts from the state leaving this one
    if not keep_states:
        return o, h[0].clone(), None
    return o, h[N].clone(), (h[:N], *kept)  # a copy: in-place edits of S must not touch h


def _block_bwd(q, k, v, gc, beta, h, Tinv, wu, scale, do, dS, need_dg):
    """Gradients of one block (inputs and saved tensors as in `_block_fwd`, h its entering
    states), given do and dS, the gradient of the state leaving the block.

    Returns `(dq, dk, dv, dgc, dbeta, dS_in)`.
    """
    decay, E, kk = gc.exp(), decay_mask(gc, strict=False), k @ k.mT
    K = k.shape[-1]
    w, u = wu.split([K, v.shape[-1]], dim=-1)
    U = u - w @ h
    qk = q @ k.mT
    to_end = (gc[..., -1:] - gc).exp()
    k_end, qg = k * to_end[..., None], q * decay[..., None]
    do = scale * do
    dU = (qk * E).mT @ do
    dh_out = qg.mT @ do  # d(state entering chunk n) from the outputs of chunk n
    dS_end = torch.empty_like(h)  # gradient w.r.t. the state leaving each chunk
    for n in reversed(range(k.shape[0])):
        dS_end[n] = dS
        dU[n].baddbmm_(k_end[n], dS)
        dS = torch.baddbmm(dh_out[n] + decay[n, :, -1, None, None] * dS, w[n].mT, dU[n], alpha=-1)

    dqg = do @ h.mT
    dP = (do @ U.mT) * E
    dq = dqg * decay[..., None] + dP @ k
    dk_end = U @ dS_end.mT
    dk = dk_end * to_end[..., None] + dP.mT @ q
    # through U = u - w h, [w | u] = Tinv [beta Γ k | beta v]
    dwu = Tinv.mT @ torch.cat([-dU @ h.mT, dU], dim=-1)
    dkbg, dvb = dwu.split([K, v.shape[-1]], dim=-1)
    dv = dvb * beta[..., None]
    dk += dkbg * (beta * decay)[..., None]
    dbeta = (dvb * v).sum(-1) + (dkbg * k).sum(-1) * decay
    # through Tinv = (I + L)^{-1}: dL = -Tinv^T dTinv Tinv^T = -(dvb u^T + dkbg w^T)
    dLE = (dwu @ wu.mT).tril_(-1).mul_(E).neg_()
    dbeta += (dLE * kk).sum(-1)
    dkk = dLE * beta[..., :, None]
    dk += (dkk + dkk.mT) @ k
    if not need_dg:
        return dq, dk, dv, None, dbeta, dS
    # d gc: every term above in which gc appears (the caller maps it back to g)
    dgc = (dqg * qg).sum(-1) + (dkbg * k).sum(-1) * beta * decay
    dgc -= (dk_end * k_end).sum(-1)
    for A in (dP * qk, dLE * kk * beta[..., :, None]):  # terms in exp(gc_t - gc_j)
        dgc += A.sum(-1) - A.sum(-2)
    dgc[..., -1] += (dk_end * k_end).sum((-2, -1)) + (h * dS_end).sum((-2, -1)) * decay[..., -1]
    return dq, dk, dv, dgc, dbeta, dS


def chunk_bwd(q, k, v, g, beta, saved, scale, do, dS, need_dg):
    """Gradients of `chunk_fwd` w.r.t. q, k, v, g, beta and h0, given do and dS (final state).

    Shapes as in `chunk_fwd`, saved its `(h, Tinv, wu)`; dS `[M, K, V]` or None. Block by block
    in reverse. dg is None unless need_dg.
    """
    h, Tinv, wu = saved
    N, M, C, K = k.shape
    gc = g.cumsum(-1)
    dq, dk, dv, dgc, dbeta = (torch.empty_like(x) for x in (q, k, v, g, beta))
    dS = torch.zeros_like(h[0]) if dS is None else dS
    G = _block_size(M, C)
    for b in reversed(range(0, N, G)):
        blk = slice(b, b + G)
        inputs = (x[blk] for x in (q, k, v, gc, beta, h, Tinv, wu))
        grads = _block_bwd(*inputs, scale, do[blk], dS, need_dg)
        dq[blk], dk[blk], dv[blk], dgc_blk, dbeta[blk], dS = grads
        if need_dg:
            dgc[blk] = dgc_blk
    dg = dgc.flip(-1).cumsum(-1).flip(-1) if need_dg else None  # back from gc = cumsum(g)
    return dq, dk, dv, dg, dbeta, dS


class ChunkGatedDeltaRuleFunction(torch.autograd.Function):
    """Autograd wrapper of `chunk_fwd` / `chunk_bwd` on chunked fp32 tensors."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, h0):
        keep_states = any(ctx.needs_input_grad)
        o, S, saved = chunk_fwd(q, k, v, g, beta, scale, h0, keep_states)
        if keep_states:
            ctx.save_for_backward(q, k, v, g, beta, *saved)
            ctx.scale = scale
        return o, S

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, g, beta, *saved = ctx.saved_tensors
        need_dg = ctx.needs_input_grad[3]
        grads = chunk_bwd(q, k, v, g, beta, saved, ctx.scale, do, dS, need_dg)
        dq, dk, dv, dg, dbeta, dh0 = grads
        return dq, dk, dv, dg, dbeta, None, (dh0 if ctx.needs_input_grad[6] else None)


def chunk_gated_delta_rule_fwd(
    q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel
):
    """Validated `[B, T, H, D]` inputs in, `(o, final_state)` out; `g=None`: no decay.

    Casts to fp32, L2-normalises q/k if asked, cuts the sequence into chunks and runs
    `ChunkGatedDeltaRuleFunction`. Chunks are `CHUNK_SIZE` tokens, or the next power of two
    >= T for short inputs. A single token (decoding) takes the token recurrence, 5x cheaper.
    """
    B, T, H, K = q.shape
    if T == 1:
        args = (initial_state, output_final_state, use_qk_l2norm_in_kernel)
        return recurrent_gated_delta_rule(q, k, v, g, beta, scale, *args)
    dtype = v.dtype
    chunk = min(CHUNK_SIZE, 1 << (T - 1).bit_length())
    q, k, v, beta = (x.float() for x in (q, k, v, beta))
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    g = torch.zeros_like(beta) if g is None else g.float()
    h0 = None if initial_state is None else initial_state.flatten(0, 1)
    q, k, v, g, beta = (to_chunks(x, chunk) for x in (q, k, v, g, beta))
    o, S = ChunkGatedDeltaRuleFunction.apply(q, k, v, g, beta, scale, h0)
    o = from_chunks(o, B, T).to(dtype)
    return o, (S.unflatten(0, (B, H)) if output_final_state else None)


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
    return chunk_gated_delta_rule_fwd(
        q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel
    )
