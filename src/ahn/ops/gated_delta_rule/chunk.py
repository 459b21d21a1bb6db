"""Chunkwise-parallel gated delta rule (training and prefill path).

Within a chunk of C tokens with cumulative log-decay `gc` (`Γ = exp(gc)`), starting from
state S_0 `[K, V]`, the delta-rule updates unroll to the WY / UT form (as in fla):

    L   = strict_tril(beta_t exp(gc_t - gc_j) k_t·k_j)          # [C, C]
    w   = (I + L)^{-1} (beta Γ k),  u = (I + L)^{-1} (beta v)   # [C, K], [C, V]
    U   = u - w S_0                                             # the written values
    o   = scale ((Γ q) S_0 + (q k^T ⊙ exp(gc_t - gc_j))_{j<=t} U)
    S_C = Γ_C S_0 + (exp(gc_C - gc) k)^T U

Everything but the `S_0 -> S_C` recurrence is batched over all chunks; the backward is the
hand-derived reverse of these formulas with one reverse loop over chunks.
"""

from __future__ import annotations

import torch

from ahn.ops.utils import (
    check_delta_inputs,
    decay_mask,
    fast_path,
    from_chunks,
    l2norm,
    to_chunks,
    unit_tril_inverse,
)

# Tokens per chunk on CPU: large enough for the matmuls to run near peak (a power of two).
CHUNK_SIZE = 64


def _wy(k, v, gc, beta):
    """The chunk-local WY pieces. Returns `(kk, Tinv, w, u)`: `k k^T`, `(I + L)^{-1}`, w, u."""
    kk = k @ k.transpose(-1, -2)  # [N, M, C, C]
    L = kk * decay_mask(gc, strict=True) * beta[..., :, None]
    Tinv = unit_tril_inverse(L)
    w = Tinv @ (k * (beta * gc.exp())[..., None])
    u = Tinv @ (v * beta[..., None])
    return kk, Tinv, w, u


def chunk_fwd(q, k, v, g, beta, scale, h0):
    """Forward over chunks. Inputs `[N, M, C, D]` (g, beta `[N, M, C]`), h0 `[M, K, V]` or None.

    Returns o `[N, M, C, V]`, the final state `[M, K, V]`, the state entering each chunk
    h `[N, M, K, V]` and the written values U `[N, M, C, V]`.
    """
    N, M, C, K = k.shape
    gc = g.cumsum(-1)
    _, _, w, u = _wy(k, v, gc, beta)
    k_end = k * (gc[..., -1:] - gc).exp()[..., None]  # k decayed to the chunk end
    decay_end = gc[..., -1].exp()[..., None, None]  # [N, M, 1, 1]
    h = k.new_empty(N + 1, M, K, v.shape[-1])  # h[n]: the state entering chunk n
    h[0] = 0 if h0 is None else h0
    U = torch.empty_like(u)
    k_end = k_end.transpose(-1, -2)
    for n in range(N):
        torch.baddbmm(u[n], w[n], h[n], alpha=-1, out=U[n])
        torch.baddbmm(h[n] * decay_end[n], k_end[n], U[n], out=h[n + 1])
    S, h = h[N], h[:N]
    P = (q @ k.transpose(-1, -2)) * decay_mask(gc, strict=False)
    o = scale * ((q * gc.exp()[..., None]) @ h + P @ U)
    return o, S, h, U


