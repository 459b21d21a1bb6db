"""`save` / `load`: AHN weights only (safetensors) + the AHNConfig json, like a PEFT adapter but
with our own file names; `load` also reads official ByteDance AHN checkpoint directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ahn import atomic
from ahn.config import CONFIG_NAME, AHNConfig
from ahn.integration.augment import augment, is_augmented, runtime_of, trainable_parameters
from ahn.registry import OFFICIAL_NAMES, rule

WEIGHTS_NAME = "ahn_model.safetensors"
FORMAT_VERSION = 1

# Official options that change inference and that we do not implement: (key, supported value).
OFFICIAL_UNSUPPORTED = (("use_q_proj", False), ("use_ahn_router", False))


def save(
    model: nn.Module,
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    training: dict | None = None,
) -> Path:
    """Write the AHN of an augmented model to directory `path`, atomically (a temporary
    directory renamed into place): `ahn_model.safetensors`, `ahn_config.json` (the AHNConfig and
    the base model's name or path) and a model card `README.md` (Hub front matter).

    Args:
        dtype: store the weights in this dtype (e.g. `torch.bfloat16` to ship); default: as held.
        training: a summary of how the AHN was trained, kept in the config and the card.
    Returns the path.
    """
    rt = runtime_of(model)
    path = Path(path)
    tensors = {
        n: p.detach().to("cpu", dtype or p.dtype).contiguous()
        for n, p in trainable_parameters(model)
    }
    base = str(getattr(model.config, "name_or_path", "") or "")
    config = {"format": "ahn", "version": FORMAT_VERSION, "config": rt.config.to_dict(),
              "base_model": base, "training": training}  # fmt: skip
    with atomic.directory(path) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(model_card(rt.config, base, tensors, training))
    return path


def weights_sha256(model: nn.Module) -> str:
    """sha256 of an augmented model's AHN weights (names and float32 values): which AHN a
    result (an eval run, a memory file) was made with."""
    import hashlib

    digest = hashlib.sha256()
    for name, param in trainable_parameters(model):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def export_official(model: nn.Module, path: str | os.PathLike, drop_salient: bool = False) -> Path:
    """Write the AHN of an augmented model in the official ByteDance layout, atomically: the
    AHN-only `model.safetensors` and the base's `config.json` carrying `_ahn_implementation`,
    `sliding_window`, `num_attn_sinks` and `fa_layer_ids` (the layers kept at full attention).
    `load` reads it back; the official code reads it for the Qwen2 / Qwen3 bases it supports.

    The official layout has no salient store: an AHN configured with one is refused unless
    `drop_salient`, since the official code would run it without the store it was trained with.
    """
    rt = runtime_of(model)
    if rt.config.salient and not drop_salient:
        raise ValueError(
            f"this AHN runs with a salient store (salient={rt.config.salient}), which the official "
            "layout cannot carry: exported, it runs as sinks + window + memory only, a setup it "
            "was not trained for; pass drop_salient=True (ahn export --drop-salient) to export "
            "it anyway"
        )
    tensors = {n: p.detach().cpu().contiguous() for n, p in trainable_parameters(model)}
    config = model.config.to_dict()
    for key in ("_attn_implementation", "_attn_implementation_internal"):
        config.pop(key, None)
    full = [i for i in range(len(rt.decoder.layers)) if i not in rt.windowed]
    config.update({"_ahn_implementation": rule(rt.config.memory).official,
                   "sliding_window": rt.config.window, "num_attn_sinks": rt.config.sinks,
                   "fa_layer_ids": ",".join(map(str, full)), "use_q_proj": False})  # fmt: skip
    path = Path(path)
    with atomic.directory(path) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


POSITIONS_CARD = {
    "original": "Positions: every key at its original RoPE position (the paper's setting); past "
    "the base's context the sinks sit at distances it never saw.",
    "bounded": "Positions: bounded (SPEC §2c): the sinks and the store are seen within sinks + "
    "store + window of the query, the window at its true distances, so it reads past the "
    "base's context.",
}


def model_card(config: AHNConfig, base: str, tensors: dict, training: dict | None) -> str:
    """A Hub model card: YAML front matter (`library_name: ahn`, `base_model`, ...) and a
    short description of the memory and how to load it."""
    params = sum(t.numel() for t in tensors.values())
    front = ["---", "library_name: ahn", "tags:", "- ahn", "- long-context",
             f"- {config.memory}"]  # fmt: skip
    if base and not Path(base).is_absolute():
        front.append(f"base_model: {base}")
    front += [f"ahn_memory: {config.memory}", f"ahn_window: {config.window}",
              f"ahn_sinks: {config.sinks}", f"ahn_salient: {config.salient}",
              f"ahn_salient_share: {config.salient_share}",
              f"ahn_positions: {config.positions}", f"ahn_parameters: {params}",
              "---", ""]  # fmt: skip
    lines = [
        f"# AHN ({config.memory}) for {Path(base).name if base else 'a causal LM'}",
        "",
        f"An Artificial Hippocampus Network: sinks ({config.sinks}) + a sliding window "
        f"({config.window}) kept losslessly, the tokens leaving the window compressed into a "
        f"fixed-size {config.memory} state. {params:,} parameters; the base stays frozen.",
        "",
        *(
            [
                f"A salient store keeps {config.salient} evicted tokens per layer and KV head "
                f"exactly (chosen by {config.salient_score})"
                + (
                    " on average: its head profile (`salient_heads` in ahn_config.json) gives "
                    "the heads that retrieve most of them"
                    if config.salient_heads
                    else ""
                )
                + ".",
                "",
            ]
            if config.salient
            else []
        ),  # fmt: skip
        POSITIONS_CARD[config.positions],
        "",
        "```python",
        "import ahn",
        "from transformers import AutoModelForCausalLM",
        f'model = ahn.load(AutoModelForCausalLM.from_pretrained("{base or "BASE"}"), "THIS_DIR")',
        "```",
        "",
    ]
    if training:
        lines += ["## Training", "", *(f"- {k}: {v}" for k, v in training.items()), ""]
    return "\n".join(front + lines)


def load(base_model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Augment `base_model` with the AHN stored at `path` (a directory or a Hub repo id) and
    load its weights.

    `path` is a directory written by `save`, an official ByteDance AHN checkpoint (AHN-only
    `model.safetensors` + a `config.json` carrying `_ahn_implementation`), or a merged base+AHN
    checkpoint directory in the official layout (only its AHN tensors are read).
    """
    path = ahn_directory(path)
    if (path / CONFIG_NAME).exists():
        config, tensors = _read_ours(path)
    else:
        config, tensors = _read_official(path)
    if not is_augmented(base_model):
        augment(base_model, config)
    _load_tensors(base_model, tensors, path)
    return base_model


def ahn_directory(path: str | os.PathLike) -> Path:
    """The local directory of an AHN (a directory, or a Hub repo id in the Hub cache), checked
    to hold one: commands call it before loading the base, so a wrong --ahn fails at once."""
    from ahn.bases import resolve

    path = Path(resolve(path, kind="AHN"))
    if not path.is_dir():
        raise FileNotFoundError(f"AHN checkpoint directory {path} does not exist")
    if (path / CONFIG_NAME).exists():
        return path
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path} holds neither {CONFIG_NAME} (ahn.save) nor config.json (official AHN)"
        )
    official_config(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    return path


def _read_ours(path: Path) -> tuple[AHNConfig, dict[str, torch.Tensor]]:
    data = json.loads((path / CONFIG_NAME).read_text())
    if data.get("format") != "ahn" or "config" not in data:
        raise ValueError(f"{path / CONFIG_NAME} is not an ahn config (missing format/config)")
    return AHNConfig.from_dict(data["config"]), _read_safetensors(path / WEIGHTS_NAME)


def official_config(hf_config: dict, source: str = "config.json") -> AHNConfig:
    """AHNConfig of an official ByteDance AHN `config.json`."""
    impl = hf_config.get("_ahn_implementation")
    if impl is None:
        raise ValueError(
            f"{source} has no _ahn_implementation: this is a base model's directory, not an "
            f"AHN (pass it as --base; an AHN directory holds {CONFIG_NAME}, or an official "
            "config.json naming _ahn_implementation)"
        )
    if impl not in OFFICIAL_NAMES:
        raise ValueError(
            f"{source}: _ahn_implementation={impl!r}; supported: {sorted(OFFICIAL_NAMES)}"
        )
    for key, supported in OFFICIAL_UNSUPPORTED:
        if hf_config.get(key, supported) != supported:
            raise ValueError(
                f"{source}: {key}={hf_config[key]!r} is not supported (only {supported})"
            )
    window = hf_config.get("sliding_window")
    if not isinstance(window, int) or window <= 0:
        raise ValueError(f"{source}: sliding_window={window!r} must be a positive integer")
    num_layers = hf_config.get("num_hidden_layers")
    full = _parse_layer_ids(hf_config.get("fa_layer_ids", ""), source)
    layers = None if not full else [i for i in range(num_layers) if i not in full]
    return AHNConfig(
        memory=OFFICIAL_NAMES[impl],
        window=window,
        sinks=int(hf_config.get("num_attn_sinks", 0) or 0),
        layers=layers,
        positions="original",  # the paper's: every key at its own position
    )


def _parse_layer_ids(value, source: str) -> set[int]:
    if isinstance(value, str):
        try:
            return {int(v) for v in value.split(",") if v.strip()}
        except ValueError:
            raise ValueError(
                f"{source}: fa_layer_ids={value!r} is not a comma-separated list"
            ) from None
    return {int(v) for v in (value or [])}


def _read_official(path: Path) -> tuple[AHNConfig, dict[str, torch.Tensor]]:
    config = official_config(
        json.loads((path / "config.json").read_text()), str(path / "config.json")
    )
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{path} has config.json but no model.safetensors")
    tensors = {}
    for name in files:
        shard = _read_safetensors(path / name)
        tensors.update({k: v for k, v in shard.items() if ".ahn." in k})
    return config, tensors


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.exists():
        raise FileNotFoundError(f"missing weights file {file}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read {file} (truncated or not safetensors): {err}") from None


def _load_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    params = dict(trainable_parameters(model))
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"AHN weights in {path} do not match the model: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )
    for name, param in params.items():
        if not tensors[name].is_floating_point():
            raise ValueError(
                f"{name}: dtype {tensors[name].dtype} in {path}; AHN weights are floats"
            )
        if tuple(tensors[name].shape) != tuple(param.shape):
            raise ValueError(
                f"{name}: shape {tuple(tensors[name].shape)} in the checkpoint, "
                f"{tuple(param.shape)} in the model"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name].to(param.dtype))
