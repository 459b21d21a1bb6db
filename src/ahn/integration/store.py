"""The salient store (SPEC §2b): per layer and KV head, the `G` evicted tokens of highest score,
kept exactly (keys after RoPE, values, slots) and attended beside the sinks and the window.

The store read by query slot `t` is the top-G (score descending, ties to the earlier slot) of
the tokens evicted by then. Token `j` is evicted when query `j + W` arrives; it leaves the store
when the G-th token that outranks it has been evicted, and never comes back (the set it is
ranked in only grows). So every token has an expiry slot `E_j >= j + W`, and key `j` is visible
to query `t` exactly when `j <= t < E_j`: the window is the case `E_j = j + W` (G = 0).

Ranking only needs the current store and the newly evicted tokens: a token outside the store is
outranked by all G members, hence by every member of any later store.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ahn.config import SCORE_NAMES

# An expiry past any slot: the token stays in the store until outranked G times.
NEVER = torch.iinfo(torch.long).max // 2


@dataclass
class Evicted:
    """What exists when tokens leave the window (a score's inputs); n tokens, H query heads."""

    k: torch.Tensor  # [B, Hkv, n, D] keys after RoPE
    v: torch.Tensor  # [B, Hkv, n, D]
    gates: Callable[[], torch.Tensor]  # () -> [B, n, H, num_gates] the memory's write gates
    surprise: torch.Tensor | None  # [B, n, H] the memory's write error, when the score asks
    absorb: torch.Tensor | None  # [B, n] bool: regular tokens (None: all of them)
    state: torch.Tensor | None  # the score's own state before these tokens (stateful scores)


def per_kv_head(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[B, n, H] summed over the query heads sharing a KV head -> [B, Hkv, n] float32."""
    B, n, H = x.shape
    return x.float().view(B, n, kv_heads, H // kv_heads).sum(-1).transpose(1, 2)


def novelty(e: Evicted) -> tuple[torch.Tensor, torch.Tensor]:
    """`||v_j - N_{j-1}^T k_j||` per KV head, N a parameter-free delta rule (beta 1, no decay)
    over the evicted tokens' own normalised keys and values: what the whole evicted past, not
    the memory's decaying state, could not predict. Returns (scores [B, Hkv, n], N after them
    [B, Hkv, D, D] float32)."""
    from ahn.ops import chunk_delta_rule, l2norm

    if e.k.shape[2] == 1 and e.state is not None:  # decoding: one step of the rule itself
        k, v = l2norm(e.k[:, :, 0].float()), e.v[:, :, 0].float()  # [B, Hkv, D]
        beta = 1.0 if e.absorb is None else e.absorb[:, :1, None].float()  # [B, 1, 1]
        error = beta * (v - torch.einsum("bhkv,bhk->bhv", e.state, k))  # [B, Hkv, D]
        state = e.state + k[..., :, None] * error[..., None, :]
        return torch.linalg.vector_norm(error, dim=-1)[..., None], state
    k, v = e.k.transpose(1, 2), e.v.transpose(1, 2)  # [B, n, Hkv, D]
    beta = k.new_ones(k.shape[:3])
    if e.absorb is not None:
        beta = beta * e.absorb[:, :, None]
    _, state, u = chunk_delta_rule(q=k, k=k, v=v, beta=beta, initial_state=e.state,
                                   output_final_state=True, use_qk_l2norm_in_kernel=True,
                                   output_write_norm=True)  # fmt: skip
    return u.transpose(1, 2), state


@dataclass(frozen=True)
class Score:
    """A salience score: `fn(evicted) -> ([B, Hkv, n], the score's own state or None)`; a state
    is kept per layer in the cache beside the store. `surprise`: it needs the memory's write
    error."""

    fn: Callable[[Evicted], tuple[torch.Tensor, torch.Tensor | None]]
    surprise: bool = False


SCORES: dict[str, Score] = {
    "novelty": Score(novelty),
    # beta_j ||v_j - exp(g_j) M_{j-1}^T k_j||: what the memory's write could not predict
    "surprise": Score(lambda e: (per_kv_head(e.surprise, e.k.shape[1]), None), surprise=True),
    # the memory's own write strength (beta, or Mamba2's dt)
    "write_gate": Score(lambda e: (per_kv_head(e.gates()[..., 0], e.k.shape[1]), None)),
    "value_norm": Score(lambda e: (torch.linalg.vector_norm(e.v.float(), dim=-1), None)),
}
assert tuple(SCORES) == SCORE_NAMES  # the torch-free list AHNConfig validates names against


@dataclass
class Store:
    """The store of one layer: G entries per KV head; `ok` False marks an empty entry."""

    k: torch.Tensor  # [B, Hkv, G, D]
    v: torch.Tensor  # [B, Hkv, G, D]
    slot: torch.Tensor  # [B, Hkv, G] long
    score: torch.Tensor  # [B, Hkv, G] float32
    ok: torch.Tensor  # [B, Hkv, G] bool

    NAMES = ("k", "v", "slot", "score", "ok")

    @classmethod
    def empty(cls, like: torch.Tensor, G: int) -> Store:
        """An empty store for keys shaped like `like` [B, Hkv, *, D]."""
        B, Hkv, _, D = like.shape
        long = torch.full((B, Hkv, G), -NEVER, dtype=torch.long, device=like.device)
        return cls(
            like.new_zeros(B, Hkv, G, D),
            like.new_zeros(B, Hkv, G, D),
            long,
            torch.full((B, Hkv, G), float("-inf"), device=like.device),
            torch.zeros(B, Hkv, G, dtype=torch.bool, device=like.device),
        )

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, n) for n in self.NAMES]

    def map(self, fn) -> Store:
        return Store(*(fn(t) for t in self.tensors()))

    @property
    def size(self) -> int:
        return self.k.shape[-2]

    def pack(self, budget: tuple[int, ...]) -> Store:
        """The cache's form of a store with per-head budgets: each KV head's first G_h entries
        (where the store keeps its entries) side by side, [B, 1, sum G_h, ...], so a layer holds
        what its budgets add up to, not its largest budget times its KV heads."""

        def cut(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t[:, h : h + 1, :G] for h, G in enumerate(budget)], dim=2)

        return self.map(cut)

    def unpack(self, budget: tuple[int, ...]) -> Store:
        """`pack` undone: [B, Hkv, max G_h, ...], the entries past a head's budget empty."""
        G, heads, at = max(budget), [], 0
        for G_h in budget:
            entries = [t[:, :, at : at + G_h] for t in self.tensors()]
            empty = Store.empty(self.k[:, :, :0], G - G_h).tensors()
            heads.append([torch.cat(pair, dim=2) for pair in zip(entries, empty, strict=True)])
            at += G_h
        return Store(*(torch.cat(parts, dim=1) for parts in zip(*heads, strict=True)))


def expiry(score, slot, ok, G: int, W: int, budget: torch.Tensor | None = None):
    """Expiry slots of candidates (the store's entries and newly evicted tokens), [B, Hkv, K].

    Candidate c is evicted at `slot_c + W` and expires when the G-th candidate outranking it is
    evicted (`NEVER` while fewer than G do). Candidates not `ok` never enter: their expiry is
    their eviction. `budget` [Hkv] long: a G of each KV head (<= G; 0: nothing enters).
    """
    evict = slot + W  # [B, Hkv, K]
    s_c, s_o = score[..., :, None], score[..., None, :]  # c: the ranked one, o: another
    earlier = slot[..., None, :] < slot[..., :, None]
    outranks = ok[..., None, :] & ((s_o > s_c) | ((s_o == s_c) & earlier))  # [B, Hkv, K, K]
    when = torch.where(outranks, evict[..., None, :], NEVER)  # [B, Hkv, K, K]
    if budget is None:
        gth = when.kthvalue(G, dim=-1).values  # K >= G: the store's G entries are candidates
    else:
        index = (budget - 1).clamp(min=0)[None, :, None, None].expand(*when.shape[:-1], 1)
        gth = when.sort(dim=-1).values.gather(-1, index)[..., 0]  # the G_h-th smallest
        gth = torch.where(budget[None, :, None] > 0, gth, -NEVER)  # G_h = 0: evict at once
    return torch.where(ok, torch.maximum(evict, gth), evict)


def expiry_split(store: Store, score_new, slot_new, ok_new, W: int, budget=None):
    """`expiry` of the store's entries and the new tokens [B, Hkv, G + m] in O(G log G + K m)
    instead of O(K^2), K = G + m, for large stores; equal to it wherever an expiry is compared
    with a query of the block (those before the block may differ: both are past).

    Every store entry left the window before the block, so its outrankers among the store are
    past; what remains is counting the new tokens (evicted in slot order) that outrank a
    candidate until, with the `s_c` store entries that outrank it, they make its G_h."""
    B, Hkv, G = store.score.shape
    m = score_new.shape[-1]
    cap = budget if budget is not None else torch.full((Hkv,), G, device=score_new.device)
    cap = cap[None, :, None]  # [1, Hkv, 1]
    s_store = torch.where(store.ok, store.score, float("-inf"))
    # s_c of a store entry: ok entries with a higher score, or an equal one and an earlier slot
    by_slot = store.slot.argsort(dim=-1, stable=True)
    order = by_slot.gather(-1, s_store.gather(-1, by_slot).argsort(dim=-1, descending=True,
                                                                   stable=True))  # fmt: skip
    place = torch.empty_like(order).scatter_(-1, order, torch.arange(G, device=order.device)
                                             .expand_as(order))  # fmt: skip
    # s_c of a new token: ok store entries scoring at least as high (they are earlier)
    ranked = s_store.sort(-1).values  # ascending; empty entries (-inf) first
    s_new = G - torch.searchsorted(ranked.contiguous(), score_new.float().contiguous(),
                                   right=False)  # fmt: skip
    s_c = torch.cat([place, s_new], dim=-1)  # [B, Hkv, K]
    score = torch.cat([store.score, score_new], dim=-1)
    slot = torch.cat([store.slot, slot_new.expand(B, Hkv, m)], dim=-1)
    ok = torch.cat([store.ok, ok_new], dim=-1)
    n_score, n_slot = score_new[..., None, :], slot_new.view(1, 1, 1, m)
    outranks = ok_new[..., None, :] & (
        (n_score > score[..., None]) | ((n_score == score[..., None]) & (n_slot < slot[..., None]))
    )
    count = s_c[..., None] + outranks.long().cumsum(-1)  # [B, Hkv, K, m]
    reached = count >= cap[..., None]
    gth = torch.full_like(s_c, NEVER)
    if m:
        first = reached.long().argmax(-1)  # the new token completing G_h outrankers
        evict_new = (slot_new + W).expand(B, Hkv, m)
        gth = torch.where(reached.any(-1), evict_new.gather(-1, first), NEVER)
    gth = torch.where((s_c >= cap) | (cap == 0), -NEVER, gth)  # G_h outranked it before
    evict = slot + W
    return torch.where(ok, torch.maximum(evict, gth), evict)


def advance(store: Store, k_new, v_new, slot_new, score_new, ok_new, W: int, last_query: int,
            budget: torch.Tensor | None = None):  # fmt: skip
    """The store's entries and the tokens evicted by queries up to `last_query` (k_new, v_new
    [B, Hkv, m, D]; slot_new [m]; score_new, ok_new [B, Hkv, m]) ranked together; `budget`
    [Hkv]: each KV head's G (None: the store's size for all).

    Returns (expiry of the store's entries [B, Hkv, G], of the new tokens [B, Hkv, m], the store
    read by `last_query` and kept for the queries after it).
    """
    G = store.size
    B, Hkv, m = score_new.shape
    E = expiry_split(store, score_new, slot_new, ok_new, W, budget)  # [B, Hkv, G + m]
    slot = torch.cat([store.slot, slot_new.expand(B, Hkv, m)], dim=-1)
    score = torch.cat([store.score, score_new], dim=-1)
    ok = torch.cat([store.ok, ok_new], dim=-1)
    alive = ok & (E > last_query)  # at most G of them
    keep = torch.argsort(alive.to(torch.int8), dim=-1, descending=True, stable=True)[..., :G]
    gather = lambda x: x.gather(-1, keep)
    gather_d = lambda x: x.gather(-2, keep[..., None].expand(-1, -1, -1, x.shape[-1]))
    kept = Store(
        gather_d(torch.cat([store.k, k_new], dim=-2)),
        gather_d(torch.cat([store.v, v_new], dim=-2)),
        gather(slot),
        gather(score),
        gather(alive),
    )
    return E[..., :G], E[..., G:], kept


def advance_one(store: Store, k_new, v_new, slot_new, score_new, ok_new, last_query: int,
                budget: torch.Tensor | None = None):  # fmt: skip
    """`advance` for one query (`last_query`) evicting at most one token (m <= 1): the token
    enters a store short of its budget, else takes the weakest entry's place if it outranks it
    (a strictly higher score: it is the later token). O(G) instead of `expiry`'s O(G^2), for
    decoding. The expiries it returns are only compared with `last_query` (NEVER: kept; the
    query itself: gone), which is all a one-query block asks of them."""
    B, Hkv, G = store.ok.shape
    m = score_new.shape[-1]
    never = torch.full_like(store.slot, NEVER)
    if m == 0:
        return never, never[..., :0], store
    cap = store.ok.new_full((Hkv,), G, dtype=torch.long) if budget is None else budget
    place, enters = _entering(store.ok, ~store.ok, store.score, store.slot, cap, score_new, ok_new)
    onehot = torch.nn.functional.one_hot(place, G).bool() & enters[..., None]  # [B, Hkv, G]
    put = lambda old, new: torch.where(onehot, new.expand_as(old), old)
    put_d = lambda old, new: torch.where(onehot[..., None], new.expand_as(old), old)
    kept = Store(
        put_d(store.k, k_new),
        put_d(store.v, v_new),
        put(store.slot, slot_new.expand(B, Hkv, 1)),
        put(store.score, score_new),
        store.ok | onehot,
    )
    E_store = torch.where(onehot | ~store.ok, last_query, NEVER)  # the replaced one is gone
    E_new = torch.where(enters, NEVER, last_query)[..., None]
    return E_store, E_new, kept


def _entering(ok, empty, score, slot, cap, score_new, ok_new):
    """Where one new token goes among each KV head's entries and whether it enters: the first
    `empty` entry while the head holds fewer than its `cap` [Hkv], else the weakest `ok` one
    (lowest score, the later slot on a tie) if the token scores strictly higher (it is the
    later token). ok, empty, score, slot: [B, Hkv, N]; score_new, ok_new: [B, Hkv, 1].
    Returns (place [B, Hkv] an index into N, enters [B, Hkv] bool)."""
    full = ok.sum(-1) >= cap  # [B, Hkv]
    rank = torch.where(ok, score, float("inf"))
    low = rank.min(-1, keepdim=True).values
    later = torch.where(ok & (rank == low), slot, -NEVER)
    place = torch.where(full, later.argmax(-1), empty.long().argmax(-1))
    enters = ok_new[..., 0] & (cap > 0) & (~full | (score_new[..., 0] > low[..., 0]))
    return place, enters


def advance_one_packed(packed: Store, budget: tuple[int, ...], k_new, v_new, slot_new,
                       score_new, ok_new) -> Store:  # fmt: skip
    """`advance_one` on the cache's packed store ([B, 1, N, ...], `Store.pack`; `budget`: G_h
    of each KV head, N their sum) in place of unpacking it: KV head h owns its G_h entries, and the
    new token takes the first empty one of its head's, or its weakest. Returns the packed store
    after the query."""
    B, _, N = packed.ok.shape
    mine = ownership(budget, str(packed.ok.device))  # [Hkv, N]
    cap = torch.tensor(budget, device=packed.ok.device)  # [Hkv]
    place, enters = _entering(packed.ok & mine, ~packed.ok & mine, packed.score, packed.slot, cap,
                              score_new, ok_new)  # fmt: skip  # place: an index into N
    onehot = torch.nn.functional.one_hot(place, N).bool() & enters[..., None]  # [B, Hkv, N]
    hit = onehot.any(1)  # [B, N]: the heads own disjoint entries, at most one writes each
    head = onehot.long().argmax(1)  # [B, N] the head that writes there
    take = lambda x: x.gather(1, head.view(B, N, *[1] * (x.dim() - 2)).expand(  # noqa: E731
        B, N, *x.shape[2:]))[:, None]  # [B, Hkv, ...] -> [B, 1, N, ...]  # fmt: skip
    put = lambda old, new: torch.where(  # noqa: E731
        hit.view(B, 1, N, *[1] * (old.dim() - 3)), new, old)  # fmt: skip
    return Store(
        put(packed.k, take(k_new[:, :, 0])),
        put(packed.v, take(v_new[:, :, 0])),
        put(packed.slot, slot_new.view(1, 1, 1).expand(B, 1, N)),
        put(packed.score, take(score_new[..., 0])),
        packed.ok | hit[:, None],
    )


@functools.lru_cache(maxsize=256)
def ownership(budget: tuple[int, ...], device: str) -> torch.Tensor:
    """[Hkv, N] bool: entry n of a packed store (`Store.pack`) belongs to KV head h."""
    owner = torch.repeat_interleave(torch.arange(len(budget)), torch.tensor(budget))  # [N]
    return (owner[None, :] == torch.arange(len(budget))[:, None]).to(device)


def owned(packed: Store, budget: tuple[int, ...]) -> torch.Tensor:
    """[B, Hkv, N] bool: the packed store's live entries of each KV head."""
    return packed.ok & ownership(budget, str(packed.ok.device))


def reference_stores(scores: list[float], first: int, W: int, G: int, T: int) -> list[set[int]]:
    """The readable definition (tests): the store of every query `t < T` as a set of token
    indices, from per-token scores (None: never stored) of tokens `first, first + 1, ...`."""
    stores = []
    for t in range(T):
        evicted = [j for j in range(first, t - W + 1) if scores[j - first] is not None]
        ranked = sorted(evicted, key=lambda j: (-scores[j - first], j))
        stores.append(set(ranked[:G]))
    return stores
