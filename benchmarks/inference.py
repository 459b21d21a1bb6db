"""Inference speed and memory: full attention vs sinks + sliding window vs AHN.

A small Qwen2-shaped model (hidden 256, 4 layers), window 512 + 32 sinks. For each context
length, one process times every method, the methods taking turns (--repeats prefill rounds,
the best kept; then decode steps alternating between the methods, the median kept), so that
the ratios compare runs made under the same conditions on a shared machine; then a fresh
process per method prefills once and decodes a few tokens for its peak RSS and cache size.
Last, one process decodes with AHN after prefills of every length, taking turns, so that the
decode cost is compared across lengths under the same conditions too.

    python benchmarks/inference.py                      # 2k .. 64k
    python benchmarks/inference.py --lengths 2048,16384 --methods sliding,ahn
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from _common import peak_rss_bytes

METHODS = ("full", "sliding", "ahn")


def build_model(window: int, sinks: int, memory: str):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import ahn

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1 << 17,
    )
    model = Qwen2ForCausalLM(config).eval()
    ahn.augment(model, ahn.AHNConfig(memory=memory, window=window, sinks=sinks))
    with torch.no_grad():
        for _, p in ahn.trainable_parameters(model):
            p.normal_(0.0, 0.02)
    return model


def memory_worker(method: str, length: int, args) -> dict:
    """One prefill and a few decode steps in a process of its own: its peak RSS and the cache
    size belong to this method and length alone."""
    import torch

    import ahn

    torch.set_num_threads(args.threads)
    model = build_model(args.window, args.sinks, args.memory)
    ids = torch.randint(0, 4096, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), ahn.mode(model, method):
        out = model(ids, use_cache=True, logits_to_keep=1)
        for _ in range(2):
            out = model(out.logits[:, -1:].argmax(-1), cache=out.cache, use_cache=True)
    return {
        "peak_rss_mib": peak_rss_bytes() / 2**20,
        "cache_mib": ahn.cache_bytes(out.cache) / 2**20,
    }


def timing_worker(methods: list[str], length: int, args) -> dict:
    """Prefill and decode times of every method at one length, in one process, the methods
    taking turns (prefill rounds, then decode steps alternating between the methods' caches),
    so that they are compared under the same conditions on a shared machine.

    Returns per method the best prefill, the median decode step, and the median over rounds /
    steps of AHN's time over each other method's.
    """
    import torch

    import ahn

    torch.set_num_threads(args.threads)
    model = build_model(args.window, args.sinks, args.memory)
    ids = torch.randint(0, 4096, (1, length), generator=torch.Generator().manual_seed(0))
    prefill = {m: [] for m in methods}
    decode = {m: [] for m in methods}
    state = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for m in methods:
                state.pop(m, None)  # free this method's previous cache first
                with ahn.mode(model, m):
                    start = time.perf_counter()
                    out = model(ids, use_cache=True, logits_to_keep=1)
                    prefill[m].append(time.perf_counter() - start)
                state[m] = (out.cache, out.logits[:, -1:].argmax(-1))
        for _ in range(args.decode_tokens):
            for m in methods:
                cache, token = state[m]
                with ahn.mode(model, m):
                    start = time.perf_counter()
                    out = model(token, cache=cache, use_cache=True)
                    decode[m].append(time.perf_counter() - start)
                state[m] = (out.cache, out.logits[:, -1:].argmax(-1))
    rows = {
        m: {"prefill_s": min(prefill[m]), "decode_ms": median(decode[m]) * 1e3} for m in methods
    }
    for m in methods:
        if "ahn" in methods and m != "ahn":
            rows[m]["ahn_prefill_ratio"] = median_ratio(prefill["ahn"], prefill[m])
            rows[m]["ahn_decode_ratio"] = median_ratio(decode["ahn"], decode[m])
    return rows


def decode_worker(lengths: list[int], args) -> dict:
    """AHN's decode step after prefills of every length, in one process, the caches taking
    turns: the median over steps of the step time at each length over the one at the first."""
    import torch

    import ahn

    torch.set_num_threads(args.threads)
    model = build_model(args.window, args.sinks, args.memory)
    state, seconds = {}, {n: [] for n in lengths}
    with torch.no_grad(), ahn.mode(model, "ahn"):
        for n in lengths:
            ids = torch.randint(0, 4096, (1, n), generator=torch.Generator().manual_seed(0))
            out = model(ids, use_cache=True, logits_to_keep=1)
            state[n] = (out.cache, out.logits[:, -1:].argmax(-1))
        for _ in range(args.decode_tokens):
            for n in lengths:
                cache, token = state[n]
                start = time.perf_counter()
                out = model(token, cache=cache, use_cache=True)
                seconds[n].append(time.perf_counter() - start)
                state[n] = (out.cache, out.logits[:, -1:].argmax(-1))
    return {str(n): median_ratio(seconds[n], seconds[lengths[0]]) for n in lengths}


def median(xs) -> float:
    return statistics.median(xs)


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds (or steps) of `a[i] / b[i]`."""
    return median(x / y for x, y in zip(a, b, strict=True))


def run_worker(*worker_args: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", *worker_args, *sys.argv[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(methods: list[str], length: int) -> list[dict]:
    """The rows of one length: paired timings, then each method's memory in its own process."""
    times = run_worker("timing", ",".join(methods), str(length))
    rows = []
    for m in methods:
        rows.append(
            {"method": m, "length": length, **times[m], **run_worker("memory", m, str(length))}
        )
        print(f"# {m} @ {length}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict], lengths: list[int], methods: list[str], by_length) -> None:
    by = {(r["method"], r["length"]): r for r in rows}
    head = ("length", "method", "prefill s", "decode ms", "peak RSS MiB", "cache MiB")
    print("{:>7} {:>8} {:>10} {:>10} {:>13} {:>10}".format(*head))
    for n in lengths:
        for m in methods:
            r = by[(m, n)]
            print(
                f"{n:>7} {m:>8} {r['prefill_s']:>10.2f} {r['decode_ms']:>10.2f} "
                f"{r['peak_rss_mib']:>13.0f} {r['cache_mib']:>10.2f}"
            )
    print("\nratios (AHN / other, same length; medians of per-round / per-step ratios):")
    for n in lengths:
        for m in ("full", "sliding"):
            o = by.get((m, n))
            if o and "ahn_prefill_ratio" in o:
                print(
                    f"  {n:>6}: ahn/{m:<7} prefill {o['ahn_prefill_ratio']:.2f}x  "
                    f"decode {o['ahn_decode_ratio']:.2f}x"
                )
    if by_length:
        print(f"\nAHN decode step after a prefill of n tokens / after {lengths[0]} (one process,")
        print("the caches taking turns; median of per-step ratios), and peak RSS / at the first:")
        first = by[("ahn", lengths[0])]
        for n in lengths[1:]:
            rss = by[("ahn", n)]["peak_rss_mib"] / first["peak_rss_mib"]
            print(f"  {n:>6}: decode {by_length[str(n)]:.2f}x  peak RSS {rss:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", default="2048,8192,16384,65536")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--sinks", type=int, default=32)
    parser.add_argument("--memory", default="gated_deltanet")
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="prefill rounds (best kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, methods, length = args.worker
        if kind == "timing":
            print(json.dumps(timing_worker(methods.split(","), int(length), args)))
        elif kind == "decode":
            print(json.dumps(decode_worker([int(n) for n in length.split(",")], args)))
        else:
            print(json.dumps(memory_worker(methods, int(length), args)))
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        parser.error(f"--methods {bad} not in {METHODS}")
    rows = [row for n in lengths for row in measure(methods, n)]
    by_length = None
    if "ahn" in methods and len(lengths) > 1:
        by_length = run_worker("decode", "ahn", ",".join(str(n) for n in lengths))
    report(rows, lengths, methods, by_length)


if __name__ == "__main__":
    main()