def chunk_bwd(q, k, v, g, beta, scale, h, U, do, dS, need_dg):
    """Gradients of `chunk_fwd` w.r.t. q, k, v, g, beta and h0, given do and dS (final state).

    Shapes as in `chunk_fwd`; dS `[M, K, V]` or None. dg is None unless need_dg.
    """
    N, M, C, K = k.shape
    gc = g.cumsum(-1)
    kk, Tinv, w, u = _wy(k, v, gc, beta)
    E = decay_mask(gc, strict=False)
    qk = q @ k.transpose(-1, -2)
    P = qk * E
    decay, decay_to_end = gc.exp(), (gc[..., -1:] - gc).exp()
    qg, k_end = q * decay[..., None], k * decay_to_end[..., None]
    do = scale * do
    dU = P.transpose(-1, -2) @ do
    dh_out = qg.transpose(-1, -2) @ do  # d(state entering chunk n) from the outputs of chunk n
    dS_end = torch.empty_like(h)  # gradient w.r.t. the state leaving each chunk
    dS = torch.zeros_like(h[0]) if dS is None else dS
    for n in reversed(range(N)):
        dS_end[n] = dS
        dU[n] += k_end[n] @ dS
        dS = decay[n, :, -1, None, None] * dS + dh_out[n] - w[n].transpose(-1, -2) @ dU[n]
    dh0 = dS

    dqg = do @ h.transpose(-1, -2)
    dP = (do @ U.transpose(-1, -2)) * E
    dq = dqg * decay[..., None] + dP @ k
    dk_end = U @ dS_end.transpose(-1, -2)
    dk = dk_end * decay_to_end[..., None] + dP.transpose(-1, -2) @ q
    # through U = u - w h, u = Tinv (beta v), w = Tinv (beta Γ k)
    du = torch.cat([dU, -dU @ h.transpose(-1, -2)], dim=-1)
    dvb, dkbg = (Tinv.transpose(-1, -2) @ du).split([v.shape[-1], K], dim=-1)
    dv = dvb * beta[..., None]
    dk = dk + dkbg * (beta * decay)[..., None]
    dbeta = (dvb * v).sum(-1) + (dkbg * k).sum(-1) * decay
    # through Tinv = (I + L)^{-1}: dL = -Tinv^T dTinv Tinv^T = -(dvb u^T + dkbg w^T)
    dL = -(dvb @ u.transpose(-1, -2) + dkbg @ w.transpose(-1, -2)).tril(-1)
    dLE = dL * E
    dbeta = dbeta + (dLE * kk).sum(-1)
    dkk = dLE * beta[..., :, None]
    dk = dk + (dkk + dkk.transpose(-1, -2)) @ k
    if not need_dg:
        return dq, dk, dv, None, dbeta, dh0
    # d gc: every term above in which gc appears, then the reverse cumsum of g -> gc
    dgc = (dqg * qg).sum(-1) + (dkbg * k).sum(-1) * beta * decay
    dgc = dgc - (dk_end * k_end).sum(-1)
    for A in (dP * qk, dLE * kk * beta[..., :, None]):  # terms in exp(gc_t - gc_j)
        dgc = dgc + A.sum(-1) - A.sum(-2)
    dgc[..., -1] += (dk_end * k_end).sum((-2, -1)) + (h * dS_end).sum((-2, -1)) * decay[..., -1]
    dg = dgc.flip(-1).cumsum(-1).flip(-1)
    return dq, dk, dv, dg, dbeta, dh0


class ChunkGatedDeltaRuleFunction(torch.autograd.Function):
    """Autograd wrapper of `chunk_fwd` / `chunk_bwd` on chunked fp32 tensors."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, h0):
        o, S, h, U = chunk_fwd(q, k, v, g, beta, scale, h0)
        ctx.save_for_backward(q, k, v, g, beta, h, U)
        ctx.scale = scale
        return o, S

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, g, beta, h, U = ctx.saved_tensors
        need_dg = ctx.needs_input_grad[3]
        dq, dk, dv, dg, dbeta, dh0 = chunk_bwd(q, k, v, g, beta, ctx.scale, h, U, do, dS, need_dg)
        return dq, dk, dv, dg, dbeta, None, (dh0 if ctx.needs_input_grad[6] else None)


def chunk_gated_delta_rule_fwd(
    q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel
):
    """Validated `[B, T, H, D]` inputs in, `(o, final_state)` out; `g=None`: no decay.

    Casts to fp32, L2-normalises q/k if asked, cuts the sequence into chunks and runs
    `ChunkGatedDeltaRuleFunction`. Chunks are `CHUNK_SIZE` tokens, or the next power of two
    >= T for short inputs, so that T = 1 costs no padding.
    """
    B, T, H, K = q.shape
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
