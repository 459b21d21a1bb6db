"""What the parts of `real_shape.py` share: SmolLM2-135M's shape, a model of it (random weights,
or the cached real base), how a method runs, and the one measuring helper (`measure`)."""

from __future__ import annotations

import contextlib
import statistics
import time

SHAPE = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    vocab_size=49152,
)


METHODS = ("full", "sliding", "ahn", "ahn+store")


COMPILED = "@compiled"  # a method's suffix: run it after ahn.compile


def build_model(args):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    import ahn
    from ahn.config import load_profile

    dtype = getattr(torch, args.dtype)
    if args.real:
        from ahn.bases import fetch_base

        model = AutoModelForCausalLM.from_pretrained(
            fetch_base("smollm2-135m-instruct"), dtype=dtype
        )
    else:
        torch.manual_seed(0)
        shape = dict(SHAPE, num_hidden_layers=args.layers or SHAPE["num_hidden_layers"])
        config = LlamaConfig(**shape, tie_word_embeddings=True, max_position_embeddings=1 << 16)
        model = LlamaForCausalLM(config).to(dtype)
    model.eval()
    profile = None if args.salient_heads is None else load_profile(args.salient_heads)
    config = ahn.AHNConfig(window=args.window, sinks=args.sinks, salient_score=args.salient_score,
                           salient_heads=profile, salient_share=args.salient_share)  # fmt: skip
    ahn.augment(model, config)
    with torch.no_grad():
        for _, p in ahn.trainable_parameters(model):
            p.normal_(0.0, 0.02)
    return model


def gemm_gflops(dtype, rows=2048, repeats=5) -> float:
    """F.linear at the MLP up-projection shape: [rows, 576] x [576, 1536]."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(rows, SHAPE["hidden_size"], dtype=dtype)
    w = torch.randn(SHAPE["intermediate_size"], SHAPE["hidden_size"], dtype=dtype)
    F.linear(x, w)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        F.linear(x, w)
        times.append(time.perf_counter() - start)
    return 2 * x.shape[0] * w.numel() / min(times) / 1e9


def in_method(model, method: str, args) -> contextlib.ExitStack:
    """The contexts that run `model` as `method` (full / sliding / ahn / ahn+store), no grad."""
    import torch

    import ahn

    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(ahn.mode(model, method.removesuffix("+store")))
    salient = args.salient if method == "ahn+store" else 0
    stack.enter_context(ahn.window(model, salient=salient))
    return stack


def measure(model, method: str, length: int, args):
    """(prefill s, median decode ms/token, the cache after) of one method (no @compiled
    suffix) on `length` random tokens."""
    import torch

    import ahn

    ids = torch.randint(
        0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0)
    )
    with in_method(model, method, args):
        cache = ahn.new_cache(model) if method != "full" else None
        start = time.perf_counter()
        out = model(ids, cache=cache, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - start
        steps = []
        for _ in range(args.decode_tokens):
            token = out.logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            out = model(token, cache=out.cache, use_cache=True)
            steps.append(time.perf_counter() - start)
    return prefill, 1000 * statistics.median(steps), out.cache


def compile_and_warm_up(model, tokens=1024, steps=3) -> float:
    """`ahn.compile` and the first calls that compile (a prefill and decode steps): seconds."""
    import torch

    import ahn

    start = time.perf_counter()
    ahn.compile(model)
    ids = torch.zeros(1, tokens, dtype=torch.long)
    out = model(ids, cache=ahn.new_cache(model), use_cache=True, logits_to_keep=1)
    for _ in range(steps):
        out = model(ids[:, :1], cache=out.cache, use_cache=True)
    return time.perf_counter() - start
