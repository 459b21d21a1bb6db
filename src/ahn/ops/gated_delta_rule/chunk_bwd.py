"""Backward of the chunkwise gated delta rule: the hand-derived reverse of `chunk_fwd`'s
formulas (see its docstring), chunk by chunk in reverse from the states, written values U and
`(I + A)^{-1}` kept by the forward; the decay and beta gradients batched at the end."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ahn.ops.gated_delta_rule.chunk_fwd import (
    STATE_EVERY,
    BlockBuffers,
    ChunkDecay,
    block_rows,
    fill_decay_masks,
    heads_view,
    load_block,
    split_chunks,
)


class GradBuffers:
    """Scratch tensors of one backward chunk step (M heads, C rows), reused."""

    def __init__(self, M: int, C: int, K: int, V: int, like: torch.Tensor):
        new = lambda *shape: like.new_empty(M, *shape)
        self.dU, self.dv, self.dKE, self.dk = new(C, V), new(C, V), new(C, K), new(C, K)
        self.DX = new(2 * C, V)  # [dY; do], the gradient of X
        self.dP, self.dP2 = new(2 * C, C), new(2 * C, C)  # [-dA; dBq] U^T, then dP
        self.dWQ, self.dKQ, self.hdh = new(2 * C, K), new(2 * C, K), new(K, V)
        self.prod = new(2 * C, max(K, V, C))  # products summed by `row_sums`

    def row_sums(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
        """`out = (a * b).sum(-1)` through the scratch `prod` (a fresh product of this size
        would cost page faults at every call)."""
        prod = self.prod[:, : a.shape[1], : a.shape[2]]
        torch.sum(torch.mul(a, b, out=prod), -1, out=out)


@dataclass
class ChunkGradSums:
    """What the batched decay / beta gradients need from each chunk, `[N, M, ...]`.

    Row sums over the head dimension of dWQ·[k; q'] `[N, M, 2C]`, of dKE·k, dY·v and
    `(dA ⊙ E)·k k^T` `[N, M, C]`; z: the row minus the column sums of `dA ⊙ A + dBq ⊙ Bq`
    (the gradient of the gc_t - gc_j exponents) `[N, M, C]`; `<h, dh'>` `[N, M]`.
    """

    wkq: torch.Tensor
    ke: torch.Tensor
    yv: torch.Tensor
    akk: torch.Tensor
    z: torch.Tensor
    hdh: torch.Tensor

    @classmethod
    def empty(cls, N: int, M: int, C: int, like: torch.Tensor) -> ChunkGradSums:
        new = lambda *shape: like.new_empty(N, M, *shape)
        return cls(new(2 * C), new(C), new(C), new(C), new(C), new())


def bwd_chunk(buf, factors, sums, n, tiles, v, do, scale, h, U, Tinv, dh, out, need_dg):
    """Reverse of chunk n of `fwd_block`, given do `[M, C, V]` and dh, the gradient of the
    leaving state.

    tiles: the chunk's `(KQ, WQ, KE, P, Bq, E, E_strict)` (from `load_block` and
    `fill_decay_masks`, Bq = `E ⊙ q' k^T`); h, U, Tinv: the entering state and what the forward
    kept. Turns dh into the entering state's gradient (in place), writes the chunk's sums to
    `sums` and `(dq, dk, dv)` to out (views `[M, c, ·]`, c <= C); the sums that only the decay
    gradient needs only when need_dg.
    """
    beta, decay, fk, to_end, gamma = factors
    KQ, WQ, KE, P, Bq, E, E_strict = tiles
    C, c = KE.shape[1], out[0].shape[1]
    DX = buf.DX  # [dY; do], the gradient of X
    DX[:, C:].copy_(do)
    dU = torch.bmm(KE, dh, out=buf.dU).baddbmm_(Bq.mT, DX[:, C:])
    dKE = torch.bmm(U, dh.mT, out=buf.dKE)
    dY = torch.bmm(Tinv.mT, dU, out=DX[:, :C])
    dWQ = torch.bmm(DX, h.mT, out=buf.dWQ)
    dPU = torch.bmm(DX, U.mT, out=buf.dP)  # [-dA; dBq]
    if need_dg:
        torch.sum(torch.mul(h, dh, out=buf.hdh), (-2, -1), out=sums.hdh[n])
    dh.mul_(gamma).baddbmm_(WQ.mT, DX)
    buf.row_sums(dWQ, KQ, sums.wkq[n])
    buf.row_sums(dKE, KQ[:, :C], sums.ke[n])
    buf.row_sums(dY, v, sums.yv[n])
    dP = buf.dP2
    dAE = torch.mul(dPU[:, :C], E_strict, out=dP[:, :C]).neg_()  # dA ⊙ E
    buf.row_sums(dAE, P[:, :C], sums.akk[n])
    dAE.mul_(beta)
    torch.mul(dPU[:, C:], E, out=dP[:, C:])
    if need_dg:
        Z = torch.mul(dP, P, out=buf.prod[:, :, :C])  # [dA ⊙ A; dBq ⊙ Bq]
        rows = Z.sum(-1)
        torch.sub(rows[:, :C] + rows[:, C:], Z.sum(-2), out=sums.z[n])
    dKQ = buf.dKQ
    torch.mul(dWQ[:, :C], fk, out=dKQ[:, :C])
    torch.mul(dWQ[:, C:], decay, out=dKQ[:, C:])
    dKQ.baddbmm_(dP, KQ[:, :C])  # through P = [k; q'] k^T, the left factor
    dk = torch.baddbmm(dKQ[:, :C], dP.mT, KQ, out=buf.dk)
    dq_out, dk_out, dv_out = out
    torch.mul(dKQ[:, C : C + c], scale, out=dq_out)
    torch.addcmul(dk[:, :c], dKE[:, :c], to_end[:, :c], out=dk_out)
    torch.mul(dY[:, :c], beta[:, :c], out=dv_out)


def decay_grads(d: ChunkDecay, sums: ChunkGradSums, need_dg: bool):
    """`(dg, dbeta)` `[N, M, C]` from the per-chunk sums (dg None unless need_dg)."""
    C = d.gc.shape[-1]
    decay, fk, to_end = (x[..., 0] for x in (d.decay, d.fk, d.to_end))
    wk, wq = sums.wkq.split(C, dim=-1)  # row sums dWQ·k, dWQ·q'
    dbeta = sums.yv + sums.akk - wk * decay  # through beta v, A, and fk = -beta Γ
    if not need_dg:
        return None, dbeta
    ke = sums.ke * to_end
    dgc = sums.z + wk * fk + wq * decay - ke
    dgc[..., -1] += ke.sum(-1) + sums.hdh * d.gamma[..., 0, 0]
    return dgc.flip(-1).cumsum(-1).flip(-1), dbeta


def chunk_bwd(q, k, v, saved, scale, chunk_size, do, dS, need_dg):
    """Gradients of `chunk_fwd` w.r.t. q, k, v, g, beta and h0, given do and dS (final state).

    Shapes as in `chunk_fwd`, saved its `(h, U, Tinv, *ChunkDecay)`; dS `[B*H, K, V]` or None.
    Segment by segment of STATE_EVERY chunks in reverse: the segment's entering states are
    recomputed from the kept one, then its chunks are differentiated in reverse. dg is None
    unless need_dg.
    """
    kept, Us, Tinvs, *decay = saved
    d = ChunkDecay(*decay)
    B, T, H, K = k.shape
    V, M, C, N, R = v.shape[-1], B * H, chunk_size, Us.shape[0], STATE_EVERY
    grads = [x.new_empty(B, T, H, x.shape[-1]) for x in (q, k, v)]
    views = [heads_view(x) if B == 1 or H == 1 else x.new_empty(M, T, x.shape[-1]) for x in grads]
    buf, sums = GradBuffers(M, C, K, V, k), ChunkGradSums.empty(N, M, C, k)
    seg_buf = BlockBuffers(min(R, N), M, C, K, V, k)
    dh = torch.zeros_like(kept[0]) if dS is None else dS.clone()
    qm, km = heads_view(q), heads_view(k)
    vs, dos = (split_chunks(heads_view(x), C) for x in (v, do))
    factors = d.chunks()
    h = k.new_empty(min(R, N), M, K, V)  # the states entering the chunks of one segment
    for first, d_seg in reversed(list(zip(range(0, N, R), d.split(R), strict=True))):
        segment = range(first, min(N, first + R))
        qk = (block_rows(x, first * C, len(segment), C) for x in (qm, km))
        seg = seg_buf.sized(len(segment))
        load_block(seg, d_seg, *qk, scale)
        fill_decay_masks(seg, d_seg.gc, strict=True)
        torch.mul(seg.Bq_fwd, seg.E, out=seg.Bq)
        h[0].copy_(kept[first // R])
        for j, n in enumerate(segment[:-1]):
            torch.mul(h[j], factors[n][4], out=h[j + 1]).baddbmm_(seg.KE_T_list[j], Us[n])
        tiles = list(zip(seg.KQ_list, seg.WQ_list, seg.KE_list, seg.P_list, seg.Bq_list,
                         seg.E_list, seg.E_strict_list, strict=True))  # fmt: skip
        for j, n in reversed(list(enumerate(segment))):
            out = [x[:, n * C : (n + 1) * C] for x in views]
            kept_n = (h[j], Us[n], Tinvs[n])
            bwd_chunk(buf, factors[n], sums, n, tiles[j], vs[n], dos[n], scale, *kept_n, dh, out,
                      need_dg)  # fmt: skip
    for out, view in zip(grads, views, strict=True):
        if view.data_ptr() != out.data_ptr():
            out.copy_(view.view(B, H, T, -1).transpose(1, 2))
    dg, dbeta = decay_grads(d, sums, need_dg)
    unchunk = lambda x: x.transpose(0, 1).flatten(1)[:, :T].unflatten(0, (B, H)).transpose(1, 2)
    return (*grads, None if dg is None else unchunk(dg), unchunk(dbeta), dh)
