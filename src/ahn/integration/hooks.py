"""The forward pre-hooks of an augmented model: the decoder stack's (puts an `AHNCache` in
place, reads the left padding) and each attention module's (hands the layer input, cache layer
and memory module to the attention function through a `LayerContext`)."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers.cache_utils import Cache

from ahn.integration.attention import LayerContext
from ahn.integration.cache import AHNCache
from ahn.integration.runtime import Runtime

CACHE_KWARGS = ("cache", "past_key_values")


def cache_key(kwargs: dict) -> str:
    return next((k for k in CACHE_KWARGS if kwargs.get(k) is not None), CACHE_KWARGS[0])


def left_padding(attention_mask: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """[B] number of leading zeros of a 2D 0/1 mask; only left padding is supported."""
    if attention_mask is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask of shape {tuple(attention_mask.shape)}: "
            "AHN modes take a 2D [B, T] padding mask"
        )
    mask = attention_mask.long()
    if bool(((mask != 0) & (mask != 1)).any()) or bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError("attention_mask must be 0/1 with zeros only on the left (left padding)")
    return (mask == 0).sum(-1)


def _inputs(args, kwargs) -> torch.Tensor | None:
    """The decoder call's `input_ids` (or `inputs_embeds`)."""
    x = kwargs.get("input_ids", args[0] if args else None)
    return kwargs.get("inputs_embeds") if x is None else x


def _batch_size(args, kwargs) -> tuple[int, torch.device]:
    x = _inputs(args, kwargs)
    return x.shape[0], x.device


def wants_cache(module: nn.Module, kwargs: dict) -> bool:
    """`use_cache` as transformers resolves it: the config's default, off in training."""
    use_cache = kwargs.get("use_cache")
    if use_cache is None:
        return bool(getattr(module.config, "use_cache", True)) and not module.training
    return bool(use_cache)


def ahn_cache(rt: Runtime, cache: Cache | None, use_cache: bool) -> AHNCache | None:
    """The AHNCache to use: the caller's own (its geometry checked against the runtime's), a
    new one when a cache is wanted and none was given, else None. A cache of another class is
    refused: replacing it would leave the caller's object empty without a word."""
    if cache is not None and not isinstance(cache, AHNCache):
        raise ValueError(
            f"mode {rt.mode!r} keeps sinks + window + memory states and needs the cache of "
            f"ahn.new_cache(model); got a {type(cache).__name__} (pass that cache, or none)"
        )
    if cache is None:
        return rt.new_cache() if use_cache else None
    if cache.lossless != rt.lossless:
        if cache.get_seq_length() > 0:
            raise ValueError(
                f"the cache holds {cache.get_seq_length()} tokens read with {_sizes(cache)}, but "
                f"the model now runs with {_sizes(rt)}; use the sizes the cache was made with "
                "or a new cache (ahn.new_cache(model))"
            )
        cache.resize(rt.lossless)  # still empty: it takes the runtime's sizes
    return cache


def _sizes(holder) -> str:
    sizes = holder.lossless
    return (f"window={sizes.window}, sinks={sizes.sinks}, salient={sizes.salient}, "
            f"positions={sizes.positions!r}")  # fmt: skip


def decoder_pre_hook(decoder, args, kwargs):
    rt: Runtime = decoder._ahn_runtime
    key = cache_key(kwargs)
    if rt.mode == "full":
        if isinstance(kwargs.get(key), AHNCache):
            raise ValueError(
                "an AHN cache (sinks + window + memory) was passed in mode 'full', which needs "
                "every past token: switch to the mode it was made in, or pass no cache"
            )
        _warn_beyond_context(decoder.config, args, kwargs, kwargs.get(key), rt.mode)
        return None
    cache = ahn_cache(rt, kwargs.get(key), wants_cache(decoder, kwargs))
    if rt.positions == "original" and not getattr(cache, "warned_positions", False):
        if _warn_beyond_context(decoder.config, args, kwargs, cache, rt.mode) and cache is not None:
            cache.warned_positions = True  # once per cache, not once per prefill chunk
    kwargs[key] = cache
    B, device = _batch_size(args, kwargs)
    mask = kwargs.get("attention_mask")
    pad = left_padding(mask, B, device)
    if isinstance(cache, AHNCache):
        cache.pad = pad if cache.pad is None else _grown_padding(cache, mask, pad)
        pad = cache.pad
    rt.pad, rt.pad_max = pad, int(pad.max()) if pad.numel() else 0
    rt.choice.scores = None  # a new call: its first store layer chooses for all (share "global")
    return args, kwargs


