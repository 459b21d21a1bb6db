"""The instance wrappers of an augmented model's `forward` (long prompts prefilled in chunks)
and `generate` (a new AHN cache per generation; continuing a document's memory)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from ahn.integration.cache import AHNCache
from ahn.integration.hooks import CACHE_KWARGS, ahn_cache, cache_key, left_padding, wants_cache
from ahn.integration.runtime import Runtime


def generation_cache(model: nn.Module, prepare):
    """Wrap `generate`'s cache preparation: outside "full" mode a generation without a cache of
    the caller's gets a new AHNCache; cache implementations that cannot hold a memory state
    (static, offloaded, quantized, compiled generation) are refused with a clear error."""

    @functools.wraps(prepare)
    def wrapper(generation_config, model_kwargs, *args, **kwargs):
        rt: Runtime = model._ahn_runtime
        given = next((model_kwargs[k] for k in CACHE_KWARGS if model_kwargs.get(k) is not None),
                     None)  # fmt: skip
        implementation = getattr(generation_config, "cache_implementation", None)
        if rt.mode == "full" or given is not None or generation_config.use_cache is False:
            return prepare(generation_config, model_kwargs, *args, **kwargs)
        if implementation not in SUPPORTED_CACHE_IMPLEMENTATIONS:
            raise ValueError(
                f"cache_implementation={implementation!r} is not supported in mode {rt.mode!r}: "
                f"the AHN cache is bounded by construction; use one of "
                f"{SUPPORTED_CACHE_IMPLEMENTATIONS} (or pass ahn.new_cache(model))"
            )
        result = prepare(generation_config, model_kwargs, *args, **kwargs)
        for key in CACHE_KWARGS:
            if model_kwargs.get(key) is not None:
                model_kwargs[key] = rt.new_cache()
        return result

    return wrapper


SUPPORTED_CACHE_IMPLEMENTATIONS = (None, "dynamic")


def continuing_generate(generate):
    """Wrap `generate`: given a `continuation_only` AHNCache (a document's memory, from
    `ahn.read` / `ahn.load_memory`), `input_ids` holds only the tokens that follow the cached
    ones. The cached positions get placeholders for transformers' bookkeeping (they are never
    fed to the model: the cache covers them) and are cut from the returned sequences."""

    @functools.wraps(generate)
    def wrapper(*args, **kwargs):
        cache = next((kwargs[k] for k in CACHE_KWARGS if kwargs.get(k) is not None), None)
        if not (isinstance(cache, AHNCache) and cache.continuation_only):
            return generate(*args, **kwargs)
        ids = kwargs.pop("input_ids", args[0] if args else None)
        args = args[1:]
        past = cache.get_seq_length()
        rows = 1 if cache.pad is None else cache.pad.shape[0]
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] == 0:
            raise ValueError(
                "generate from a memory needs input_ids [B, T >= 1]: the tokens that follow it"
            )
        if ids.shape[0] != rows:
            raise ValueError(f"input_ids has {ids.shape[0]} rows; the memory holds {rows}")
        # Placeholders copy each row's first new token: a repetition penalty sees no other id.
        full = torch.cat([ids[:, :1].expand(-1, past), ids], dim=1)
        # An explicit mask: transformers would otherwise infer one from pad-token ids.
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        kwargs["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], past), mask], 1)
        out = generate(full, *args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out[:, past:]
        out.sequences = out.sequences[:, past:]
        return out

    return wrapper


def chunked_prefill(model: nn.Module, forward):
    """Wrap `forward` so that with a cache, prompts longer than `prefill_chunk` run in chunks:
    peak memory is bounded by sinks + window + chunk, whatever the prompt length."""

    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        rt: Runtime = model._ahn_runtime
        input_ids = kwargs.pop("input_ids", args[0] if args else None)
        args = args[1:]
        x = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        chunk = rt.config.prefill_chunk
        if (
            rt.mode == "full"
            or x is None
            or x.shape[1] <= chunk
            or args
            or kwargs.get("labels") is not None
            or not wants_cache(model, kwargs)
        ):
            return forward(input_ids, *args, **kwargs)
        return _prefill_in_chunks(rt, forward, input_ids, kwargs, chunk)

    return wrapper


def _prefill_in_chunks(rt: Runtime, forward, input_ids, kwargs, chunk):
    key = cache_key(kwargs)
    cache = ahn_cache(rt, kwargs.get(key), use_cache=True)
    embeds = kwargs.pop("inputs_embeds", None)
    x = input_ids if input_ids is not None else embeds
    mask, positions = kwargs.pop("attention_mask", None), kwargs.pop("position_ids", None)
    if cache.pad is None:
        cache.pad = left_padding(mask, x.shape[0], x.device)
    keep = kwargs.pop("logits_to_keep", 0)
    T, past = x.shape[1], cache.get_seq_length()
    last_len = T - (T - 1) // chunk * chunk
    keep_all = not (isinstance(keep, int) and 0 < keep <= last_len)
    logits, out = [], None
    for a in range(0, T, chunk):
        b = min(T, a + chunk)
        step = dict(kwargs)
        step[key] = cache
        step["input_ids" if input_ids is not None else "inputs_embeds"] = x[:, a:b]
        if mask is not None:
            step["attention_mask"] = mask[:, : past + b]
        if positions is not None:
            step["position_ids"] = positions[..., a:b]
        step["logits_to_keep"] = 0 if keep_all else (keep if b == T else 1)
        out = forward(**step)
        if keep_all or b == T:
            logits.append(out.logits)
    out.logits = torch.cat(logits, dim=1)
    if keep_all and isinstance(keep, int) and keep > 0:
        out.logits = out.logits[:, -keep:]
    return out
