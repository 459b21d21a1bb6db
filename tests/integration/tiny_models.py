"""Tiny models built from configs: every supported architecture, GQA and odd head counts."""

import warnings

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

import ahn

warnings.filterwarnings("ignore", category=FutureWarning)

COMMON = dict(
    vocab_size=97, intermediate_size=64, num_hidden_layers=2, max_position_embeddings=1024
)

ARCHS = {
    # name: (config class, model class, extra config)
    "qwen2-gqa": (
        Qwen2Config,
        Qwen2ForCausalLM,
        dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2),
    ),
    "qwen3-odd-heads": (
        Qwen3Config,
        Qwen3ForCausalLM,
        dict(hidden_size=36, num_attention_heads=3, num_key_value_heads=1, head_dim=12),
    ),
    "llama-mha": (
        LlamaConfig,
        LlamaForCausalLM,
        dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=2),
    ),
    "mistral-gqa": (
        MistralConfig,
        MistralForCausalLM,
        dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=3, sliding_window=None),
    ),
}


def make_model(arch: str = "qwen2-gqa", seed: int = 42):
    config_cls, model_cls, extra = ARCHS[arch]
    torch.manual_seed(seed)
    config = config_cls(**COMMON, **extra)
    return model_cls(config).eval()


def randomize_ahn(model, seed: int = 42, std: float = 0.3):
    """Non-zero AHN weights, so the memory path actually contributes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in ahn.trainable_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen) * std + (1.0 if p.dim() == 1 else 0.0))
    return model


def make_ahn_model(arch="qwen2-gqa", memory="gated_deltanet", window=8, sinks=2, **kw):
    model = make_model(arch)
    ahn.augment(model, ahn.AHNConfig(memory=memory, window=window, sinks=sinks, **kw))
    return randomize_ahn(model)


def decode_logits(model, ids, split: int, chunk: int | None = None):
    """Prefill ids[:, :split] (in chunks of `chunk`), then feed the rest one token at a time."""
    cache, logits = None, []
    pieces = [
        (a, min(split, a + (chunk or split))) for a in range(0, split, chunk or max(split, 1))
    ]
    pieces += [(t, t + 1) for t in range(split, ids.shape[1])]
    for a, b in pieces:
        out = model(ids[:, a:b], cache=cache, use_cache=True)
        cache = out.cache
        logits.append(out.logits)
    return torch.cat(logits, dim=1), cache


def char_tokenizer():
    """A character-level tokenizer built offline (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = "abcdefghijklmnopqrstuvwxyz0123456789 .,:?!\n"
    vocab = {"<unk>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    from tokenizers import decoders

    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
