"""The methods `ahn eval` compares: the modes of an augmented model (`ahn.MODES`), what a user
would run instead past the base's context (full attention), and the sliding window's reference:

- "truncated": only the last `max_position_embeddings` tokens. A prompt is cut to them (less the
  answer's tokens); a piece's NLL is read in windows of that many tokens, each token scored once
  with at least half of them before it (transformers' strided perplexity).
- "yarn": transformers' own YaRN RoPE scaling (`rope_parameters`), factor = length / context.
- "dynamic": transformers' dynamic NTK RoPE scaling (factor 1: the base grows with the input).
- "rebased" (NLL only): the sliding window with every target read inside the base's context:
  each block of `context // 2` targets (fewer if sinks + window + block would not fit in the
  context) is read as the sinks followed by the window before the block and the block, so
  every RoPE distance is one the base saw (SPEC §2c's reference: what the sliding window gives
  on the same tokens when positions do not get in the way).
"""

from __future__ import annotations

import contextlib
import copy

import torch

import ahn
from ahn.config import MODES
from ahn.eval.config import BASELINES
from ahn.integration.augment import runtime_of

__all__ = ["BASELINES", "running", "truncated_nll", "truncated_prompt"]


def base_context(model) -> int:
    """The base's own context (`max_position_embeddings`)."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(context, int) or context < 2:
        raise ValueError(
            f"max_position_embeddings={context!r}: the truncated / rope-scaled methods need the "
            "base's context length"
        )
    return context


@contextlib.contextmanager
def running(model, method: str, length: int):
    """`model` set up for `method` on inputs of `length` tokens, restored on exit."""
    mode = method if method in MODES else "sliding" if method == "rebased" else "full"
    with ahn.mode(model, mode):
        if method in ("yarn", "dynamic"):
            with rope_scaled(model, method, length):
                yield model
        else:
            yield model


@contextlib.contextmanager
def rope_scaled(model, rope_type: str, length: int):
    """The decoder's rotary embedding rebuilt by transformers from a copy of the config with
    `rope_parameters` of `rope_type` ("yarn": factor length / context; "dynamic": factor 1),
    the original one put back on exit."""
    decoder = runtime_of(model).decoder
    original = decoder.rotary_emb
    context = base_context(model)
    config = copy.deepcopy(model.config)
    factor = max(1.0, length / context) if rope_type == "yarn" else 1.0
    config.rope_parameters = {
        **(config.rope_parameters or {}),
        "rope_type": rope_type,
        "factor": factor,
        "original_max_position_embeddings": context,
    }
    device = next(model.parameters()).device
    decoder.rotary_emb = type(original)(config=config).to(device)
    try:
        yield model
    finally:
        decoder.rotary_emb = original


@torch.no_grad()
def rebased_nll(model, input_ids: torch.Tensor) -> torch.Tensor:
    """`nll.token_nll` in mode "sliding" with every target read inside the base's context:
    targets beyond the first sinks + window + block are read in blocks, each as [sinks, the
    `window` tokens before the block, the block], at most `context` tokens. [B, T - 1]."""
    from ahn.eval.nll import token_nll

    rt = runtime_of(model)
    S, W, T = rt.sinks, rt.window, input_ids.shape[1]
    context = base_context(model)
    block = min(context // 2, context - S - W)
    if block < 1:
        raise ValueError(f"sinks + window = {S + W} leave no room in the context ({context})")
    out = [token_nll(model, input_ids[:, : min(T, S + W + block)])]
    done = out[0].shape[1]  # targets 1 .. done are scored
    while done < T - 1:
        a, b = done + 1, min(T, done + 1 + block)  # the block's target tokens a .. b - 1
        ids = torch.cat([input_ids[:, :S], input_ids[:, a - W : b]], dim=1)
        out.append(token_nll(model, ids)[:, S + W - 1 :])  # entry S + W - 1 predicts token a
        done = b - 1
    return torch.cat(out, dim=1)


def truncated_prompt(input_ids: torch.Tensor, model, new_tokens: int) -> torch.Tensor:
    """The last `context - new_tokens` tokens of a prompt [B, T]."""
    keep = max(1, base_context(model) - new_tokens)
    return input_ids[:, -keep:]


@torch.no_grad()
def truncated_nll(model, input_ids: torch.Tensor) -> torch.Tensor:
    """`nll.token_nll` with full attention over at most the base's context: windows of
    `context` tokens advancing by half of it; each target scored once, in the first window that
    has at least half a window before it (the first window scores all of its own). [B, T - 1]."""
    from ahn.eval.nll import token_nll

    context, T = base_context(model), input_ids.shape[1]
    stride = context // 2
    out = [token_nll(model, input_ids[:, :context])]  # targets 1 .. min(T, context) - 1
    for end in range(context + stride, T + stride, stride):
        end = min(end, T)
        start = end - context
        done = sum(part.shape[1] for part in out)  # targets scored so far: 1 .. done
        values = token_nll(model, input_ids[:, start:end])  # targets start + 1 .. end - 1
        out.append(values[:, done - start :])
        if end == T:
            break
    return torch.cat(out, dim=1)
