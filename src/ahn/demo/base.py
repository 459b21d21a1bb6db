"""The shipped demo base model: a small Qwen2 decoder trained on `ahn.demo.tasks`."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
)

from ahn import atomic
from ahn.demo import BASE_DIR, TASK_FILE  # light constants, re-exported here
from ahn.demo.tasks import SPECIALS, TOKEN_ID, VOCAB, Batch, TaskConfig, make_batch


@dataclass
class PretrainConfig:
    """Base-model size and optimisation (defaults: the shipped model)."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    steps: int = 600
    batch_size: int = 16
    lr: float = 3e-3
    warmup: int = 100
    answer_weight: float = 4.0
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be a multiple of heads={self.heads}")


def model_config(cfg: PretrainConfig, task: TaskConfig) -> Qwen2Config:
    """The Qwen2 config of a demo base: no sliding window, no GQA, tied embeddings."""
    return Qwen2Config(
        vocab_size=len(tokenizer_vocab()[0]),
        hidden_size=cfg.hidden,
        intermediate_size=4 * cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=2 * task.length,
        tie_word_embeddings=True,
        bos_token_id=TOKEN_ID["<bos>"],
        eos_token_id=TOKEN_ID["<eos>"],
        pad_token_id=TOKEN_ID["<pad>"],
    )


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up then cosine decay to a tenth of `cfg.lr`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def sliding_mask(length: int, window: int, sinks: int) -> torch.Tensor:
    """`[1, 1, T, T]` boolean mask of sinks + sliding window (True = attend)."""
    t = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    keep = (j <= t) & ((j < sinks) | (j > t - window))
    return keep[None, None]


@torch.no_grad()
def answer_accuracy(model, batch: Batch, attention_mask: torch.Tensor | None = None) -> float:
    """Share of queried values predicted by argmax."""
    logits = model(batch.input_ids, attention_mask=attention_mask).logits  # [B, T, V]
    pred = logits.argmax(-1)[:, :-1]
    target = batch.input_ids[:, 1:]
    mask = batch.answer_mask[:, :-1]
    return (pred[mask] == target[mask]).float().mean().item()


def lm_loss(model, batch: Batch, answer_weight: float) -> torch.Tensor:
    """Next-token cross-entropy, answer positions counted `1 + answer_weight` times."""
    logits = model(batch.input_ids).logits[:, :-1]  # [B, T-1, V]
    nll = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), batch.input_ids[:, 1:].flatten(), reduction="none"
    )
    weight = 1 + answer_weight * batch.answer_mask[:, :-1].flatten().float()
    return (nll * weight).sum() / weight.sum()


def pretrain(cfg: PretrainConfig, task: TaskConfig, log=print) -> Qwen2ForCausalLM:
    """Train the base with full attention on fresh batches; deterministic for `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    model = Qwen2ForCausalLM(model_config(cfg, task))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    eval_batch = make_batch(256, replace(task, extra_queries=0), seed=cfg.seed + 10**6)
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = make_batch(cfg.batch_size, task, seed=cfg.seed * 10**5 + step)
        loss = lm_loss(model, batch, cfg.answer_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == cfg.steps - 1:
            model.eval()
            acc = answer_accuracy(model, eval_batch)
            model.train()
            log(f"step {step} loss {loss.item():.4f} answer accuracy {acc:.3f}")
    model.eval()
    return model


def tokenizer_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary and merges in which every word of `VOCAB` is one token.

    Words are pre-tokenized as in Qwen2 (`"Ġword"`, a leading space, added to the first word
    too); token `i < len(VOCAB)` is word `VOCAB[i]` (so `TOKEN_ID` holds), followed by the
    characters and word prefixes the merges need.
    """
    vocab = {w if w in SPECIALS else "Ġ" + w: i for i, w in enumerate(VOCAB)}
    merges = []
    for word in VOCAB:
        if word in SPECIALS:
            continue
        piece = "Ġ" + word
        for ch in piece:
            vocab.setdefault(ch, len(vocab))
        for end in range(2, len(piece) + 1):
            vocab.setdefault(piece[:end], len(vocab))
            if (piece[: end - 1], piece[end - 1]) not in merges:
                merges.append((piece[: end - 1], piece[end - 1]))
    return vocab, merges


def build_tokenizer() -> Qwen2Tokenizer:
    """The demo tokenizer: a `Qwen2Tokenizer` (what `AutoTokenizer` builds for a Qwen2 model
    directory) whose words are single tokens; text is whitespace-separated words."""
    vocab, merges = tokenizer_vocab()
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        add_prefix_space=True,
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
    )


def save_base(
    model: Qwen2ForCausalLM, path: str | os.PathLike, info: dict, dtype=torch.bfloat16
) -> Path:
    """Write model (safetensors, `dtype`), tokenizer and `info` (as `TASK_FILE`) to directory
    `path`, atomically (a temporary directory renamed into place)."""
    path = Path(path)
    with atomic.directory(path) as tmp:
        model.to(dtype).save_pretrained(tmp)
        model.float()
        build_tokenizer().save_pretrained(tmp)
        (tmp / TASK_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return path


def load_base(path: str | os.PathLike = BASE_DIR):
    """The demo base (float32, eval mode) and its tokenizer. Returns `(model, tokenizer)`."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no demo base model at {path} (run `ahn pretrain-demo-base`)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)
