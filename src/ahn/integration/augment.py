"""`augment`, `mode`, `window`: AHN on an unmodified transformers causal LM.

Integration points, all scoped to the augmented model object:
- the attention function "ahn" in transformers' `AttentionInterface`, selected by the model's
  `config._attn_implementation` in the "sliding" and "ahn" modes (the original one in "full");
- a forward pre-hook on the decoder stack: puts an `AHNCache` in place and reads the padding;
- a forward pre-hook on each attention module: hands the layer input, cache layer and memory
  module to the attention function;
- `model.forward` wrapped (instance attribute) to prefill long prompts in chunks.
The hooks are in `hooks.py`, the wrappers of forward / generate in `wrappers.py`.
"""

from __future__ import annotations

import contextlib

from torch import nn
from transformers import AttentionInterface

from ahn.config import MODES, AHNConfig, store_budgets
from ahn.integration.attention import ahn_attention
from ahn.integration.cache import AHNCache, Lossless
from ahn.integration.hooks import attention_pre_hook, decoder_pre_hook
from ahn.integration.positions import find_rerotation
from ahn.integration.runtime import Runtime
from ahn.integration.wrappers import chunked_prefill, continuing_generate, generation_cache
from ahn.memory import AHN
from ahn.registry import rule

ATTENTION_NAME = "ahn"
KEEP = object()  # `set_store`: leave the head profile as it is


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
        _lossless(config, decoder, windowed, config),
        requires_grad=before,
        far=find_rerotation(decoder),
    )
    _check_positions(rt, config.positions)
    model._ahn_runtime = rt
    rt.handles.append(decoder.register_forward_pre_hook(decoder_pre_hook, with_kwargs=True))
    for i, layer in enumerate(decoder.layers):
        attn = layer.self_attn
        attn._ahn_runtime, attn._ahn_index, attn._ahn_context = rt, i, None
        rt.handles.append(attn.register_forward_pre_hook(attention_pre_hook, with_kwargs=True))
    decoder._ahn_runtime = rt
    model.forward = chunked_prefill(model, model.forward)
    if hasattr(model, "_prepare_cache_for_generation"):
        model._prepare_cache_for_generation = generation_cache(
            model, model._prepare_cache_for_generation
        )
    model.generate = continuing_generate(model.generate)
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
    positions: str | None = None,
) -> None:
    """Run with other lossless sizes from now on (None keeps the current one): `window`,
    `sinks`, `salient` store entries per KV head, and `positions` (SPEC §2c). Caches already
    holding tokens keep theirs, and are refused at other sizes."""
    rt = runtime_of(model)
    checked = AHNConfig(
        memory=rt.config.memory,
        window=rt.window if window is None else window,
        sinks=rt.sinks if sinks is None else sinks,
        salient=rt.salient if salient is None else salient,
        positions=rt.positions if positions is None else positions,
    )
    _check_positions(rt, checked.positions)
    rt.lossless = _lossless(rt.config, rt.decoder, rt.windowed, checked)


def _lossless(config: AHNConfig, decoder: nn.Module, windowed: set[int], sizes: AHNConfig):
    """The `Lossless` of `sizes` (window, sinks, salient, positions) for an AHN of `config`
    (its head profile and share) on `decoder`."""
    budgets = None
    if config.salient_heads is not None and sizes.salient:
        kv_heads = decoder.config.num_key_value_heads
        budgets = store_budgets(
            config.salient_heads, sizes.salient, windowed, kv_heads, len(decoder.layers)
        )
    return Lossless(sizes.window, sizes.sinks, sizes.salient, sizes.positions, budgets,
                    config.salient_share)  # fmt: skip


def set_store(model: nn.Module, heads=KEEP, share: str | None = None) -> None:
    """Give the salient store another head profile (`heads`: one weight per decoder layer and KV
    head, None for `salient` in every head) or choice sharing (`share`, one of `SHARES`) from now
    on; both are part of the AHN's config (`ahn.save` writes them). Caches already holding
    tokens keep theirs, and are refused with the new ones."""
    import dataclasses

    rt = runtime_of(model)
    config = dataclasses.replace(
        rt.config,
        salient_heads=rt.config.salient_heads if heads is KEEP else heads,
        salient_share=rt.config.salient_share if share is None else share,
    )
    lossless = _lossless(config, rt.decoder, rt.windowed, rt.lossless)
    rt.config, rt.lossless = config, lossless


def _check_positions(rt: Runtime, positions: str) -> None:
    if positions == "bounded" and rt.far is None:
        raise ValueError(
            "positions='bounded' turns cached keys back with the base's rotary embedding, but "
            "this model has no `model.rotary_emb` with a `rotate_half` beside its attention; "
            "use positions='original'"
        )


@contextlib.contextmanager
def window(
    model: nn.Module,
    window: int | None = None,
    sinks: int | None = None,
    salient: int | None = None,
    positions: str | None = None,
):
    """Context manager: temporarily use other lossless sizes (training draws them per step)."""
    rt = runtime_of(model)
    previous = rt.lossless
    set_window(model, window, sinks, salient, positions)
    try:
        yield model
    finally:
        rt.lossless = previous


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the AHN modules only."""
    runtime_of(model)
    return [(n, p) for n, p in model.named_parameters() if ".ahn.fn." in f".{n}"]


def new_cache(model: nn.Module) -> AHNCache:
    """An empty cache for `model` at its current window and sinks (for `model(...)` or
    `model.generate(..., past_key_values=...)` calls that continue one another)."""
    return runtime_of(model).new_cache()
