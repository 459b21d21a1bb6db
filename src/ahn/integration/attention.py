"""The attention function registered as "ahn": sinks + sliding window (+ memory) per SPEC §2.

It receives the layer's query/key/value after RoPE from the unmodified attention module; the
layer input `x` (for the memory gates), the cache and the padding come from `LayerContext`,
filled by a forward pre-hook on the attention module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ahn.integration.cache import AHNLayer, Choice, Lossless, LosslessView
from ahn.integration.positions import Rerotation, far_turn, horizon, two_frames
from ahn.integration.store import (
    SCORES,
    Evicted,
    Store,
    advance,
    advance_one,
    advance_one_packed,
    owned,
)

# Queries processed per block in the parallel path: each block sees sinks + window + block
# keys, so smaller blocks waste less of the band mask, larger ones make fewer calls. At
# SmolLM2's shape (9 / 3 heads, window 480 + 32 sinks, 2 threads, 2k and 4k tokens) 256 made
# one layer's forward + backward 8-32% faster than 512 (forward alone 0-23%), bf16 and fp32;
# 128 was no better overall (slower in bf16).
QUERY_BLOCK = 256


@dataclass
class LayerContext:
    """Per-call inputs of one attention layer that the attention function cannot see itself."""

    x: torch.Tensor  # [B, T, hidden] the normalised layer input
    cache_layer: object | None  # AHNLayer, a transformers cache layer, or None
    pad: torch.Tensor  # [B] long: left-padding slots of each row
    pad_max: int  # max(pad), as a Python int
    window: int
    sinks: int
    memory: object | None  # the layer's MemoryModule when the memory is on, else None
    windowed: bool  # False for layers kept at full attention
    salient: int = 0  # salient store entries per KV head (0 when off or the memory is off)
    score: str = "novelty"  # the store's score, a name of `ahn.integration.store.SCORES`
    read_memory: bool = True  # False in mode "store": the memory runs, its read is left out
    far: Rerotation | None = None  # positions "bounded": sinks and store in their own frame
    budget: tuple[int, ...] | None = None  # store entries per KV head (None: `salient` each)
    share: str = "head"  # which heads share one choice of tokens (`ahn.config.SHARES`)
    choice: Choice | None = None  # share "global": the call's scores, set by the first layer


def ahn_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """`AttentionInterface` entry: query [B, H, T, D], key/value [B, Hkv, T', D].

    Returns `(out [B, T, H, D], None)`.
    """
    ctx: LayerContext = module._ahn_context
    module._ahn_context = None
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    if not ctx.windowed:
        return full_attention(query, key, value, ctx.pad, scaling), None
    return windowed_step(query, key, value, ctx, scaling), None


def full_attention(q, k, v, pad, scaling):
    """Causal attention over every stored slot (layers kept at full attention)."""
    T, L = q.shape[-2], k.shape[-2]
    q_slot = torch.arange(L - T, L, device=q.device)
    k_slot = torch.arange(L, device=q.device)
    ok = (k_slot[None, None, :] <= q_slot[None, :, None]) & (k_slot >= pad[:, None])[:, None, :]
    ok = _let_padding_attend_itself(ok, q_slot, k_slot, pad)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=ok[:, None], scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2)


def windowed_step(q, k_new, v_new, ctx: LayerContext, scaling):
    """One call of a windowed layer over the new chunk: the same code serves the parallel path
    (a transient cache layer) and chunked prefill / decode (the stored one).

    q: [B, H, C, D]; k_new, v_new: [B, Hkv, C, D]. Returns [B, C, H, D].
    """
    layer = (
        ctx.cache_layer
        if isinstance(ctx.cache_layer, AHNLayer)
        else AHNLayer(Lossless(ctx.window, ctx.sinks, ctx.salient))
    )
    q_far = far_queries(q, layer.seen, ctx)
    if _plain_decode(q.shape[-2], ctx, layer):
        return decode_step(q, q_far, k_new, v_new, ctx, layer, scaling)
    gates_new = out_gate = None
    if ctx.memory is not None:
        gates_new, out_gate = ctx.memory.project(ctx.x)  # logits [B, C, H, G], [B, C, H]
    view = layer.view(k_new, v_new, gates_new, ctx.pad, ctx.salient, ctx.budget)
    state, mem, scores, score_state = layer.state, None, None, layer.score_state
    if ctx.memory is not None:  # first: the store ranks evicted tokens by what the memory saw
        mem, state, scores, score_state = memory_read(q, view, ctx, layer, out_gate)
    if view.store is None:
        out, store = lossless_attention(q, q_far, view, ctx, scaling), None  # [B, C, H, D]
    else:
        out, store = store_attention(q, q_far, view, ctx, scaling, scores)
    if mem is not None and ctx.read_memory:
        if mem.shape[1] == out.shape[1]:
            out = out + mem
        else:
            out = torch.cat(
                [out[:, : out.shape[1] - mem.shape[1]], out[:, -mem.shape[1] :] + mem], 1
            )
    if isinstance(ctx.cache_layer, AHNLayer):
        layer.commit(view, q.shape[-2], state, store, score_state, ctx.budget)
    return out


def _plain_decode(C: int, ctx: LayerContext, layer: AHNLayer) -> bool:
    """One new token, a full window whose oldest token is regular (the memory absorbs it), and
    a store (if any) whose score does not need the memory's write error: what `windowed_step`
    does then in one memory call (`decode_step`)."""
    return (
        C == 1
        and ctx.memory is not None
        and not (ctx.salient and SCORES[ctx.score].surprise)
        and ctx.cache_layer is layer
        and layer.is_initialized
        and layer.gates is not None
        and layer.keys.shape[-2] == ctx.window
        and layer.seen - ctx.window - ctx.pad_max >= ctx.sinks
    )


def far_queries(q, seen: int, ctx: LayerContext) -> torch.Tensor | None:
    """The queries [B, H, C, D] as the sinks and the store see them (`positions.far_turn`), or
    None when they see them at the original positions: under "original", and for a chunk whose
    queries are all within the horizon (turned by 0, they would equal `q`)."""
    C = horizon(ctx.sinks, ctx.salient, ctx.window)
    last = seen + q.shape[-2] - 1
    if ctx.far is None or last - int(ctx.pad.min()) <= C:
        return None
    slots = torch.arange(seen, last + 1, device=q.device)
    return ctx.far.back(q, far_turn(slots, ctx.pad, C))


def decode_step(q, q_far, k_new, v_new, ctx: LayerContext, layer: AHNLayer, scaling):
    """`windowed_step` of one decoded token with a full window: the memory absorbs the oldest
    window token and reads with q (`MemoryModule.decode`, the projection of the new token
    included), the attention covers sinks + window. q: [B, H, 1, D]. Returns [B, 1, H, D].

    Why a path of its own: the general step projects the new token (`project`) and runs the
    memory (`memory_read` -> `step`) in two calls with the cache's bookkeeping between them;
    here they are one call, which `ahn.compile` turns into one graph (measured at SmolLM2's
    shape: 163 us compiled against 288 us eager per layer, docs/benchmarks.md). Folding
    `project` into `memory_read` for every chunk would remove it; it computes exactly what the
    general path does (the three-path tests run through both)."""
    evicted = layer.keys[..., :1, :], layer.values[..., :1, :], layer.gates[:, :1]
    mem, state, z_new = ctx.memory.decode(ctx.x, q, *evicted, layer.state)
    view = layer.view(k_new, v_new, z_new, ctx.pad)  # the store, if any, as the cache holds it
    if not ctx.salient:
        out = lossless_attention(q, q_far, view, ctx, scaling)  # [B, 1, H, D]
        layer.commit(view, 1, state)
    else:
        out, store, score_state = store_decode(q, q_far, view, ctx, layer, evicted[2], scaling)
        layer.commit(view, 1, state, store, score_state)
    return out + mem if ctx.read_memory else out


def store_decode(q, q_far, view: LosslessView, ctx: LayerContext, layer: AHNLayer, z, scaling):
    """`decode_step`'s attention with the store: the window's oldest token (slot `t - W`, write
    gates `z` [B, 1, H, G]) is scored and ranked against the store (`advance_one`, or on the
    packed store of per-head budgets `advance_one_packed`), and query `t` attends sinks, the
    store after it and the window in one softmax: what `store_attention` does for a one-query
    chunk, without its block bookkeeping. Returns (out [B, 1, H, D], the store as the cache
    holds it, the score's state)."""
    t, W, (B, H), Hkv = view.seen, ctx.window, q.shape[:2], view.k_loc.shape[1]
    k_ev, v_ev = view.k_loc[..., :1, :], view.v_loc[..., :1, :]
    gates = lambda: ctx.memory.gates(z)  # noqa: E731
    evicted = Evicted(k_ev, v_ev, gates, None, None, layer.score_state)
    scores, score_state = choose(SCORES[ctx.score], evicted, ctx)  # [B, Hkv, 1]
    slot = torch.tensor([t], device=q.device)
    if q_far is not None:  # the store's frame, turned as its evicting query (t)
        k_ev = ctx.far.back(k_ev, far_turn(slot, ctx.pad, horizon(ctx.sinks, ctx.salient, W)))
    ok_new = scores > float("-inf")
    if ctx.budget is None:
        old = layer.store or Store.empty(k_ev, ctx.salient)
        store = advance_one(old, k_ev, v_ev, slot - W, scores, ok_new, t)[2]
        store_ok, store_k, store_v = store.ok, store.k, store.v  # [B, Hkv, G(, D)]
    else:  # packed: every KV head reads the layer's entries, masked to its own
        old = layer.store or Store.empty(k_ev[:, :1], sum(ctx.budget))
        store = advance_one_packed(old, ctx.budget, k_ev, v_ev, slot - W, scores, ok_new)
        store_ok = owned(store, ctx.budget)  # [B, Hkv, N]
        store_k, store_v = (x.expand(-1, Hkv, -1, -1) for x in (store.k, store.v))
    sinks = _sink_mask(t, slot, view, ctx)[:, None].expand(-1, Hkv, -1, -1)  # [B, Hkv, 1, S]
    window = sinks.new_ones(B, Hkv, 1, W)
    ok = torch.cat([sinks, store_ok[:, :, None, :], window], dim=-1)
    ok = ok[:, :, None].expand(-1, -1, H // Hkv, -1, -1).flatten(1, 2)  # [B, H, 1, S + G + W]
    qb, k, v = two_frames(q, q_far, torch.cat([view.sink_k, store_k], dim=-2),
                          torch.cat([view.sink_v, store_v], dim=-2),
                          view.k_loc[..., 1:, :], view.v_loc[..., 1:, :])  # fmt: skip
    out = F.scaled_dot_product_attention(qb, k, v, attn_mask=ok, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2), store, score_state


def lossless_attention(q, q_far, view: LosslessView, ctx: LayerContext, scaling):
    """Softmax attention of each query over its sinks and its window, in query blocks; q_far:
    the queries of the sinks' frame (`far_queries`) or None."""
    C = q.shape[-2]
    block = QUERY_BLOCK
    outs = []
    for a in range(0, C, block):
        b = min(C, a + block)
        # Keys of slots (seen + a - window, seen + b) cover every window of this block.
        lo = max(0, view.seen + a - ctx.window + 1 - view.start)
        hi = view.seen + b - view.start
        ok = _block_mask(view.seen + a, b - a, view.start + lo, hi - lo, view, ctx)
        qb, k, v = two_frames(q[..., a:b, :], None if q_far is None else q_far[..., a:b, :],
                              view.sink_k, view.sink_v,
                              view.k_loc[..., lo:hi, :], view.v_loc[..., lo:hi, :])  # fmt: skip
        outs.append(
            F.scaled_dot_product_attention(
                qb, k, v, attn_mask=ok[:, None], scale=scaling, enable_gqa=True
            )
        )
    return torch.cat(outs, dim=-2).transpose(1, 2)


def _block_mask(q0: int, Tq: int, k0: int, Tk: int, view: LosslessView, ctx: LayerContext):
    """[B, Tq, S + Tk] bool for queries at slots q0.. and window keys at slots k0..: the sinks
    seen so far (causally), then the regular (not padding, not sink) tokens in the window."""
    pad, S, device = ctx.pad, ctx.sinks, ctx.pad.device
    B = pad.shape[0]
    local = _band(Tq, Tk, q0 - k0, ctx.window, str(device))[None]  # [1, Tq, Tk]
    k_slot = torch.arange(k0, k0 + Tk, device=device)
    regular = (k_slot[None, :] - pad[:, None]) >= S  # [B, Tk]
    if not bool(regular.all()):
        local = local & regular[:, None, :]
    q_slot = torch.arange(q0, q0 + Tq, device=device)
    if ctx.pad_max > q0:  # padding queries in this block
        local = _let_padding_attend_itself(local, q_slot, k_slot, pad)
    return torch.cat([_sink_mask(q0, q_slot, view, ctx), local.expand(B, -1, -1)], dim=-1)


def _sink_mask(q0: int, q_slot, view: LosslessView, ctx: LayerContext) -> torch.Tensor:
    """[B, Tq, S] bool: the sinks seen by queries at slots `q_slot` (from q0), causally."""
    pad, S = ctx.pad, ctx.sinks
    if bool(view.sink_ok.all()) and q0 >= ctx.pad_max + S - 1:
        return torch.ones(pad.shape[0], q_slot.shape[0], S, dtype=torch.bool, device=pad.device)
    sink_slot = pad[:, None] + torch.arange(S, device=pad.device)  # [B, S]
    return view.sink_ok[:, None, :] & (sink_slot[:, None, :] <= q_slot[None, :, None])


def store_attention(q, q_far, view: LosslessView, ctx: LayerContext, scaling, scores):
    """`lossless_attention` with the salient store: one softmax over sinks, store and window.

    scores: [B, Hkv, n] of the n tokens this chunk evicts (k_loc[..., :n]; -inf: never
    stored), or None when it evicts none. Query blocks run in order: each ranks the tokens its
    queries evict against the store it starts with (`advance`), and a key is visible to query
    t while `slot <= t < expiry`. With `q_far` (positions "bounded") a key evicted in the block
    is attended twice over: in the window at its own position while `t < slot + W`, then from
    the store's frame (turned like the store's keys) until it expires. Returns
    (out [B, C, H, D], the store after the chunk, its keys in the store's frame).
    """
    (B, H, C, _), Hkv = q.shape, view.k_loc.shape[1]
    W, device, store = ctx.window, q.device, view.store
    budget = None if ctx.budget is None else torch.tensor(ctx.budget, device=device)
    n = 0 if scores is None else scores.shape[-1]
    outs = []
    for a in range(0, C, QUERY_BLOCK):
        b = min(C, a + QUERY_BLOCK)
        q0, q1 = view.seen + a, view.seen + b
        lo = max(0, q0 - W - view.start)  # from the key query q0 evicts
        hi, e_hi = q1 - view.start, max(lo, min(n, q1 - W - view.start))
        k_slot = torch.arange(view.start + lo, view.start + hi, device=device)  # [Tk]
        s_new = scores[..., lo:e_hi] if n else q.new_zeros(B, Hkv, 0)
        k_loc, v_loc = view.k_loc[..., lo:hi, :], view.v_loc[..., lo:hi, :]
        m = e_hi - lo
        ok_new = s_new > float("-inf")
        k_ev, v_ev = k_loc[..., :m, :], v_loc[..., :m, :]
        if q_far is not None:  # stored keys in the far frame, turned as the evicting queries
            turn = far_turn(k_slot[:m] + W, ctx.pad, horizon(ctx.sinks, ctx.salient, W))
            k_ev = ctx.far.back(k_ev, turn)
        step = advance_one if b - a == 1 else functools.partial(advance, W=W)
        E_store, E_new, kept = step(store, k_ev, v_ev, k_slot[:m], s_new, ok_new,
                                    last_query=q1 - 1, budget=budget)  # fmt: skip
        E_win = torch.cat([E_new, (k_slot[m:] + W).expand(B, Hkv, -1)], dim=-1)  # [B, Hkv, Tk]
        q_slot = torch.arange(q0, q1, device=device)[:, None]  # [Tq, 1]
        regular = ((k_slot[None, :] - ctx.pad[:, None]) >= ctx.sinks)[:, None, None]
        local = (k_slot <= q_slot) & (q_slot < E_win[:, :, None, :]) & regular
        if ctx.pad_max > q0:
            lone = torch.zeros(B, b - a, hi - lo, dtype=torch.bool, device=device)
            local = local | _let_padding_attend_itself(lone, q_slot[:, 0], k_slot, ctx.pad)[:, None]
        in_store = store.ok[:, :, None, :] & (q_slot < E_store[:, :, None, :])  # [B, Hkv, Tq, G]
        sinks = _sink_mask(q0, q_slot[:, 0], view, ctx)[:, None].expand(-1, Hkv, -1, -1)
        far_k, far_v = [view.sink_k, store.k], [view.sink_v, store.v]
        masks, qb_far = [sinks, in_store], None
        if q_far is not None:  # the evicted keys' store part, apart from their window part
            stored = q_slot >= k_slot[:m] + W  # [Tq, m]
            masks.append(local[..., :m] & stored)
            local = local & (q_slot < k_slot + W)
            far_k, far_v, qb_far = far_k + [k_ev], far_v + [v_ev], q_far[..., a:b, :]
        ok = torch.cat([*masks, local], dim=-1)  # [B, Hkv, Tq, S + G (+ m) + Tk]
        ok = ok[:, :, None].expand(-1, -1, H // Hkv, -1, -1).flatten(1, 2)  # [B, H, Tq, L]
        qb, k, v = two_frames(q[..., a:b, :], qb_far, torch.cat(far_k, dim=-2),
                              torch.cat(far_v, dim=-2), k_loc, v_loc)  # fmt: skip
        outs.append(
            F.scaled_dot_product_attention(qb, k, v, attn_mask=ok, scale=scaling, enable_gqa=True)
        )
        store = kept
    return torch.cat(outs, dim=-2).transpose(1, 2), store


@functools.lru_cache(maxsize=32)
def _band(Tq: int, Tk: int, offset: int, window: int, device: str) -> torch.Tensor:
    """[Tq, Tk] bool: key j is in the window of query i, i.e. 0 <= (i + offset) - j < window."""
    ones = torch.ones(Tq, Tk, dtype=torch.bool, device=device)
    return ones.tril(offset).triu(offset - window + 1)


def _let_padding_attend_itself(ok, q_slot, k_slot, pad):
    """A padding query attends to itself only, so no softmax row is empty (no NaN)."""
    q_is_pad = (q_slot[None, :] < pad[:, None])[:, :, None]  # [B, Tq, 1]
    return ok | (q_is_pad & (k_slot[None, None, :] == q_slot[None, :, None]))


def memory_read(q, view: LosslessView, ctx: LayerContext, layer: AHNLayer, out_gate):
    """Absorb the tokens leaving the window during this chunk and read the memory.

    Token at slot u leaves the window when query slot u + W arrives: the evicted slots pair
    one-to-one with the last `n` queries of the chunk. Returns (out [B, n, H, D] or None,
    state, the evicted tokens' store scores [B, Hkv, n] (-inf: never stored) or None when the
    store is off or nothing is evicted, the score's own state).
    """
    C, state, score_state = q.shape[-2], layer.state, layer.score_state
    n = max(0, view.k_loc.shape[-2] - ctx.window)  # <= C since at most W slots were stored
    if n == 0:
        return None, state, None, score_state
    k, v = view.k_loc[..., :n, :], view.v_loc[..., :n, :]  # [B, Hkv, n, D]
    z = view.gates_loc[:, :n]  # [B, n, H, G] write-gate logits
    rank = SCORES[ctx.score] if ctx.salient else None  # a name AHNConfig checked
    surprise = rank is not None and rank.surprise
    absorb = None  # [B, n] bool, None: every evicted slot is a regular token
    if view.start - ctx.pad_max < ctx.sinks:
        slots = torch.arange(view.start, view.start + n, device=q.device)
        absorb = (slots[None, :] - ctx.pad[:, None]) >= ctx.sinks
        if not bool(absorb.any()):  # only sinks and padding left: the memory is still empty
            never = None if rank is None else q.new_full((q.shape[0], k.shape[1], n), -torch.inf)
            return None, state, never, score_state
    if absorb is None and C == 1:  # decoding
        mem, state, *s = ctx.memory.step(q, k, v, z, state, out_gate, surprise)
    else:
        gates = ctx.memory.gates(z)
        if absorb is not None:
            gates = gates * absorb[:, :, None, None]
        groups = q.shape[1] // k.shape[1]
        kh, vh = (x.repeat_interleave(groups, dim=1) if groups > 1 else x for x in (k, v))
        kh, vh = kh.transpose(1, 2), vh.transpose(1, 2)  # [B, n, H, D]
        r, state, *s = ctx.memory.recur(q[..., C - n :, :].transpose(1, 2), kh, vh, gates,
                                        state, surprise)  # fmt: skip
        mem = ctx.memory.readout(r, out_gate[:, C - n :])
    if rank is None:
        return mem, state, None, score_state
    evicted = Evicted(k, v, lambda: ctx.memory.gates(z), s[0] if s else None, absorb, score_state)
    scores, score_state = choose(rank, evicted, ctx)
    return mem, state, scores, score_state


def choose(rank, evicted: Evicted, ctx: LayerContext):
    """The evicted tokens' scores [B, Hkv, n] (-inf: never stored) by `ctx.share`: each KV head
    its own, their mean over the layer's KV heads, or the mean of the call's first store layer
    for all layers ("global": later layers skip their own score). Returns (scores, the
    score's state after them)."""
    choice = ctx.choice if ctx.share == "global" else None
    if choice is not None and choice.scores is not None:
        return choice.scores.expand(-1, evicted.k.shape[1], -1), evicted.state
    with torch.no_grad():  # the selection is discrete: no gradient flows through a score
        scores, score_state = rank.fn(evicted)  # [B, Hkv, n]
    if evicted.absorb is not None:
        scores = scores.masked_fill(~evicted.absorb[:, None, :], -torch.inf)
    if ctx.share != "head":
        scores = scores.mean(1, keepdim=True)  # [B, 1, n]
        if choice is not None:
            choice.scores = scores
        scores = scores.expand(-1, evicted.k.shape[1], -1)
    return scores, score_state