def _grown_padding(cache: AHNCache, mask, pad: torch.Tensor) -> torch.Tensor:
    """The cache's left padding after this call's mask: fixed once a row has a real token; a
    row that so far held only padding (fed one piece at a time) may still grow it."""
    if mask is None:
        return cache.pad
    seen = cache.get_seq_length()
    only_padding = cache.pad >= seen  # [B] every slot so far was padding
    agrees = (cache.pad.clamp(max=mask.shape[-1]) == pad) | (only_padding & (pad >= seen))
    if not bool(agrees.all()):
        raise ValueError(
            f"attention_mask gives left padding {pad.tolist()}, but the cache started with "
            f"{cache.pad.tolist()}: only left padding, fixed before a row's first real token"
        )
    return torch.where(only_padding, pad, cache.pad)


def _warn_beyond_context(config, args, kwargs, cache, mode: str) -> bool:
    """Past `max_position_embeddings` full attention, and the sinks and store of
    positions="original", sit at RoPE distances the base never saw: say so, once per call
    site (Python's warning filter), naming what stays in range. Returns whether it warned."""
    limit = getattr(config, "max_position_embeddings", None)
    x = _inputs(args, kwargs)
    if limit is None or x is None:
        return False
    total = x.shape[1] + (cache.get_seq_length() if isinstance(cache, Cache) else 0)
    if total <= limit:
        return False
    what = (
        "full attention leaves its trained range (modes 'ahn' and 'sliding' with "
        "positions='bounded' do not)"
        if mode == "full"
        else "positions='original' puts the sinks and the store at RoPE distances the base "
        "never saw; positions='bounded' keeps them within sinks + salient + window "
        "(ahn.set_window(model, positions='bounded'), --positions bounded)"
    )
    warnings.warn(
        f"mode {mode!r} over {total} tokens: beyond the base's max_position_embeddings="
        f"{limit}, {what}",
        stacklevel=2,
    )
    return True


def attention_pre_hook(attn, args, kwargs):
    rt: Runtime = attn._ahn_runtime
    if rt.mode == "full":
        return None
    x = kwargs.get("hidden_states", args[0] if args else None)
    cache = next((kwargs[k] for k in CACHE_KWARGS if kwargs.get(k) is not None), None)
    index = attn._ahn_index
    windowed = index in rt.windowed
    pad = (
        rt.pad if rt.pad is not None else torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    )
    memory = rt.decoder.layers[index].ahn.fn if windowed and rt.mode in ("ahn", "store") else None
    cache_layer = (
        cache.layers[index] if isinstance(cache, Cache) and index < len(cache.layers) else None
    )
    budget = rt.lossless.budget(index) if memory is not None else None
    salient = (rt.salient if budget is None else max(budget)) if memory is not None else 0
    if budget is not None and min(budget) == salient:
        budget = None  # every KV head of this layer has the layer's size
    attn._ahn_context = LayerContext(
        x, cache_layer, pad, rt.pad_max, rt.window, rt.sinks, memory, windowed, salient,
        rt.config.salient_score, rt.mode == "ahn",
        rt.far if rt.positions == "bounded" else None, budget, rt.lossless.share, rt.choice,
    )  # fmt: skip
    return None
