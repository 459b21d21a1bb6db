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
the chunk states h, `(I + L)^{-1}`, `[w | u]` and the written values U kept from the forward.
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

# Tokens per chunk on CPU (a power of two). Measured on 2 shared AVX-512 cores (H 16, D 128):
# 32 gives a 15-20% faster forward than 64 (fewer flops in the chunk-local parts), 128 is slower.
CHUNK_SIZE = 32
# Rows (chunks x heads x tokens) processed together between two steps of the state recurrence.
BLOCK_TOKENS = 4096


def _intra_chunk(k, v, gc, beta, rhs):
    """Chunk-local pieces: `(decay, E, Tinv, wu)`.

    decay `exp(gc)` `[G, M, C]`, E the causal decay mask `[G, M, C, C]`, Tinv `(I + L)^{-1}`,
    wu `[w | u]` `[G, M, C, K + V]`. rhs: a scratch buffer of the shape of wu.
    """
    K = k.shape[-1]
    decay = gc.exp()
    E = decay_mask(gc, strict=False)
    Tinv = unit_tril_inverse((k @ k.mT) * E * beta[..., :, None])  # reads the strict lower part
    torch.mul(k, (beta * decay)[..., None], out=rhs[..., :K])
    torch.mul(v, beta[..., None], out=rhs[..., K:])
    return decay, E, Tinv, Tinv @ rhs


def _block_fwd(q, k, v, gc, beta, scale, h, rhs):
    """One block of G chunks `[G, M, C, D]`. Returns `(o, Tinv, wu, U)`.

    h `[G + 1, M, K, V]`: h[0] holds the state entering the block; h[n + 1] receives the state
    leaving chunk n.
    """
    decay, E, Tinv, wu = _intra_chunk(k, v, gc, beta, rhs)
    w, u = wu.split([k.shape[-1], v.shape[-1]], dim=-1)
    k_end = (k * (gc[..., -1:] - gc).exp()[..., None]).mT  # k decayed to the chunk end
    U = torch.empty_like(u)
    for n in range(k.shape[0]):
        torch.baddbmm(u[n], w[n], h[n], alpha=-1, out=U[n])
        torch.baddbmm(h[n] * decay[n, :, -1, None, None], k_end[n], U[n], out=h[n + 1])
    o = (q * (scale * decay)[..., None]) @ h[:-1]
    o.flatten(0, 1).baddbmm_(((q @ k.mT) * E).flatten(0, 1), U.flatten(0, 1), alpha=scale)
    return o, Tinv, wu, U


