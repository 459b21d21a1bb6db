"""A long stream through the cache: 1,000,000 tokens on the demo model, in prefill-sized and
decode-sized steps. Checks that the AHN cache stays bounded (bytes constant, peak RSS flat after
warm-up), that no logit turns NaN / Inf, and measures how far a bfloat16 copy of the model,
fed the same stream, drifts from float32 (a benchmark, not a timed test).

Each round feeds one prefill chunk of `--chunk` tokens, then `--decode` tokens one at a time.
The demo base (`src/ahn/assets/demo-base`) with AHN weights drawn at random (std 0.02).

    python benchmarks/soak.py                          # 1M tokens
    python benchmarks/soak.py --tokens 100000 --window 512 --sinks 32
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import rss_bytes


def build(window: int, sinks: int, dtype):
    import torch

    import ahn
    from ahn.demo.base import load_base

    model, _ = load_base()
    ahn.augment(model, ahn.AHNConfig(window=window, sinks=sinks, prefill_chunk=1 << 20))
    torch.manual_seed(0)
    with torch.no_grad():
        for _, p in ahn.trainable_parameters(model):
            p.normal_(0.0, 0.02)
    return model.to(dtype) if dtype != torch.float32 else model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=2048, help="prefill tokens per round")
    parser.add_argument("--decode", type=int, default=64, help="decode steps per round")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--sinks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 twin")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    import ahn

    torch.set_num_threads(args.threads)
    models = {"float32": build(args.window, args.sinks, torch.float32)}
    if not args.no_bf16:
        models["bfloat16"] = build(args.window, args.sinks, torch.bfloat16)
    vocab = models["float32"].config.vocab_size
    caches = {name: ahn.new_cache(m) for name, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    fed, rounds, rows = 0, 0, []
    warm_rss = peak_after_warmup = 0
    cache_sizes, bad, all_drift = set(), 0, []
    print("| tokens | RSS MiB | cache MiB | KL(fp32 || bf16), last round | seconds |\n"
          "|---:|---:|---:|---:|---:|")  # fmt: skip
    start = time.perf_counter()
    with torch.no_grad():
        while fed < args.tokens:
            steps = [min(args.chunk, args.tokens - fed)] + [1] * args.decode
            drift = []
            for n in steps:
                if fed >= args.tokens:
                    break
                ids = torch.randint(0, vocab, (1, n), generator=gen)
                logits = {}
                for name, model in models.items():
                    out = model(ids, cache=caches[name], use_cache=True, logits_to_keep=1)
                    logits[name] = out.logits[:, -1].float()
                    bad += int(not torch.isfinite(logits[name]).all())
                if "bfloat16" in logits:
                    p = F.log_softmax(logits["float32"], -1)
                    q = F.log_softmax(logits["bfloat16"], -1)
                    drift.append(float((p.exp() * (p - q)).sum()))
                fed += n
            rounds += 1
            all_drift += drift
            cache_sizes.add(ahn.cache_bytes(caches["float32"]))
            rss = rss_bytes()
            if rounds == max(2, args.tokens // (10 * (args.chunk + args.decode))):
                warm_rss = rss  # after ~10% of the stream
            if warm_rss:
                peak_after_warmup = max(peak_after_warmup, rss)
            if rounds % 50 == 0 or fed >= args.tokens:
                row = {"tokens": fed, "rss_mib": rss / 2**20,
                       "cache_mib": ahn.cache_bytes(caches["float32"]) / 2**20,
                       "kl_bf16_fp32": sum(drift) / len(drift) if drift else None,
                       "seconds": time.perf_counter() - start}  # fmt: skip
                rows.append(row)
                kl = "-" if row["kl_bf16_fp32"] is None else f"{row['kl_bf16_fp32']:.2e}"
                print(f"| {fed:>9,} | {row['rss_mib']:8.1f} | {row['cache_mib']:7.3f} | {kl} | "
                      f"{row['seconds']:7.1f} |", flush=True)  # fmt: skip
    growth = peak_after_warmup / warm_rss - 1 if warm_rss else 0.0
    summary = {"tokens": fed, "rounds": rounds, "non_finite_logits": bad,
               "cache_bytes_distinct": sorted(cache_sizes), "rss_after_warmup_mib":
               warm_rss / 2**20, "rss_peak_after_warmup_mib": peak_after_warmup / 2**20,
               "rss_growth_after_warmup": growth, "rows": rows,
               "kl_bf16_fp32_mean": sum(all_drift) / len(all_drift) if all_drift else None,
               "kl_bf16_fp32_max": max(all_drift) if all_drift else None}  # fmt: skip
    print(f"\n{fed:,} tokens in {rounds} rounds: cache bytes {sorted(cache_sizes)} "
          f"({'constant' if len(cache_sizes) == 1 else 'NOT constant'}), non-finite logits "
          f"{bad}, RSS after warm-up {warm_rss / 2**20:.1f} MiB, peak after it "
          f"{peak_after_warmup / 2**20:.1f} MiB ({growth:+.1%})")  # fmt: skip
    if all_drift:
        print(
            f"KL(fp32 || bf16) of the next-token distribution over {len(all_drift):,} steps: "
            f"mean {summary['kl_bf16_fp32_mean']:.2e}, max {summary['kl_bf16_fp32_max']:.2e}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
