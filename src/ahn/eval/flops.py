"""FLOPs and memory-cache bytes of full attention vs sinks + sliding window (+ AHN memory).

Conventions (those of the AHN paper's Table 1, derived so that Qwen2.5-3B at L = 128,000 with
128 sinks + 32,640 window gives 3.29e15 vs 1.95e15 FLOPs and 9.44 GB vs 2.45 GB):

- Only matmul FLOPs, 2 per multiply-add, for one forward pass over `L` tokens.
- Linear layers: `2 x parameters x L`, where the parameters count the input embedding and the
  LM head separately even when tied (the embedding lookup counted as a one-hot matmul, as
  Chinchilla does); AHN parameters are added for the augmented model.
- Softmax attention: `4 x H x D` per (query, key) pair (QK^T and AV), causal pairs only:
  `L (L + 1) / 2` for full attention, `sum_t min(t + 1, S + W)` for sinks + window.
- AHN memory read: `2 x H x D x D` per query whose memory is not empty (`t >= S + W`); like
  attention's key/value writes, the state update is not counted.
- Cache: keys and values of every layer with the model's KV (GQA) heads, plus one `D x D`
  state per query head per augmented layer, `bytes_per_element` (4) bytes each; GB = 1e9 bytes.
- The salient store (ours, `salient` = G): each query also attends the `min(G, evicted)` stored
  tokens (counted as attention pairs), and the cache holds their keys and values (their slots
  and scores, 13 bytes per entry, are left out like the window's positions).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ahn.registry import MEMORY_TYPES, rule


@dataclass(frozen=True)
class ModelShape:
    """What the accounting needs from a causal LM config.

    Args:
        n_layers, hidden, n_heads, n_kv_heads, head_dim, vocab: the usual config fields.
        matmul_parameters: parameters used as matmul weights per token: every parameter of the
            model, with the input embedding and the LM head counted separately even if tied.
    """

    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    matmul_parameters: int

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """Reads a `transformers.PretrainedConfig` (parameters counted on the meta device)."""
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        unique = sum(p.numel() for p in model.parameters())
        embedding = model.get_input_embeddings().weight
        head = model.get_output_embeddings()
        tied = head is not None and head.weight is embedding
        n_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        return cls(
            n_layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            n_heads=n_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
            head_dim=head_dim,
            vocab=config.vocab_size,
            matmul_parameters=unique + (embedding.numel() if tied else 0),
        )


@functools.lru_cache(maxsize=16)
def _shape(config_json: str) -> ModelShape:
    """`ModelShape` of a config given as json (cached: counting builds a meta-device model)."""
    from transformers import AutoConfig

    data = json.loads(config_json)
    return ModelShape.from_config(AutoConfig.for_model(data.pop("model_type"), **data))


def load_config(path: str | Path):
    """A `transformers` config from a model directory or a `config.json` file, offline."""
    from transformers import AutoConfig

    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no config.json at {path}")
    data = json.loads(file.read_text())
    model_type = data.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError) as err:
        raise ValueError(
            f"{file}: model_type={model_type!r} is not a known transformers model"
        ) from err


def causal_pairs(length: int, lossless: int | None = None) -> int:
    """(query, key) pairs of causal attention over `length` tokens, each query seeing at most
    `lossless` keys (`None`: all previous tokens)."""
    if lossless is None or length <= lossless:
        return length * (length + 1) // 2
    return lossless * (lossless + 1) // 2 + (length - lossless) * lossless


def store_pairs(length: int, lossless: int, salient: int) -> int:
    """(query, stored key) pairs: query t >= lossless reads min(G, t + 1 - lossless) tokens."""
    m, G = max(0, length - lossless), salient
    return m * (m + 1) // 2 if m <= G else G * (G + 1) // 2 + (m - G) * G


def _method(shape, length, lossless, layers, extra_params, reads, bytes_per_element, salient=0):
    """FLOPs and cache of one method; `layers` of the model use `lossless` keys (plus the
    salient store's), others all."""
    H, D, n = shape.n_heads, shape.head_dim, shape.n_layers
    linear = 2 * (shape.matmul_parameters + extra_params) * length
    windowed_pairs = causal_pairs(length, lossless) + store_pairs(length, lossless, salient)
    attention = 4 * H * D * (layers * windowed_pairs + (n - layers) * causal_pairs(length))
    memory = 2 * H * D * D * layers * reads
    kv_per_token = 2 * shape.n_kv_heads * D * bytes_per_element
    stored = min(salient, max(0, length - lossless))
    kv = kv_per_token * (layers * (min(length, lossless) + stored) + (n - layers) * length)
    state = H * D * D * bytes_per_element * layers if extra_params else 0
    return {
        "model_flops": linear + attention + memory,
        "cache_bytes": kv + state,
        "breakdown": {
            "linear_flops": linear,
            "attention_flops": attention,
            "memory_flops": memory,
            "kv_cache_bytes": kv,
            "state_bytes": state,
        },
    }


def efficiency(
    config,
    length: int,
    window: int,
    sinks: int,
    memory: str = "gated_deltanet",
    layers: list[int] | None = None,
    bytes_per_element: int = 4,
    salient: int = 0,
) -> dict:
    """FLOPs and cache bytes of `full`, `sliding` (sinks + window) and `ahn` for one sequence.

    Args:
        config: a `transformers.PretrainedConfig`, a `ModelShape`, or a path (model directory
            or config.json).
        length: tokens processed (one forward pass over the whole sequence).
        window, sinks: the lossless sizes; `memory`: one of `MEMORY_TYPES`.
        layers: augmented layer indices (`None`: all); the others keep full attention.
        bytes_per_element: bytes of one cached number (the paper uses 4).
        salient: salient store entries per layer and KV head of the `ahn` method (0: off).

    Returns:
        {"full": {...}, "sliding": {...}, "ahn": {...}, "reduction": {...}, "inputs": {...}},
        each method with "model_flops", "cache_bytes" and a "breakdown"; "reduction" gives
        1 - ahn / full for both.
    """
    parameters = rule(memory).parameters
    checked = (("length", length, 1), ("window", window, 1), ("sinks", sinks, 0),
               ("salient", salient, 0))  # fmt: skip
    for name, value, minimum in checked:
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    if isinstance(config, (str, Path)):
        config = load_config(config)
    shape = config if isinstance(config, ModelShape) else _shape(config.to_json_string())
    n_aug = shape.n_layers if layers is None else len(layers)
    lossless = sinks + window
    ahn_params = n_aug * parameters(shape.hidden, shape.n_heads, shape.head_dim)
    reads = max(0, length - lossless)
    args = (bytes_per_element,)
    full = _method(shape, length, lossless, 0, 0, 0, *args)
    sliding = _method(shape, length, lossless, n_aug, 0, 0, *args)
    ahn = _method(shape, length, lossless, n_aug, ahn_params, reads, *args, salient)
    ahn["breakdown"]["ahn_parameters"] = ahn_params
    return {
        "full": full,
        "sliding": sliding,
        "ahn": ahn,
        "reduction": {key: 1 - ahn[key] / full[key] for key in ("model_flops", "cache_bytes")},
        "inputs": {
            "length": length,
            "window": window,
            "sinks": sinks,
            "salient": salient,
            "memory": memory,
            "layers": layers,
            "bytes_per_element": bytes_per_element,
            "matmul_parameters": shape.matmul_parameters,
        },
    }


def format_table(report: dict) -> str:
    """Markdown table of the three methods (FLOPs in scientific notation, cache in GB)."""
    lines = ["| method | model FLOPs | memory cache |", "|---|---:|---:|"]
    for method in ("full", "sliding", "ahn"):
        row = report[method]
        lines.append(f"| {method} | {row['model_flops']:.3g} | {row['cache_bytes'] / 1e9:.3g} GB |")
    reduction, salient = report["reduction"], report["inputs"].get("salient", 0)
    label = f"AHN + store of {salient}" if salient else "AHN"
    lines.append(
        f"\n{label} vs full: FLOPs -{100 * reduction['model_flops']:.1f}%, "
        f"cache -{100 * reduction['cache_bytes']:.1f}%"
    )
    return "\n".join(lines)


def parse_length(text: str) -> int:
    """ "128000", "128k" (= 128 x 1024, RULER's convention) or "1m" (= 1024 x 1024)."""
    scale = {"k": 1024, "m": 1024 * 1024}.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(f"length {text!r} is not a positive integer, optionally with k or m")
    return int(digits) * scale


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base",
        required=True,
        help="base model: directory, Hub id in the local cache, a name of `ahn fetch-base`, or "
        "a config.json file",
    )
    parser.add_argument("--length", required=True, type=parse_length, help="tokens, e.g. 128000")
    parser.add_argument("--window", required=True, type=int)
    parser.add_argument("--sinks", required=True, type=int)
    parser.add_argument("--memory", default="gated_deltanet", choices=MEMORY_TYPES)
    parser.add_argument(
        "--salient", type=int, default=0, help="salient store entries per layer and KV head"
    )
    parser.add_argument("--bytes-per-element", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the full report as json")


def run(args: argparse.Namespace) -> int:
    from ahn.bases import resolve_base

    config = args.base if Path(args.base).is_file() else resolve_base(args.base)
    if args.sinks + args.window >= args.length:
        print(
            f"ahn flops: sinks + window = {args.sinks + args.window} covers the whole length "
            f"{args.length}: nothing is evicted, AHN computes what full attention does",
            file=sys.stderr,
        )
    report = efficiency(
        load_config(config),
        length=args.length,
        window=args.window,
        sinks=args.sinks,
        memory=args.memory,
        bytes_per_element=args.bytes_per_element,
        salient=args.salient,
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
