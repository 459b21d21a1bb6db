"""Chunkwise-parallel gated delta rule (training and prefill path).

Within a chunk of C tokens with cumulative log-decay `gc` (`Γ = exp(gc)`, `γ = Γ_C`) and
entering state h `[K, V]`, the delta-rule updates unroll to the WY / UT form (as in fla):

    E   = exp(gc_t - gc_j) for j <= t, else 0                       # [C, C]
    A   = strict_tril(beta_t E k_t·k_j)
    U   = (I + A)^{-1} (beta v - (beta Γ k) h)                      # [C, V] the written values
    o   = (Γ q') h + (E ⊙ q' k^T) U                                 # q' = scale q
    h'  = γ h + (exp(gc_C - gc) k)^T U

The loop runs chunk by chunk over all heads at once: the chunk's `[k; q']` rows meet the state
in one `[2C, K] @ [K, V]` product, and every tensor of a step is cache-sized (one state
`[B*H, K, V]` and a few `[B*H, C, D]` tiles). The decay factors of all chunks are computed
first, in one batch; the causal decay matrices E block by block, into reused buffers. The
backward is the hand-derived reverse of these formulas, chunk by chunk in reverse, from the
entering states h, the written values U and `(I + A)^{-1}` kept by the forward (E is made
again); the element-wise parts of the decay and beta gradients are batched over all chunks at
the end.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from ahn.ops.utils import decay_mask

# Tokens per chunk on CPU. Measured on 2 shared cores (H 16, D 128): 32 beats 16 and 64.
CHUNK_SIZE = 32
# The forward keeps the state entering every STATE_EVERY-th chunk for the backward, which
# recomputes the others segment by segment (one `[K, C] @ [C, V]` product per chunk) instead
# of keeping N states: 8x less memory, and fresh pages cost more than the recomputation.
STATE_EVERY = 8
# The forward batches the state-independent parts of about BLOCK_ROWS rows (chunks x heads x
# tokens) at a time: four chunks per block at H = 16 and C = 32, seven at SmolLM2's H = 9; more
# for small head counts, where the per-op overhead of chunk-sized ops would dominate. At H = 9,
# D = 64 (8k tokens, 2 cores) 2048 rows beat 1024 by 10-15% in the median of 25 interleaved
# runs, and matched it in the fastest run.
BLOCK_ROWS = 2048


def heads_view(x: torch.Tensor) -> torch.Tensor:
    """`[B, T, H, D]` -> `[B * H, T, D]`: a strided view when B == 1 or H == 1, else a copy."""
    return x.transpose(1, 2).flatten(0, 1)


def split_chunks(xm: torch.Tensor, C: int) -> tuple[torch.Tensor, ...]:
    """`[M, T, D]` -> the views `[M, C, D]` of its chunks; the last one zero-padded to C rows."""
    chunks = list(xm.split(C, dim=1))
    chunks[-1] = F.pad(chunks[-1], (0, 0, 0, C - chunks[-1].shape[1]))
    return tuple(chunks)


def _chunked(x: torch.Tensor, C: int) -> torch.Tensor:
    """`[B, T, H]` -> `[N, B*H, C]`, zero-padded to whole chunks."""
    x = x.transpose(1, 2).flatten(0, 1)
    x = F.pad(x, (0, -x.shape[1] % C))
    return x.unflatten(1, (-1, C)).transpose(0, 1).contiguous()


@dataclass
class ChunkDecay:
    """Decay and write-strength factors of every chunk, `[N, M, ...]` (M = B*H heads).

    gc: cumulative log-decay `[N, M, C]`; beta, decay `Γ`, fk `-beta Γ` (the row factor of k
    in WQ) and to_end `exp(gc_C - gc)` `[N, M, C, 1]`; gamma `Γ_C` `[N, M, 1, 1]`. The causal
    decay matrices are made block by block (`fill_decay_masks`). Zero padding past the end
    (g = beta = 0) leaves the state unchanged.
    """

    gc: torch.Tensor
    beta: torch.Tensor
    decay: torch.Tensor
    fk: torch.Tensor
    to_end: torch.Tensor
    gamma: torch.Tensor

    @classmethod
    def build(cls, g: torch.Tensor, beta: torch.Tensor, C: int) -> ChunkDecay:
        """From g, beta `[B, T, H]`."""
        g, beta = (_chunked(x, C) for x in (g, beta))  # [N, M, C]
        gc = g.cumsum(-1)
        decay = gc.exp()
        return cls(
            gc=gc,
            beta=beta[..., None],
            decay=decay[..., None],
            fk=-(beta * decay)[..., None],
            to_end=(gc[..., -1:] - gc).exp()[..., None],
            gamma=decay[..., -1:, None],
        )

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The fields in order (`ChunkDecay(*d.tensors())` rebuilds it)."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def split(self, G: int) -> list[ChunkDecay]:
        """The factors of each block of G chunks."""
        return [ChunkDecay(*x) for x in zip(*(t.split(G) for t in self.tensors()), strict=True)]

    def chunks(self) -> list[tuple[torch.Tensor, ...]]:
        """Per chunk n: `(beta, decay, fk, to_end, gamma)` views, without gc."""
        return list(zip(*(x.unbind(0) for x in self.tensors()[1:]), strict=True))


class BlockBuffers:
    """Scratch tensors of one block of G chunks (M heads, C rows), reused from block to block,
    with the views the block steps use made once (at small sizes a view costs about what the
    arithmetic on it does)."""

    def __init__(self, G: int, M: int, C: int, K: int, V: int, like: torch.Tensor):
        self.shape = (G, M, C, K, V)
        new = lambda *shape: like.new_empty(*shape)
        self.KQ, self.WQ = new(G, M, 2 * C, K), new(G, M, 2 * C, K)  # [k; q'], [fk k; Γ q']
        self.P = new(G, M, 2 * C, C)  # [k k^T; q' k^T], then [A; Bq] in the forward
        self.KE = new(G, M, C, K)  # k decayed to the chunk end
        self.O, self.U, self.Tinv = new(G, M, C, V), new(G, M, C, V), new(G, M, C, C)
        self.Bq = new(G, M, C, C)  # E ⊙ q' k^T, for the backward (which keeps P)
        self.E, self.E_strict = new(G, M, C, C), new(G, M, C, C)  # exp(gc_t - gc_j), j <= / < t
        self.X = new(M, 2 * C, V)  # WQ h, then [beta v + fk k h; Γ q' h]
        self.Xk, self.Xq = self.X.split(C, dim=1)
        self.k, self.q = self.KQ.split(C, dim=2)
        self.WQk, self.WQq = self.WQ.split(C, dim=2)
        self.A, self.Bq_fwd = self.P.split(C, dim=2)
        self.eye = torch.eye(C, dtype=like.dtype, device=like.device).expand(G * M, C, C)
        for name in ("KQ", "WQ", "KE", "P", "Bq", "O", "Bq_fwd", "E", "E_strict"):  # per chunk
            setattr(self, f"{name}_list", getattr(self, name).unbind())
        self.KE_T_list = self.KE.mT.unbind()

    def sized(self, G: int) -> BlockBuffers:
        """These buffers, or new ones for a shorter (last) block of G chunks."""
        return self if G == self.shape[0] else BlockBuffers(G, *self.shape[1:], self.KQ)


@functools.lru_cache(maxsize=8)
def _strictly_below(C: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`[C, C]` of dtype, 1 where j < t, else 0."""
    return torch.ones(C, C, dtype=dtype, device=device).tril(-1)


