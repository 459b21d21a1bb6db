"""Inference speed and memory: full attention vs sinks + sliding window vs AHN.

A small Qwen2-shaped model (hidden 256, 4 layers), window 512 + 32 sinks. For each context
length and method, a fresh process prefills the context (--repeats times, the best kept) and
decodes a few tokens (the median step kept, robust to other processes on a shared machine);
it reports prefill seconds, decode ms/token and the process's peak RSS. Ratios are printed
side by side.

    python benchmarks/inference.py                      # 2k .. 64k
    python benchmarks/inference.py --lengths 2048,16384 --methods sliding,ahn
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

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


def worker(method: str, length: int, args) -> dict:
    """Runs in its own process so that the peak RSS belongs to this measurement alone."""
    import torch

    import ahn

    torch.set_num_threads(args.threads)
    model = build_model(args.window, args.sinks, args.memory)
    ids = torch.randint(0, 4096, (1, length), generator=torch.Generator().manual_seed(0))
    prefill, decode = [], []
    with torch.no_grad(), ahn.mode(model, method):
        for _ in range(args.repeats):
            out = None  # the previous prefill's cache is freed before the next one (peak RSS)
            start = time.perf_counter()
            out = model(ids, use_cache=True, logits_to_keep=1)
            prefill.append(time.perf_counter() - start)
        cache, token = out.cache, out.logits[:, -1:].argmax(-1)
        for _ in range(args.decode_tokens):
            start = time.perf_counter()
            out = model(token, cache=cache, use_cache=True)
            decode.append(time.perf_counter() - start)
            cache, token = out.cache, out.logits[:, -1:].argmax(-1)
    return {
        "method": method,
        "length": length,
        "prefill_s": min(prefill),
        "decode_ms": sorted(decode)[len(decode) // 2] * 1e3,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cache_mib": ahn.cache_bytes(cache) / 2**20,
    }


def measure(method: str, length: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(length), *sys.argv[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(rows: list[dict], lengths: list[int], methods: list[str]) -> None:
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
    print("\nratios (AHN / other, same length):")
    for n in lengths:
        a = by.get(("ahn", n))
        for m in ("full", "sliding"):
            o = by.get((m, n))
            if a and o:
                print(
                    f"  {n:>6}: ahn/{m:<7} prefill {a['prefill_s'] / o['prefill_s']:.2f}x  "
                    f"decode {a['decode_ms'] / o['decode_ms']:.2f}x"
                )
    if "ahn" in methods and len(lengths) > 1:
        last = by[("ahn", lengths[-1])]
        for n in lengths[:-1]:
            r = by[("ahn", n)]
            print(
                f"  ahn at {lengths[-1]} vs ahn at {n}: decode "
                f"{last['decode_ms'] / r['decode_ms']:.2f}x, peak RSS "
                f"{last['peak_rss_mib'] / r['peak_rss_mib']:.2f}x"
            )


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
    parser.add_argument("--repeats", type=int, default=2, help="prefills per cell (best kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args)))
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        parser.error(f"--methods {bad} not in {METHODS}")
    rows = []
    for n in lengths:
        for m in methods:
            rows.append(measure(m, n, args))
            print(f"# {m} @ {n}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    report(rows, lengths, methods)


if __name__ == "__main__":
    main()
