"""`augment`, `mode`, `window`: AHN on an unmodified transformers causal LM.

Integration points, all scoped to the augmented model object:
- the attention function "ahn" in transformers' `AttentionInterface`, selected by the model's
  `config._attn_implementation` in the "sliding" and "ahn" modes (the original one in "full");
- a forward pre-hook on the decoder stack: puts an `AHNCache` in place and reads the padding;
- a forward pre-hook on each attention module: hands the layer input, cache layer and memory
  module to the attention function;
- `model.forward` wrapped (instance attribute) to prefill long prompts in chunks.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.cache_utils import Cache

from ahn.config import MODES, AHNConfig
from ahn.integration.attention import LayerContext, ahn_attention
from ahn.integration.cache import AHNCache, Lossless, ReadsLossless
from ahn.memory import AHN
from ahn.registry import rule

ATTENTION_NAME = "ahn"
CACHE_KWARGS = ("cache", "past_key_values")


@dataclass
class Runtime(ReadsLossless):
    """What an augmented model carries besides its parameters (`model._ahn_runtime`)."""

    config: AHNConfig
    base_attention: str
    decoder: nn.Module
    windowed: set[int]
    lossless: Lossless  # the current sizes; a cache holding tokens keeps those it was read with
    mode: str = "ahn"
    compiled: bool = False  # `ahn.compile` compiled the memory pieces
    # [B] left padding of the latest forward call; kept after it so that gradient checkpointing
    # recomputes the layers with the same padding.
    pad: torch.Tensor | None = None
    pad_max: int = 0
    handles: list = field(default_factory=list)
    requires_grad: dict = field(default_factory=dict)  # base parameter name -> flag before

    def new_cache(self) -> AHNCache:
        layers = len(self.decoder.layers)
        return AHNCache(layers, self.windowed, self.window, self.sinks, self.salient)


def augment(model: nn.Module, config: AHNConfig) -> nn.Module:
    """Add AHN memory modules to `model` in place and freeze every base parameter.

    Args:
        model: a transformers causal LM (Qwen2/Qwen2.5, Qwen3, Llama, Mistral, or any model
            whose decoder layers have `self_attn` dispatching through `AttentionInterface`).
        config: the `AHNConfig`.
    Returns:
        The same model object, in "ahn" mode. Its AHN output projections are zero, so it
        computes exactly sinks + sliding-window attention until trained.
    """
    if getattr(model, "_ahn_runtime", None) is not None:
        raise ValueError("model is already augmented; load weights with ahn.load or reuse it")
    decoder, dims = _inspect(model)
    windowed = set(range(len(decoder.layers))) if config.layers is None else set(config.layers)
    bad = sorted(i for i in windowed if i >= len(decoder.layers))
    if bad:
        raise ValueError(f"layers={bad} out of range: the model has {len(decoder.layers)} layers")
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for i in sorted(windowed):
        layer = decoder.layers[i]
        ref = layer.self_attn.q_proj.weight
        fn = rule(config.memory).module_class()(
            *dims, norm_eps=config.norm_eps, device=ref.device, dtype=ref.dtype
        )
        layer.ahn = AHN(fn)
    AttentionInterface.register(ATTENTION_NAME, ahn_attention)
    rt = Runtime(
        config,
        model.config._attn_implementation or "eager",
        decoder,
        windowed,
        Lossless(config.window, config.sinks, config.salient),
        requires_grad=before,
    )
    model._ahn_runtime = rt
    rt.handles.append(decoder.register_forward_pre_hook(_decoder_pre_hook, with_kwargs=True))
    for i, layer in enumerate(decoder.layers):
        attn = layer.self_attn
        attn._ahn_runtime, attn._ahn_index, attn._ahn_context = rt, i, None
        rt.handles.append(attn.register_forward_pre_hook(_attention_pre_hook, with_kwargs=True))
    decoder._ahn_runtime = rt
    model.forward = _chunked_prefill(model, model.forward)
    if hasattr(model, "_prepare_cache_for_generation"):
        model._prepare_cache_for_generation = _generation_cache(
            model, model._prepare_cache_for_generation
        )
    model.generate = _continuing_generate(model.generate)
    model.save_pretrained = _refuse_save_pretrained
    set_mode(model, "ahn")
    return model


def _refuse_save_pretrained(*args, **kwargs):
    raise ValueError(
        "save_pretrained on an AHN-augmented model would write base and AHN weights in a layout "
        "neither transformers nor ahn.load reads: save the AHN with ahn.save(model, path) and "
        "reload it with ahn.load(base_model, path); ahn.unaugment(model) gives the base back"
    )


def unaugment(model: nn.Module) -> nn.Module:
    """Undo `augment`: remove the hooks, the AHN modules and the wrappers, restore the base's
    attention implementation and `requires_grad` flags. Returns the same (base) model."""
    rt = runtime_of(model)
    for handle in rt.handles:
        handle.remove()
    for layer in rt.decoder.layers:
        if hasattr(layer, "ahn"):
            del layer.ahn
        for name in ("_ahn_runtime", "_ahn_index", "_ahn_context"):
            layer.self_attn.__dict__.pop(name, None)
    overrides = ("forward", "generate", "save_pretrained", "_prepare_cache_for_generation")
    for name in (*overrides, "_ahn_runtime"):
        model.__dict__.pop(name, None)  # the instance overrides; the class methods remain
    rt.decoder.__dict__.pop("_ahn_runtime", None)
    model.config._attn_implementation = rt.base_attention
    for name, param in model.named_parameters():
        param.requires_grad_(rt.requires_grad.get(name, True))
    return model


def _inspect(model: nn.Module) -> tuple[nn.Module, tuple[int, int, int]]:
    """The decoder stack and (hidden, heads, head_dim); a clear error when unsupported."""
    name = type(model).__name__
    decoder = getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"{name} is not supported: expected a decoder stack at `model.model.layers`"
        )
    attn = getattr(layers[0], "self_attn", None)
    missing = [
        a for a in ("q_proj", "k_proj", "v_proj", "o_proj", "layer_idx") if not hasattr(attn, a)
    ]
    if attn is None or missing:
        raise ValueError(
            f"{name} is not supported: its decoder layers lack self_attn {missing or ''}"
        )
    cfg = model.config
    for attr in ("hidden_size", "num_attention_heads", "num_key_value_heads"):
        if getattr(cfg, attr, None) is None:
            raise ValueError(f"{name} is not supported: its config has no `{attr}`")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return decoder, (cfg.hidden_size, cfg.num_attention_heads, head_dim)


def is_augmented(model: nn.Module) -> bool:
    return getattr(model, "_ahn_runtime", None) is not None


def runtime_of(model: nn.Module) -> Runtime:
    rt = getattr(model, "_ahn_runtime", None)
    if rt is None:
        raise ValueError(
            f"{type(model).__name__} is not augmented: call ahn.augment(model, config)"
        )
    return rt


def set_mode(model: nn.Module, name: str) -> None:
    """Switch to "full" (the base model), "sliding" (sinks + window), "ahn" (sinks + salient
    store + window + memory) or "store" (the ablation: "ahn" without the memory's read)."""
    if name not in MODES:
        raise ValueError(f"mode {name!r} is not one of {MODES}")
    rt = runtime_of(model)
    rt.mode = name
    model.config._attn_implementation = rt.base_attention if name == "full" else ATTENTION_NAME


@contextlib.contextmanager
def mode(model: nn.Module, name: str):
    """Context manager: run `model` in mode `name`, restoring the previous mode on exit."""
    previous = runtime_of(model).mode
    set_mode(model, name)
    try:
        yield model
    finally:
        set_mode(model, previous)


def set_window(
    model: nn.Module,
    window: int | None = None,
    sinks: int | None = None,
    salient: int | None = None,
) -> None:
    """Run with other lossless sizes from now on (None keeps the current one): `window`,
    `sinks`, and `salient` store entries per KV head. Caches already holding tokens keep
    theirs, and are refused at other sizes."""
    rt = runtime_of(model)
    checked = AHNConfig(
        memory=rt.config.memory,
        window=rt.window if window is None else window,
        sinks=rt.sinks if sinks is None else sinks,
        salient=rt.salient if salient is None else salient,
    )
    rt.lossless = Lossless(checked.window, checked.sinks, checked.salient)


@contextlib.contextmanager
def window(
    model: nn.Module,
    window: int | None = None,
    sinks: int | None = None,
    salient: int | None = None,
):
    """Context manager: temporarily use other lossless sizes (training draws them per step)."""
    rt = runtime_of(model)
    previous = rt.lossless
    set_window(model, window, sinks, salient)
    try:
        yield model
    finally:
        rt.lossless = previous


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the AHN modules only."""
    runtime_of(model)
    return [(n, p) for n, p in model.named_parameters() if ".ahn.fn." in f".{n}"]


def _cache_key(kwargs: dict) -> str:
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


def _wants_cache(module: nn.Module, kwargs: dict) -> bool:
    """`use_cache` as transformers resolves it: the config's default, off in training."""
    use_cache = kwargs.get("use_cache")
    if use_cache is None:
        return bool(getattr(module.config, "use_cache", True)) and not module.training
    return bool(use_cache)


def _ahn_cache(rt: Runtime, cache: Cache | None, use_cache: bool) -> AHNCache | None:
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
                f"the cache holds {cache.get_seq_length()} tokens read with window="
                f"{cache.window}, sinks={cache.sinks}, salient={cache.salient}, but the model "
                f"now runs with window={rt.window}, sinks={rt.sinks}, salient={rt.salient}; use "
                "the sizes the cache was made with or a new cache (ahn.new_cache(model))"
            )
        cache.resize(rt.lossless)  # still empty: it takes the runtime's sizes
    return cache


