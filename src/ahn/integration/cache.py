"""The bounded cache of an AHN model: sinks + window keys/values and the memory states.

Slots: every token fed to the model (padding included) has a slot, its index in the row's
stream. A row left-padded with `pad[b]` tokens has logical index `slot - pad[b]`. The window
is the last `W` slots for every row; the sinks are the first `S` *logical* tokens of each row,
held compacted in `[B, Hkv, S, D]`.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer

from ahn.integration.store import Store


@dataclass(frozen=True)
class Lossless:
    """The lossless sizes of windowed layers: the first `sinks` tokens, the last `window` and
    up to `salient` evicted tokens per KV head (the salient store, used when the memory is on),
    and where the sinks and the store are seen (`positions`, SPEC §2c). `budgets`: the store's
    entries G_lh per decoder layer and KV head when they differ (`ahn.config.store_budgets`;
    None: `salient` each), `share`: which heads share one choice of tokens. A cache holds one,
    shared by all its layers; the runtime holds the model's current one."""

    window: int
    sinks: int
    salient: int = 0
    positions: str = "original"
    budgets: tuple[tuple[int, ...], ...] | None = None
    share: str = "head"

    def budget(self, index: int) -> tuple[int, ...] | None:
        """G_h of layer `index`'s KV heads, or None when every head has `salient`."""
        return None if self.budgets is None else self.budgets[index]

    @property
    def largest(self) -> int:
        """The most store entries of any KV head."""
        return self.salient if self.budgets is None else max(max(b) for b in self.budgets)


@dataclass
class Choice:
    """Share "global": the scores [B, 1, n] the first store layer of a forward call gave the
    tokens that call evicts, which every later layer uses (all layers evict the same slots)."""

    scores: torch.Tensor | None = None


class ReadsLossless:
    """`window` and `sinks` read from `self.lossless`, their one owner (never copied)."""

    lossless: Lossless

    @property
    def window(self) -> int:
        return self.lossless.window

    @property
    def sinks(self) -> int:
        return self.lossless.sinks

    @property
    def salient(self) -> int:
        return self.lossless.salient

    @property
    def positions(self) -> str:
        return self.lossless.positions


@dataclass
class LosslessView:
    """What one attention step sees: the layer's stored tokens followed by the new ones.

    `k_loc, v_loc` cover slots `[start, start + L)`: the window kept from earlier calls, then
    the new chunk. `gates_loc` are the memory's write-gate logits of the same tokens (`gates` turns
    them into write gates when the tokens leave the window).
    """

    sink_k: torch.Tensor  # [B, Hkv, S, D]
    sink_v: torch.Tensor  # [B, Hkv, S, D]
    sink_ok: torch.Tensor  # [B, S] bool: this sink has been seen
    k_loc: torch.Tensor  # [B, Hkv, L, D]
    v_loc: torch.Tensor  # [B, Hkv, L, D]
    gates_loc: torch.Tensor | None  # [B, L, H, G] logits, or None when the memory is off
    start: int  # slot of k_loc[..., 0, :]
    seen: int  # slots seen before the new chunk
    store: Store | None = None  # the salient store before the chunk, when in use