def _blocks(T: int, M: int, C: int):
    """`(chunk slice, token slice)` of each block: about BLOCK_TOKENS rows of `M` heads, so the
    block's temporaries stay small (cache-friendly, reused by the allocator, no fresh pages)."""
    G = max(1, BLOCK_TOKENS // (M * C))
    N = -(-T // C)
    return [(slice(b, min(N, b + G)), slice(b * C, min(T, (b + G) * C))) for b in range(0, N, G)]


def chunk_fwd(q, k, v, g, beta, scale, h0, chunk_size, keep_states=True):
    """Forward over chunks. Inputs `[B, T, H, D]` (g, beta `[B, T, H]`) fp32, h0 `[B*H, K, V]`.

    Each block of chunks is cut from the inputs (`to_chunks`: `[G, B*H, C, D]`) as it is reached.
    Returns o `[B, T, H, V]`, the final state `[B*H, K, V]` and, when keep_states, what the
    backward needs besides the inputs: h `[N, B*H, K, V]` (the state entering each chunk), Tinv
    `[N, B*H, C, C]`, wu `[N, B*H, C, K + V]` and U `[N, B*H, C, V]`; otherwise None.
    """
    B, T, H, K = k.shape
    V, M, C = v.shape[-1], B * H, chunk_size
    blocks = _blocks(T, M, C)
    G, N = blocks[0][0].stop, blocks[-1][0].stop  # chunks per block, chunks in all
    o = v.new_empty(B, T, H, V)
    h = k.new_empty(N + 1 if keep_states else G + 1, M, K, V)
    h[0] = 0 if h0 is None else h0
    shapes = ((N, M, C, C), (N, M, C, K + V), (N, M, C, V))
    kept = tuple(k.new_empty(shape) for shape in shapes) if keep_states else None
    rhs = k.new_empty(G, M, C, K + V)
    for blk, tok in blocks:
        qb, kb, vb, gb, bb = (to_chunks(x[:, tok], C) for x in (q, k, v, g, beta))
        Gb = kb.shape[0]
        hb = h[blk.start : blk.start + Gb + 1] if keep_states else h[: Gb + 1]
        ob, *for_bwd = _block_fwd(qb, kb, vb, gb.cumsum(-1), bb, scale, hb, rhs[:Gb])
        o[:, tok] = from_chunks(ob, B, tok.stop - tok.start)
        if keep_states:
            for buffer, x in zip(kept, for_bwd, strict=True):
                buffer[blk] = x
        else:
            h[0] = hb[-1]  # the next block starts from the state leaving this one
    if not keep_states:
        return o, h[0].clone(), None
    return o, h[N].clone(), (h[:N], *kept)  # a copy: in-place edits of S must not touch h


def _block_bwd(q, k, v, gc, beta, h, Tinv, wu, U, scale, do, dS, need_dg):
    """Gradients of one block (inputs and saved tensors as in `_block_fwd`, h its entering
    states), given do and dS, the gradient of the state leaving the block.

    Returns `(dq, dk, dv, dg, dbeta, dS_in)`, dg None unless need_dg.
    """
    decay, E, kk = gc.exp(), decay_mask(gc, strict=False), k @ k.mT
    K = k.shape[-1]
    w = wu[..., :K]
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
    # d gc: every term above in which gc appears, then back from gc = cumsum(g)
    dgc = (dqg * qg).sum(-1) + (dkbg * k).sum(-1) * beta * decay
    dgc -= (dk_end * k_end).sum(-1)
    for A in (dP * qk, dLE * kk * beta[..., :, None]):  # terms in exp(gc_t - gc_j)
        dgc += A.sum(-1) - A.sum(-2)
    h_dS = (h.flatten(-2)[..., None, :] @ dS_end.flatten(-2)[..., :, None])[..., 0, 0]  # <h, dS>
    dgc[..., -1] += (dk_end * k_end).sum((-2, -1)) + h_dS * decay[..., -1]
    return dq, dk, dv, dgc.flip(-1).cumsum(-1).flip(-1), dbeta, dS


def chunk_bwd(q, k, v, g, beta, saved, scale, chunk_size, do, dS, need_dg):
    """Gradients of `chunk_fwd` w.r.t. q, k, v, g, beta and h0, given do and dS (final state).

    Shapes as in `chunk_fwd`, saved its `(h, Tinv, wu, U)`; dS `[B*H, K, V]` or None. Block by
    block in reverse. dg is None unless need_dg.
    """
    h, Tinv, wu, U = saved
    B, T, H, K = k.shape
    dq, dk, dv, dg, dbeta = (torch.empty_like(x) for x in (q, k, v, g, beta))
    dS = torch.zeros_like(h[0]) if dS is None else dS
    for blk, tok in reversed(_blocks(T, B * H, chunk_size)):
        qb, kb, vb, gb, bb, dob = (to_chunks(x[:, tok], chunk_size) for x in (q, k, v, g, beta, do))
        kept = (x[blk] for x in (h, Tinv, wu, U))
        grads = _block_bwd(qb, kb, vb, gb.cumsum(-1), bb, *kept, scale, dob, dS, need_dg)
        dS = grads[-1]
        for out, grad in zip((dq, dk, dv, dg, dbeta), grads[:5], strict=True):
            if grad is not None:
                out[:, tok] = from_chunks(grad, B, tok.stop - tok.start)
    return dq, dk, dv, (dg if need_dg else None), dbeta, dS


class ChunkGatedDeltaRuleFunction(torch.autograd.Function):
    """Autograd wrapper of `chunk_fwd` / `chunk_bwd` on fp32 `[B, T, H, D]` tensors."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, h0, chunk_size):
        keep_states = any(ctx.needs_input_grad)
        o, S, saved = chunk_fwd(q, k, v, g, beta, scale, h0, chunk_size, keep_states)
        if keep_states:
            ctx.save_for_backward(q, k, v, g, beta, *saved)
            ctx.scale, ctx.chunk_size = scale, chunk_size
        return o, S

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, g, beta, *saved = ctx.saved_tensors
        need_dg = ctx.needs_input_grad[3]
        grads = chunk_bwd(q, k, v, g, beta, saved, ctx.scale, ctx.chunk_size, do, dS, need_dg)
        dq, dk, dv, dg, dbeta, dh0 = grads
        return dq, dk, dv, dg, dbeta, None, (dh0 if ctx.needs_input_grad[6] else None), None


def chunk_gated_delta_rule_fwd(
    q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel
):
    """Validated `[B, T, H, D]` inputs in, `(o, final_state)` out; `g=None`: no decay.

    Casts to fp32, L2-normalises q/k if asked and runs `ChunkGatedDeltaRuleFunction`. Chunks
    are `CHUNK_SIZE` tokens, or the next power of two >= T for short inputs. A single token
    (decoding) takes the token recurrence, 5x cheaper.
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
    o, S = ChunkGatedDeltaRuleFunction.apply(q, k, v, g, beta, scale, h0, chunk)
    return o.to(dtype), (S.unflatten(0, (B, H)) if output_final_state else None)


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
