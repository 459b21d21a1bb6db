"""Constant memory past the base's context: cache bytes and decode time per token after 8k
and after 128k tokens, side by side in one process (SPEC §2c, positions "bounded").

Each method (sliding / ahn / ahn+store, window 480 + 32 sinks, store of --salient) prefills
every length once, in chunks, on SmolLM2-135M's shape (random weights, or the real base with
--real); its caches are
kept (they are small). Then decode rounds alternate between the lengths, each decoding
--decode-tokens tokens from a copy of the cache, so both lengths see the same machine load;
the table gives the median ms per token and the ratio of the longest length to the shortest.

    python benchmarks/long_decode.py                               # 8k and 128k, bf16
    python benchmarks/long_decode.py --lengths 8192,32768,131072 --methods ahn+store
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from shape import build_model  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="8192,131072")
    parser.add_argument("--methods", default="sliding,ahn,ahn+store")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=480)
    parser.add_argument("--sinks", type=int, default=32)
    parser.add_argument("--salient", type=int, default=64, help="store size of ahn+store")
    parser.add_argument("--salient-score", default="novelty", help="store score of ahn+store")
    parser.add_argument("--salient-heads", help="ahn+store: a head profile (profile-heads json)")
    parser.add_argument("--salient-share", default="head", help="ahn+store: choice sharing")
    parser.add_argument("--real", action="store_true", help="the cached SmolLM2 weights")
    parser.add_argument("--positions", default="bounded", choices=("bounded", "original"))
    parser.add_argument("--chunk", type=int, default=4096, help="prefill tokens per call")
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, help="fewer layers (a quick smoke run)")
    return parser.parse_args(argv)


def prefill(model, length: int, chunk: int):
    """A cache that has read `length` random tokens, and the last logits."""
    import torch

    import ahn

    ids = torch.randint(0, model.config.vocab_size, (1, length),
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    cache = ahn.new_cache(model)
    for a in range(0, length, chunk):
        out = model(ids[:, a : a + chunk], cache=cache, use_cache=True, logits_to_keep=1)
    return cache, out.logits[:, -1:]


def decode_ms(model, cache, logits, tokens: int) -> list[float]:
    """ms per token of `tokens` greedy steps from a copy of `cache`."""
    cache, times = cache.copy(), []
    for _ in range(tokens):
        token = logits.argmax(-1)
        start = time.perf_counter()
        logits = model(token, cache=cache, use_cache=True).logits
        times.append(1000 * (time.perf_counter() - start))
    return times


def main(argv=None) -> int:
    import torch

    import ahn

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    lengths = [int(n) for n in args.lengths.split(",")]
    model = build_model(args)  # real_shape.py's: random weights unless --real
    ahn.set_window(model, positions=args.positions)
    print(f"SmolLM2-135M shape, random weights, {args.dtype}, {args.threads} threads, "
          f"positions={args.positions}, window {args.window} + {args.sinks} sinks")  # fmt: skip
    print("\n| method | length | prefill s | cache MiB | decode ms/token (median) |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    with torch.no_grad():
        for method in args.methods.split(","):
            salient = args.salient if method == "ahn+store" else 0
            with ahn.mode(model, method.removesuffix("+store")), ahn.window(model, salient=salient):
                caches = {}
                for n in lengths:
                    start = time.perf_counter()
                    caches[n] = prefill(model, n, args.chunk)
                    caches[n] += (time.perf_counter() - start,)
                times = {n: [] for n in lengths}
                for _ in range(args.rounds):  # alternate: both lengths under the same load
                    for n in lengths:
                        times[n] += decode_ms(model, *caches[n][:2], args.decode_tokens)
                for n in lengths:
                    mib = ahn.cache_bytes(caches[n][0]) / 2**20
                    ms = statistics.median(times[n])
                    rows.append((method, n, mib, ms))
                    print(f"| {method} | {n} | {caches[n][2]:.1f} | {mib:.2f} | {ms:.2f} |")
    first, last = lengths[0], lengths[-1]
    print(f"\n| method | cache {last} / {first} | decode {last} / {first} |\n|---|---:|---:|")
    for method in args.methods.split(","):
        by = {n: (mib, ms) for m, n, mib, ms in rows if m == method}
        print(f"| {method} | {by[last][0] / by[first][0]:.3f} | {by[last][1] / by[first][1]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
