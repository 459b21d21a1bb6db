"""kvpress's bounded presses on the prompts of `kvpress_prompts.py`, at a given number of kept
context tokens per KV head: what a user would pick instead of an AHN at the same cache.

Runs in kvpress's own environment (kvpress 0.5.5 needs transformers < 5.3; `make kvpress`
builds `.venv-kvpress` and runs both scripts). It imports neither ahn nor anything of this repo.
Per prompt: the context (tokens before the question) is read under the press, as kvpress's
pipeline does; the question and the answer are then read and generated greedily over the
compressed cache. Without a press ("none") it is full attention.

    .venv-kvpress/bin/python benchmarks/kvpress_run.py --prompts prompts.jsonl \
        --base ~/.cache/ahn/bases/smollm2-135m-instruct --keep 576 --output out.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PRESSES = ("none", "streaming", "snapkv", "keydiff", "tova", "knorm", "expected")


def make_press(name: str, ratio: float, sinks: int):
    import kvpress

    return {
        "none": lambda: None,
        "streaming": lambda: kvpress.StreamingLLMPress(compression_ratio=ratio, n_sink=sinks),
        "snapkv": lambda: kvpress.SnapKVPress(compression_ratio=ratio),
        "keydiff": lambda: kvpress.KeyDiffPress(compression_ratio=ratio),
        "tova": lambda: kvpress.TOVAPress(compression_ratio=ratio),
        "knorm": lambda: kvpress.KnormPress(compression_ratio=ratio),
        "expected": lambda: kvpress.ExpectedAttentionPress(compression_ratio=ratio),
    }[name]()


@torch.no_grad()
def answer(model, ids: list[int], question_start: int, press, max_new_tokens: int, eos: int):
    """Greedy answer ids: the context under `press`, then question and answer over its cache."""
    from transformers import DynamicCache

    cache = DynamicCache()
    context = torch.tensor([ids[:question_start]])
    if press is None:
        model(context, past_key_values=cache, use_cache=True)
    else:
        with press(model):
            model(context, past_key_values=cache, use_cache=True)
    kept = cache.get_seq_length()
    out = model(torch.tensor([ids[question_start:]]), past_key_values=cache, use_cache=True)
    tokens = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        if token == eos:
            break
        tokens.append(token)
        out = model(torch.tensor([[token]]), past_key_values=cache, use_cache=True)
    return tokens, kept


def string_match_all(output: str, answers: list[str]) -> float:
    """RULER's metric: the fraction of the answers found in the output (case-insensitive)."""
    return sum(a.lower() in output.lower() for a in answers) / len(answers)


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--base", required=True, help="the base's transformers directory")
    parser.add_argument("--presses", default=",".join(PRESSES))
    parser.add_argument("--keep", default="576", help="context tokens kept per KV head (csv)")
    parser.add_argument("--sinks", type=int, default=32, help="StreamingLLM's sinks")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=getattr(torch, args.dtype))
    model.eval()
    prompts = [json.loads(line) for line in open(args.prompts)]
    results = []
    with open(args.output, "w") as f:
        for name in args.presses.split(","):
            for keep in [None] if name == "none" else [int(k) for k in args.keep.split(",")]:
                for p in prompts:
                    context = p["question_start"]
                    ratio = 0.0 if keep is None else max(0.0, 1 - keep / context)
                    start = time.perf_counter()
                    ids, kept = answer(model, p["input_ids"], context,
                                       make_press(name, ratio, args.sinks),
                                       min(args.max_new_tokens, p["max_new_tokens"]),
                                       tokenizer.eos_token_id)  # fmt: skip
                    text = tokenizer.decode(ids, skip_special_tokens=True)
                    record = {
                        "press": name, "keep": keep, "task": p["task"], "length": p["length"],
                        "depth": p["depth"], "index": p["index"], "kept_context": kept,
                        "score": string_match_all(text, p["answers"]), "output": text,
                        "seconds": round(time.perf_counter() - start, 2),
                    }  # fmt: skip
                    results.append(record)
                    f.write(json.dumps(record) + "\n")
                    f.flush()
    table: dict = {}
    for r in results:
        key = (r["press"], r["keep"], r["task"], r["length"])
        table.setdefault(key, []).append(r["score"])
    for (name, keep, task, length), scores in sorted(table.items(), key=str):
        print(f"{name:10s} keep={keep!s:5s} {task} {length}: {sum(scores):g} / {len(scores)}")


if __name__ == "__main__":
    main()