def new_cache(model: nn.Module) -> AHNCache:
    """An empty cache for `model` at its current window and sinks (for `model(...)` or
    `model.generate(..., past_key_values=...)` calls that continue one another)."""
    return runtime_of(model).new_cache()


def _generation_cache(model: nn.Module, prepare):
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


def _continuing_generate(generate):
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


def _decoder_pre_hook(decoder, args, kwargs):
    rt: Runtime = decoder._ahn_runtime
    key = _cache_key(kwargs)
    if rt.mode == "full":
        if isinstance(kwargs.get(key), AHNCache):
            raise ValueError(
                "an AHN cache (sinks + window + memory) was passed in mode 'full', which needs "
                "every past token: switch to the mode it was made in, or pass no cache"
            )
        _warn_beyond_context(decoder.config, args, kwargs, kwargs.get(key))
        return None
    cache = _ahn_cache(rt, kwargs.get(key), _wants_cache(decoder, kwargs))
    kwargs[key] = cache
    B, device = _batch_size(args, kwargs)
    mask = kwargs.get("attention_mask")
    pad = left_padding(mask, B, device)
    if isinstance(cache, AHNCache):
        cache.pad = pad if cache.pad is None else _grown_padding(cache, mask, pad)
        pad = cache.pad
    rt.pad, rt.pad_max = pad, int(pad.max()) if pad.numel() else 0
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


