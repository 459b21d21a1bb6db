"""Held-out evaluation of the demo: `full`, `sliding` and `ahn` on the same task sequences."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import ahn
from ahn.demo.tasks import Batch
from ahn.eval.flops import efficiency
from ahn.eval.nll import bucket_sums

METHODS = ("full", "sliding", "ahn")


@torch.no_grad()
def log_probs(model, input_ids: torch.Tensor, micro_batch: int) -> torch.Tensor:
    """Next-token log-probabilities of `model` in its current mode.

    Args:
        input_ids: `[N, T]` token ids, run `micro_batch` rows at a time.
    Returns:
        `[N, T - 1, V]` float32 log-probabilities (the demo's vocabulary is small).
    """
    out = []
    for rows in input_ids.split(micro_batch):
        hidden = model.model(input_ids=rows).last_hidden_state[:, :-1]  # [b, T - 1, hidden]
        out.append(F.log_softmax(model.lm_head(hidden).float(), dim=-1))
    return torch.cat(out)


def beyond_window(batch: Batch, window: int, sinks: int) -> torch.Tensor:
    """`[N, T - 1]` answer positions whose fact is outside the lossless set (sinks + window)."""
    t = torch.arange(batch.input_ids.shape[1])
    fact = t - batch.fact_distance  # [N, T] position of the fact's value token
    outside = (fact >= sinks) & (batch.fact_distance >= window)
    return (batch.answer_mask & outside)[:, :-1]


def accuracy_by_distance(correct, answers, distance, bucket: int) -> dict[str, float]:
    """Accuracy by distance from the answer back to its fact, in buckets of `bucket` tokens.

    Args:
        correct, answers: `[N, T - 1]` bool. distance: `[N, T - 1]` int.
    Returns:
        `{"lo-hi": accuracy}` for every bucket holding at least one answer.
    """
    index = distance // bucket
    spans = sorted(set(index[answers].tolist()))
    hits = [correct[answers & (index == i)].float().mean().item() for i in spans]
    return {f"{i * bucket}-{(i + 1) * bucket - 1}": hit for i, hit in zip(spans, hits, strict=True)}


def score(logp: torch.Tensor, reference: torch.Tensor, batch: Batch, window, sinks, bucket):
    """Figures of one method from its log-probabilities and the full model's."""
    targets = batch.input_ids[:, 1:]
    nll = -logp.gather(-1, targets[..., None])[..., 0]  # [N, T - 1]
    answers = beyond_window(batch, window, sinks)
    correct = logp.argmax(-1) == targets
    kl = (reference.exp() * (reference - logp)).sum(-1)[:, sinks + window :]
    sums, counts = bucket_sums(nll.sum(0), bucket)
    return {
        "beyond_window_accuracy": correct[answers].float().mean().item(),
        "accuracy_by_distance": accuracy_by_distance(
            correct, answers, batch.fact_distance[:, :-1], 2 * bucket
        ),
        "answer_nll": nll[answers].mean().item(),
        "filler_nll": nll[~batch.answer_mask[:, :-1]].mean().item(),
        "kl_to_full": kl.mean().item(),
        "nll_by_position": [s / (c * nll.shape[0]) for s, c in zip(sums, counts, strict=True)],
    }


def measured_cache_bytes(model, input_ids: torch.Tensor, method: str) -> int:
    """Bytes of the cache left after one forward over `input_ids` `[1, T]` in `method`."""
    with torch.no_grad(), ahn.mode(model, method):
        out = model(input_ids, use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    return ahn.cache_bytes(cache)


def evaluate(model, batch: Batch, window: int, sinks: int, bucket: int, micro_batch: int = 32):
    """All three methods on `batch`.

    Returns:
        `{method: {beyond_window_accuracy, accuracy_by_distance, answer_nll, filler_nll,
        kl_to_full, nll_by_position, tokens_per_s, cache_bytes, model_flops}}`.
    """
    length = batch.input_ids.shape[1]
    costs = efficiency(model.config, length=length, window=window, sinks=sinks)
    logps, seconds = {}, {}
    for method in METHODS:
        with ahn.mode(model, method):
            start = time.perf_counter()
            logps[method] = log_probs(model, batch.input_ids, micro_batch)
            seconds[method] = time.perf_counter() - start
    results = {}
    for method in METHODS:
        row = score(logps[method], logps["full"], batch, window, sinks, bucket)
        row["tokens_per_s"] = batch.input_ids.numel() / seconds[method]
        row["cache_bytes"] = measured_cache_bytes(model, batch.input_ids[:1], method)
        row["model_flops"] = costs[method]["model_flops"]
        results[method] = row
    return results


def memory_bill(model, lengths: list[int], window: int, sinks: int, seed: int) -> dict:
    """Measured cache bytes and counted FLOPs of each method on random inputs of `lengths`."""
    generator = torch.Generator().manual_seed(seed)
    bill = {method: {"cache_bytes": [], "model_flops": []} for method in METHODS}
    for length in lengths:
        ids = torch.randint(model.config.vocab_size, (1, length), generator=generator)
        costs = efficiency(model.config, length=length, window=window, sinks=sinks)
        for method in METHODS:
            bill[method]["cache_bytes"].append(measured_cache_bytes(model, ids, method))
            bill[method]["model_flops"].append(costs[method]["model_flops"])
    return {"lengths": lengths, **bill}


@torch.no_grad()
def examples(model, tokenizer, batch: Batch, n: int) -> list[dict]:
    """Greedy answers of each method, through `model.generate`, to the last query of the first
    `n` sequences of `batch`.

    Returns:
        `[{"query", "expected", "distance", "answers": {method: word}}]`.
    """
    rows = []
    for i in range(min(n, batch.input_ids.shape[0])):
        t = int(batch.answer_mask[i].nonzero().max())  # the last query's key
        prompt = batch.input_ids[i : i + 1, : t + 1]
        answers = {}
        for method in METHODS:
            with ahn.mode(model, method):
                out = model.generate(prompt, max_new_tokens=1, do_sample=False)
            answers[method] = tokenizer.decode(out[0, -1:]).strip()
        rows.append(
            {
                "query": tokenizer.decode(prompt[0, -2:]).strip(),
                "expected": tokenizer.decode(batch.input_ids[i, t + 1 : t + 2]).strip(),
                "distance": int(batch.fact_distance[i, t]),
                "answers": answers,
            }
        )
    return rows