def fill_decay_masks(buf: BlockBuffers, gc: torch.Tensor, strict: bool) -> None:
    """`buf.E = exp(gc_t - gc_j)` (j <= t, else 0) from gc `[G, M, C]`, and `buf.E_strict`
    (j < t) when strict, from E (one exp)."""
    E = decay_mask(gc, strict=False, out=buf.E)
    if strict:
        torch.mul(E, _strictly_below(gc.shape[-1], E.dtype, gc.device), out=buf.E_strict)


def block_rows(xm: torch.Tensor, s: int, G: int, C: int) -> torch.Tensor:
    """Rows `s : s + G*C` of `[M, T, D]` as `[G, M, C, D]` (a view unless zero-padded past T)."""
    x = xm[:, s : s + G * C]
    if x.shape[1] < G * C:
        x = F.pad(x, (0, 0, 0, G * C - x.shape[1]))
    return x.unflatten(1, (G, C)).transpose(0, 1)


def load_block(buf: BlockBuffers, d: ChunkDecay, q, k, scale: float) -> None:
    """The state-independent tiles of a block: q, k `[G, M, C, K]`, d the block's factors.

    Fills `buf.KQ = [k; q']` (q' = scale q), `buf.WQ = [fk k; Γ q']` `[G, M, 2C, K]`,
    `buf.P = KQ k^T` `[G, M, 2C, C]` and `buf.KE = to_end k` `[G, M, C, K]`.
    """
    buf.k.copy_(k)
    torch.mul(q, scale, out=buf.q)
    torch.bmm(buf.KQ.flatten(0, 1), buf.k.flatten(0, 1).mT, out=buf.P.flatten(0, 1))
    torch.mul(buf.k, d.fk, out=buf.WQk)
    torch.mul(buf.q, d.decay, out=buf.WQq)
    torch.mul(buf.k, d.to_end, out=buf.KE)