class AHNLayer(ReadsLossless, CacheLayerMixin):
    """Cache of one windowed layer: at most `sinks + salient + window` keys/values per KV head
    plus a memory state.

    `update` (called by the attention module before the attention function) only hands the
    new keys/values through: the AHN attention function commits them with `commit`, because the
    memory gates need the layer input, which the cache never sees.
    """

    is_sliding = True

    def __init__(self, lossless: Lossless) -> None:
        super().__init__()
        self.lossless = lossless  # the cache's own object: its sizes are read, never copied
        self.seen = 0
        self.sink_k = self.sink_v = self.sink_ok = None
        self.gates: torch.Tensor | None = None  # [B, w, H, G] write-gate logits
        self.state: torch.Tensor | None = None  # [B, H, D, D] float32
        self.store: Store | None = None  # the salient store, once the memory has used it
        self.score_state: torch.Tensor | None = None  # the store score's own state, if any

    def lazy_initialization(self, key_states, value_states) -> None:
        B, Hkv, _, D = key_states.shape
        self.keys = key_states.new_zeros(B, Hkv, 0, D)
        self.values = value_states.new_zeros(B, Hkv, 0, D)
        self.sink_k = key_states.new_zeros(B, Hkv, self.sinks, D)
        self.sink_v = value_states.new_zeros(B, Hkv, self.sinks, D)
        self.sink_ok = torch.zeros(B, self.sinks, dtype=torch.bool, device=key_states.device)
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return key_states, value_states

    def view(self, k_new, v_new, gates_new, pad, salient: int = 0, budget=None) -> LosslessView:
        """The stored tokens followed by the new chunk; sinks of the chunk already included;
        the salient store (of `salient` entries per KV head, or `budget` G_h each; the cache
        holds it packed, `Store.pack`) when that is not 0."""
        if not self.is_initialized:
            self.lazy_initialization(k_new, v_new)
        sink_k, sink_v, sink_ok = _add_sinks(
            self.sink_k, self.sink_v, self.sink_ok, k_new, v_new, pad, self.seen
        )
        gates_loc = None
        if gates_new is not None:
            old = self.gates if self.gates is not None else gates_new[:, :0]
            gates_loc = torch.cat([old[:, : self.keys.shape[-2]], gates_new], dim=1)
        return LosslessView(
            sink_k,
            sink_v,
            sink_ok,
            torch.cat([self.keys, k_new], dim=-2),
            torch.cat([self.values, v_new], dim=-2),
            gates_loc,
            self.seen - self.keys.shape[-2],
            self.seen,
            _dense(self.store, k_new, salient, budget) if salient else None,
        )

    def commit(self, view, new_tokens: int, state, store=None, score_state=None,
               budget=None) -> None:  # fmt: skip
        """Keep the sinks, the last `window` slots (with their gates), the memory state, the
        salient store (packed when its heads have their own `budget`) and its score's state."""
        if store is not None and budget is not None:
            store = store.pack(budget)
        keep = min(self.window, view.k_loc.shape[-2])
        self.sink_k, self.sink_v, self.sink_ok = view.sink_k, view.sink_v, view.sink_ok
        self.keys = view.k_loc[..., -keep:, :].contiguous()
        self.values = view.v_loc[..., -keep:, :].contiguous()
        self.gates = None if view.gates_loc is None else view.gates_loc[:, -keep:].contiguous()
        self.state = state
        self.store = store if store is not None else self.store
        self.score_state = score_state if score_state is not None else self.score_state
        self.seen += new_tokens

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        stored = self.keys.shape[-2] if self.is_initialized else 0
        return self.sinks + self.lossless.largest + stored + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.__init__(self.lossless)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_batch(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map_batch(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_batch(lambda t: t.repeat_interleave(repeats, dim=0))

    NAMES = ("keys", "values", "sink_k", "sink_v", "sink_ok", "gates", "state", "score_state")

    def tensors(self) -> list[torch.Tensor]:
        held = [t for t in (getattr(self, n) for n in self.NAMES) if t is not None]
        return held + ([] if self.store is None else self.store.tensors())

    def _map_batch(self, fn) -> None:
        for name in self.NAMES:
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, fn(tensor))
        if self.store is not None:
            self.store = self.store.map(fn)


def _dense(store: Store | None, like: torch.Tensor, G: int, budget) -> Store:
    """The store as attention uses it, [B, Hkv, G, ...]: empty at first, unpacked if packed."""
    if store is None:
        return Store.empty(like, G)
    return store if budget is None else store.unpack(budget)


def _add_sinks(sink_k, sink_v, sink_ok, k_new, v_new, pad, seen):
    """Copy the tokens of the new chunk that are sinks of their row into the sink store.

    Row b's sink i sits at slot `pad[b] + i`; the chunk covers slots `[seen, seen + C)`.
    """
    S, C = sink_k.shape[-2], k_new.shape[-2]
    if S == 0 or bool(sink_ok.all()):
        return sink_k, sink_v, sink_ok
    idx = pad[:, None] + torch.arange(S, device=pad.device) - seen  # [B, S] index in the chunk
    in_chunk = (idx >= 0) & (idx < C)
    gather = idx.clamp(0, C - 1)[:, None, :, None].expand(-1, k_new.shape[1], -1, k_new.shape[-1])
    take = in_chunk[:, None, :, None]
    sink_k = torch.where(take, k_new.gather(2, gather), sink_k)
    sink_v = torch.where(take, v_new.gather(2, gather), sink_v)
    return sink_k, sink_v, sink_ok | in_chunk


class AHNCache(ReadsLossless, Cache):
    """A `transformers` Cache whose windowed layers are `AHNLayer`s and whose full-attention
    layers (those not in `AHNConfig.layers`) are ordinary `DynamicLayer`s.

    `pad[b]` is the number of left-padding slots of row b, fixed by the first call.

    `continuation_only`: the tokens this cache holds are not repeated in the `input_ids` given
    to `generate` with it (a document's memory from `ahn.read` / `ahn.load_memory`): the ids are
    what follows the cached tokens. Otherwise transformers' convention holds (`input_ids` is
    the whole sequence, its first `get_seq_length()` tokens already cached).
    """

    def __init__(self, num_layers: int, windowed: set[int], lossless: Lossless) -> None:
        self.lossless = lossless
        layers = [
            AHNLayer(self.lossless) if i in windowed else DynamicLayer() for i in range(num_layers)
        ]
        super().__init__(layers=layers)
        self.pad: torch.Tensor | None = None  # [B] long
        self.continuation_only = False
        self.warned_positions = False  # the beyond-context warning was given for this cache

    def copy(self) -> AHNCache:
        """An independent copy (its size is fixed, so copies are cheap): generating from the
        copy leaves this cache as it was, to answer the next question from the same memory."""
        return _copy.deepcopy(self)

    def resize(self, lossless: Lossless) -> None:
        """Give an empty cache other lossless sizes (a cache holding tokens keeps its own)."""
        if self.get_seq_length() > 0:
            raise ValueError("a cache holding tokens cannot change its window or sinks")
        self.lossless = lossless
        for layer in self.layers:
            if isinstance(layer, AHNLayer):
                layer.__init__(lossless)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].get_seq_length()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove == 0:
            return
        raise ValueError("an AHN cache cannot be cropped: evicted tokens are already in the memory")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.pad is not None:
            self.pad = self.pad.index_select(0, beam_idx.to(self.pad.device))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.pad is not None:
            self.pad = self.pad[indices]

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.pad is not None:
            self.pad = self.pad.repeat_interleave(repeats, dim=0)


def cache_bytes(cache: Cache) -> int:
    """Bytes held by a cache's tensors (keys, values, sinks, gates, memory states, stores)."""
    total = 0
    for layer in cache.layers:
        tensors = layer.tensors() if isinstance(layer, AHNLayer) else [layer.keys, layer.values]
        total += sum(t.numel() * t.element_size() for t in tensors if t is not None)
    return total