def _warn_beyond_context(config, args, kwargs, cache) -> None:
    """Full attention past `max_position_embeddings` leaves the base's trained range (the AHN
    and sliding modes attend to sinks + window only): say so, once per call site."""
    limit = getattr(config, "max_position_embeddings", None)
    x = _inputs(args, kwargs)
    if limit is None or x is None:
        return
    total = x.shape[1] + (cache.get_seq_length() if isinstance(cache, Cache) else 0)
    if total > limit:
        warnings.warn(
            f"mode 'full' over {total} tokens: beyond the base's max_position_embeddings="
            f"{limit}, full attention leaves its trained range (modes 'ahn' and 'sliding' do "
            "not: they attend to sinks + window only)",
            stacklevel=2,
        )


def _attention_pre_hook(attn, args, kwargs):
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
    salient = rt.salient if memory is not None else 0
    attn._ahn_context = LayerContext(
        x, cache_layer, pad, rt.pad_max, rt.window, rt.sinks, memory, windowed, salient,
        rt.config.salient_score, rt.mode == "ahn",
    )  # fmt: skip
    return None


def _chunked_prefill(model: nn.Module, forward):
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
            or not _wants_cache(model, kwargs)
        ):
            return forward(input_ids, *args, **kwargs)
        return _prefill_in_chunks(rt, forward, input_ids, kwargs, chunk)

    return wrapper


def _prefill_in_chunks(rt: Runtime, forward, input_ids, kwargs, chunk):
    key = _cache_key(kwargs)
    cache = _ahn_cache(rt, kwargs.get(key), use_cache=True)
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
