"""Read once, ask many times: a document's memory (sinks + window + AHN states) as a file.

`read` prefills a document into an `AHNCache`; `save_memory` writes it as one safetensors file
whose json metadata says what made it (base model, AHN weights, dtype, sinks / window / salient
store, mode, tokenizer, tokens read) and carries a sha256 of every tensor; `load_memory`
refuses a file made for another setup (naming the field that differs) and a truncated or
tampered one. The file's size does not grow with the document: it holds at most sinks +
salient + window tokens per layer plus fixed-size states (layers kept at full attention,
`AHNConfig.layers`, do grow).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ahn import atomic
from ahn.checkpoint import weights_sha256
from ahn.integration.augment import new_cache, runtime_of
from ahn.integration.cache import AHNCache, AHNLayer
from ahn.integration.store import Store

FORMAT = "ahn-memory"
VERSION = 1
METADATA_KEY = "ahn_memory"
AHN_FIELDS = AHNLayer.NAMES
# What must agree between the file and the model it is loaded into, in the order checked.
# In the order they are checked: a file from another base is named as such first.
CHECKED = ("base", "ahn_config", "dtype", "ahn_weights", "mode", "window", "sinks", "salient",
           "positions")  # fmt: skip
# Base config fields that change what a cache means (name_or_path is informative only).
BASE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "head_dim", "rope_theta",
               "rope_parameters", "rope_scaling", "max_position_embeddings")  # fmt: skip


def read(model: nn.Module, inputs, tokenizer=None, *, progress: bool = False) -> AHNCache:
    """Prefill `inputs` (text, or input_ids [T] / [B, T]) into a new AHNCache, chunk by chunk.

    The model must be augmented and in mode "ahn" or "sliding" (full attention keeps every
    token: its cache grows with the document). The returned cache is `continuation_only`:
    `model.generate(question_ids, cache=cache.copy())` continues the document.
    """
    from tqdm import tqdm

    rt = runtime_of(model)
    if rt.mode == "full":
        raise ValueError(
            "ahn.read needs mode 'ahn' or 'sliding': in mode 'full' the cache keeps every token "
            "and grows with the document"
        )
    ids = _input_ids(inputs, tokenizer)  # [B, T]
    device = next(model.parameters()).device
    ids = ids.to(device)
    cache = new_cache(model)
    chunk = rt.config.prefill_chunk
    T = ids.shape[1]
    with (
        torch.no_grad(),
        tqdm(total=T, desc="read", unit="tok", file=sys.stderr, disable=not progress) as bar,
    ):
        for a in range(0, T, chunk):
            model(ids[:, a : a + chunk], cache=cache, use_cache=True, logits_to_keep=1)
            bar.update(min(chunk, T - a))
    cache.continuation_only = True
    return cache


def _input_ids(inputs, tokenizer) -> torch.Tensor:
    if isinstance(inputs, str):
        if tokenizer is None:
            raise ValueError("ahn.read was given text but no tokenizer (pass tokenizer=...)")
        inputs = tokenizer(inputs, return_tensors="pt").input_ids
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"inputs must be text or a tensor of token ids, not {type(inputs)}")
    ids = inputs[None] if inputs.dim() == 1 else inputs
    if ids.dim() != 2 or ids.shape[1] == 0 or ids.dtype not in (torch.long, torch.int):
        raise ValueError(
            f"input_ids of shape {tuple(inputs.shape)} and dtype {inputs.dtype}: "
            "expected integer ids [T] or [B, T] with T >= 1"
        )
    return ids.long()


def identity(model: nn.Module, tokenizer=None) -> dict:
    """What a memory file must agree with to be loaded into `model`."""
    rt = runtime_of(model)
    return {
        "mode": rt.mode,
        "dtype": str(rt.decoder.layers[0].self_attn.q_proj.weight.dtype).removeprefix("torch."),
        "window": rt.window,
        "sinks": rt.sinks,
        "salient": rt.salient if rt.mode in ("ahn", "store") else 0,
        "positions": rt.positions,
        "ahn_config": {k: v for k, v in rt.config.to_dict().items() if k != "prefill_chunk"},
        "ahn_weights": weights_sha256(model),
        "base": base_fingerprint(model),
        "tokenizer": None if tokenizer is None else tokenizer_fingerprint(tokenizer),
    }


def base_fingerprint(model: nn.Module) -> str:
    """sha256 of the base's architecture fields and of two of its weight matrices (rounded to
    bfloat16, so an fp32 and a bf16 load of the same checkpoint agree)."""
    cfg = model.config
    fields = {k: getattr(cfg, k, None) for k in BASE_FIELDS}
    layers = runtime_of(model).decoder.layers
    weights = {"q0": layers[0].self_attn.q_proj.weight,
               "o_last": layers[-1].self_attn.o_proj.weight}  # fmt: skip
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    digest.update(_sha256_tensors(weights, torch.bfloat16).encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted(map(str, tokenizer.all_special_tokens))
    return hashlib.sha256(json.dumps([vocab, special]).encode()).hexdigest()


def _sha256_tensors(tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", dtype or tensors[name].dtype).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_memory(
    cache: AHNCache, path: str | os.PathLike, model: nn.Module, tokenizer=None, prompt=None
) -> Path:
    """Write `cache` (read by `model`) to `path` atomically: safetensors + json metadata.

    `prompt`: how questions are to be wrapped for this memory (`ahn ask` keeps the chat
    template's tail there); stored as given.
    """
    if not isinstance(cache, AHNCache) or cache.get_seq_length() == 0:
        raise ValueError("save_memory needs an AHNCache holding tokens (from ahn.read)")
    tensors = {"pad": cache.pad.cpu()}
    for i, layer in enumerate(cache.layers):
        names = AHN_FIELDS if isinstance(layer, AHNLayer) else ("keys", "values")
        for name in names:
            value = getattr(layer, name, None)
            if value is not None:
                tensors[f"layers.{i}.{name}"] = value.detach().cpu().contiguous()
        if getattr(layer, "store", None) is not None:
            for name, value in zip(Store.NAMES, layer.store.tensors(), strict=True):
                tensors[f"layers.{i}.store.{name}"] = value.detach().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **identity(model, tokenizer),
        "base_name": str(getattr(model.config, "name_or_path", "") or ""),
        "tokens": cache.get_seq_length(),
        "prompt": prompt,
        "tensors_sha256": _sha256_tensors(tensors, None),
    }
    path = Path(path)
    with atomic.temp_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The json metadata of a memory file (no tensors read)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.is_file())
        listed = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise FileNotFoundError(
            f"memory {path} is a directory{f' (of {listed})' if found else ''}: pass one memory "
            "file of it (`ahn read` of a .jsonl writes one per document)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"memory file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable memory file (truncated?): {err}") from None
    meta = json.loads(raw) if raw else {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ahn memory file (no {METADATA_KEY!r} metadata)")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{path}: memory file version {meta.get('version')}; this ahn reads {VERSION}"
        )
    return meta


def load_memory(model: nn.Module, path: str | os.PathLike, tokenizer=None) -> AHNCache:
    """The AHNCache saved at `path`, checked against `model` (and `tokenizer` when given)."""
    path = Path(path)
    meta = read_metadata(path)
    check_compatible(meta, identity(model, tokenizer), path)
    tensors = _read_tensors(path)
    if _sha256_tensors(tensors, None) != meta["tensors_sha256"]:
        raise ValueError(f"{path}: tensor checksum mismatch (the file was modified or damaged)")
    device = next(model.parameters()).device
    cache = new_cache(model)
    cache.pad = tensors.pop("pad").to(device)
    for i, layer in enumerate(cache.layers):
        names = AHN_FIELDS if isinstance(layer, AHNLayer) else ("keys", "values")
        values = {n: tensors.get(f"layers.{i}.{n}") for n in names}
        if values["keys"] is None:
            raise ValueError(f"{path}: layer {i} has no keys")
        values = {n: None if v is None else v.to(device) for n, v in values.items()}
        _restore(layer, values, meta["tokens"])
        store = [tensors.get(f"layers.{i}.store.{n}") for n in Store.NAMES]
        if isinstance(layer, AHNLayer) and all(t is not None for t in store):
            layer.store = Store(*(t.to(device) for t in store))
    cache.continuation_only = True
    return cache


def _restore(layer, values: dict, tokens: int) -> None:
    layer.lazy_initialization(values["keys"], values["values"])
    for name, value in values.items():
        setattr(layer, name, value)
    if isinstance(layer, AHNLayer):
        layer.seen = tokens


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: cannot read its tensors (truncated?): {err}") from None


def _with_defaults(meta: dict) -> dict:
    """A file's metadata with the fields added since it was written: files from before SPEC
    §2c were all read with positions "original", before per-head budgets with none."""
    config = meta.get("ahn_config")
    if isinstance(config, dict):
        since = {"positions": "original", "salient_heads": None, "salient_share": "head"}
        config = {**since, **config}
    return {"positions": "original", **meta, "ahn_config": config}


def check_compatible(meta: dict, current: dict, path) -> None:
    """Refuse a memory made for another setup, naming the first field that differs."""
    meta = _with_defaults(meta)
    for field in CHECKED:
        if meta.get(field) != current[field]:
            made, now = _difference(meta.get(field), current[field])
            raise ValueError(
                f"{path} was made with another {field} ({made}) than the model has now "
                f"({now}); read the document again with this model, or load the base / AHN / "
                "settings it was made with"
            )
    given = current["tokenizer"]
    if given is not None and meta.get("tokenizer") not in (None, given):
        raise ValueError(f"{path} was made with another tokenizer than the one given")


def _difference(made, now) -> tuple[str, str]:
    """The two values as short text; of two dicts, only the keys whose values differ."""
    if isinstance(made, dict) and isinstance(now, dict):
        keys = sorted(k for k in made.keys() | now.keys() if made.get(k) != now.get(k))
        made, now = ({k: d.get(k) for k in keys} for d in (made, now))
    return _short(made), _short(now)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:12] + "..."
