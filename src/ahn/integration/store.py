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
    from ahn.ops import chunk_delta_rule

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


def expiry(score: torch.Tensor, slot: torch.Tensor, ok: torch.Tensor, G: int, W: int):
    """Expiry slots of candidates (the store's entries and newly evicted tokens), [B, Hkv, K].

    Candidate c is evicted at `slot_c + W` and expires when the G-th candidate outranking it is
    evicted (`NEVER` while fewer than G do). Candidates not `ok` never enter: their expiry is
    their eviction.
    """
    evict = slot + W  # [B, Hkv, K]
    s_c, s_o = score[..., :, None], score[..., None, :]  # c: the ranked one, o: another
    earlier = slot[..., None, :] < slot[..., :, None]
    outranks = ok[..., None, :] & ((s_o > s_c) | ((s_o == s_c) & earlier))  # [B, Hkv, K, K]
    when = torch.where(outranks, evict[..., None, :], NEVER)  # [B, Hkv, K, K]
    gth = when.kthvalue(G, dim=-1).values  # K >= G: the store's G entries are candidates
    return torch.where(ok, torch.maximum(evict, gth), evict)


def advance(store: Store, k_new, v_new, slot_new, score_new, ok_new, W: int, last_query: int):
    """The store's entries and the tokens evicted by queries up to `last_query` (k_new, v_new
    [B, Hkv, m, D]; slot_new [m]; score_new, ok_new [B, Hkv, m]) ranked together.

    Returns (expiry of the store's entries [B, Hkv, G], of the new tokens [B, Hkv, m], the store
    read by `last_query` and kept for the queries after it).
    """
    G = store.size
    B, Hkv, m = score_new.shape
    slot_new = slot_new.expand(B, Hkv, m)
    slot = torch.cat([store.slot, slot_new], dim=-1)
    score = torch.cat([store.score, score_new], dim=-1)
    ok = torch.cat([store.ok, ok_new], dim=-1)
    E = expiry(score, slot, ok, G, W)  # [B, Hkv, G + m]
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


def reference_stores(scores: list[float], first: int, W: int, G: int, T: int) -> list[set[int]]:
    """The readable definition (tests): the store of every query `t < T` as a set of token
    indices, from per-token scores (None: never stored) of tokens `first, first + 1, ...`."""
    stores = []
    for t in range(T):
        evicted = [j for j in range(first, t - W + 1) if scores[j - first] is not None]
        ranked = sorted(evicted, key=lambda j: (-scores[j - first], j))
        stores.append(set(ranked[:G]))
    return stores