def fwd_block(buf, d, chunks, q, k, v, scale, h, U, Tinv, kept):
    """Chunks `chunks` (a range of G) for all heads: q, k `[G, M, C, K]`, v the G chunks'
    `[M, C, V]` rows, d the block's factors, state h `[M, K, V]` (updated in place). Writes the
    output rows to `buf.O`, the written values to U and `(I + A)^{-1}` to Tinv
    (`[G, M, C, ·]`); when kept is given, the state entering every STATE_EVERY-th chunk to it.

    The parts that do not depend on the state (the UT transform, the decay factors) run once
    for the block, batched; the state recurrence runs chunk by chunk.
    """
    load_block(buf, d, q, k, scale)
    fill_decay_masks(buf, d.gc, strict=False)
    # The unitriangular solve reads only the strict lower part: E serves as well as E_strict.
    A = buf.A.mul_(buf.E).mul_(d.beta)
    torch.linalg.solve_triangular(A.flatten(0, 1), buf.eye, upper=False, unitriangular=True,
                                  out=Tinv.flatten(0, 1))  # fmt: skip
    buf.Bq_fwd.mul_(buf.E)
    X, Xk, Xq = buf.X, buf.Xk, buf.Xq
    per_chunk = (buf.WQ_list, v, d.beta.unbind(), Tinv.unbind(), U.unbind(), buf.Bq_fwd_list,
                 buf.O_list, d.gamma.unbind(), buf.KE_T_list)  # fmt: skip
    steps = zip(chunks, *per_chunk, strict=True)
    for n, WQ_n, v_n, beta_n, Tinv_n, U_n, Bq_n, O_n, gamma_n, KE_t in steps:
        if kept is not None and n % STATE_EVERY == 0:
            kept[n // STATE_EVERY].copy_(h)
        torch.bmm(WQ_n, h, out=X)
        torch.bmm(Tinv_n, Xk.addcmul_(v_n, beta_n), out=U_n)  # U = Tinv (beta v - beta Γ k h)
        torch.baddbmm(Xq, Bq_n, U_n, out=O_n)
        h.mul_(gamma_n).baddbmm_(KE_t, U_n)


def chunk_fwd(q, k, v, g, beta, scale, h0, chunk_size, keep_states=True, write_norm=False):
    """Forward over chunks. Inputs `[B, T, H, D]` (g, beta `[B, T, H]`) fp32, h0 `[B*H, K, V]`.

    Returns o `[B, T, H, V]`, the final state `[B*H, K, V]`, when keep_states what the
    backward needs besides the inputs: `(h, U, Tinv, *ChunkDecay)` with h the states entering
    chunks 0, R, 2R, ... (R = STATE_EVERY) `[ceil(N / R), B*H, K, V]`, U `[N, B*H, C, V]` and
    `(I + A)^{-1}` `[N, B*H, C, C]` (otherwise None), and when write_norm the norm of each
    token's written value `||U_t||` `[B, T, H]` (otherwise None).
    """
    B, T, H, K = k.shape
    V, M, C = v.shape[-1], B * H, chunk_size
    d = ChunkDecay.build(g, beta, C)
    N = d.gc.shape[0]
    G = min(N, max(1, BLOCK_ROWS // (M * C)))
    o = v.new_empty(B, T, H, V)
    om = heads_view(o) if B == 1 or H == 1 else v.new_empty(M, T, V)
    buf = BlockBuffers(G, M, C, K, V, k)
    h = k.new_zeros(M, K, V) if h0 is None else h0.clone()  # updated in place, chunk by chunk
    kept = Us = Tinvs = None
    if keep_states:
        kept = k.new_empty(-(-N // STATE_EVERY), M, K, V)
        Us, Tinvs = v.new_empty(N, M, C, V), k.new_empty(N, M, C, C)
    qm, km = heads_view(q), heads_view(k)
    vs = split_chunks(heads_view(v), C)
    norms = v.new_empty(N, M, C) if write_norm else None
    for n0, d_block in zip(range(0, N, G), d.split(G), strict=True):
        chunks = range(n0, min(N, n0 + G))
        s, e = n0 * C, min(T, (n0 + G) * C)
        qk = (block_rows(x, s, len(chunks), C) for x in (qm, km))
        block = buf.sized(len(chunks))
        if keep_states:
            U, Tinv = Us[chunks.start : chunks.stop], Tinvs[chunks.start : chunks.stop]
        else:
            U, Tinv = block.U, block.Tinv
        fwd_block(block, d_block, chunks, *qk, vs[n0 : n0 + G], scale, h, U, Tinv, kept)
        if write_norm:
            torch.linalg.vector_norm(U, dim=-1, out=norms[chunks.start : chunks.stop])
        O = block.O.transpose(0, 1).flatten(1, 2)  # [M, G*C, V]
        om[:, s:e].copy_(O[:, : e - s])
    if om.data_ptr() != o.data_ptr():
        o.copy_(om.view(B, H, T, V).transpose(1, 2))
    if write_norm:  # [N, B*H, C] -> [B, T, H]
        norms = norms.transpose(0, 1).reshape(B, H, N * C)[..., :T].transpose(1, 2)
    saved = (kept, Us, Tinvs, *d.tensors()) if keep_states else None
    return o, h, saved, norms
