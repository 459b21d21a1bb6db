"""Throughput of the memory kernels against the per-token reference, and against matmul peak.

For the Qwen2.5-3B head shape (B = 1, H = 16, D = 128) and each T, prints tokens/s of the
forward and of forward + backward (all input gradients) of the naive per-token gated delta
rule and of the chunked kernel, the fp32 matmul GFLOP/s of this machine measured in the same
run, and the chunked kernel's useful GFLOP/s (8 D^2 flops per head per token) as a fraction of
it. Every timing is the best of --repeats runs after a warm-up; the spread (worst / best) shows
how much other processes disturbed it. The naive reference keeps one state per token for
its backward, so it is timed only up to --naive-max-T and estimated linearly beyond (marked ~).

    python benchmarks/ops.py
    python benchmarks/ops.py --T 4096 --chunk-size 128 --repeats 5 --json runs/bench_ops.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

import ahn.ops.gated_delta_rule.chunk as chunk_module
from ahn.ops import (
    chunk_gated_delta_rule,
    fused_recurrent_gated_delta_rule,
    mamba_chunk_scan_combined,
    naive_recurrent_gated_delta_rule,
)

KERNELS = {"naive": naive_recurrent_gated_delta_rule, "chunk": chunk_gated_delta_rule}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--chunk-size", type=int, default=chunk_module.CHUNK_SIZE)
    parser.add_argument("--naive-max-T", type=int, default=4096, help="naive forward beyond: ~")
    parser.add_argument("--naive-bwd-max-T", type=int, default=1024, help="naive fwd+bwd beyond: ~")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the rows to this file")
    return parser.parse_args(argv)


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(best, worst) seconds of `repeats` calls after one warm-up call."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return min(seconds), max(seconds)


def matmul_gflops(repeats: int, n: int = 2048) -> tuple[float, float]:
    """(best, worst) fp32 GFLOP/s of an `n x n` matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best, worst = best_of(lambda: a @ b, repeats)
    return 2 * n**3 / best / 1e9, 2 * n**3 / worst / 1e9


def make_inputs(T: int, H: int, D: int) -> dict:
    gen = torch.Generator().manual_seed(42)
    rand = lambda *s: torch.randn(*s, generator=gen)
    return {
        "q": F.normalize(rand(1, T, H, D), dim=-1),
        "k": F.normalize(rand(1, T, H, D), dim=-1),
        "v": rand(1, T, H, D),
        "g": F.logsigmoid(rand(1, T, H) + 3),
        "beta": torch.sigmoid(rand(1, T, H)),
    }


def forward(kernel, inputs):
    with torch.no_grad():
        kernel(**inputs)


def forward_backward(kernel, inputs):
    leaves = {n: x.clone().requires_grad_() for n, x in inputs.items()}
    o, _ = kernel(**leaves)
    o.sum().backward()


def time_case(kernel_name: str, mode: str, T: int, args) -> dict:
    limit = args.naive_max_T if mode == "fwd" else args.naive_bwd_max_T
    timed_T = min(T, limit) if kernel_name == "naive" else T
    inputs = make_inputs(timed_T, args.heads, args.head_dim)
    step = forward if mode == "fwd" else forward_backward
    best, worst = best_of(lambda: step(KERNELS[kernel_name], inputs), args.repeats)
    return {
        "kernel": kernel_name,
        "mode": mode,
        "T": T,
        "estimated": timed_T != T,
        "seconds": best * T / timed_T,
        "spread": worst / best,
        "tokens_per_s": timed_T / best,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    chunk_module.CHUNK_SIZE = args.chunk_size
    peak, peak_worst = matmul_gflops(args.repeats)
    H, D = args.heads, args.head_dim
    print(f"threads {args.threads}  chunk size {args.chunk_size}  H {H}  D {D}  B 1")
    print(f"fp32 matmul 2048^3: best {peak:.1f} GFLOP/s (worst {peak_worst:.1f})")
    print_decode(args)
    header = f"{'T':>6} {'kernel':>6} {'mode':>7} {'tok/s':>10} {'spread':>6} {'GFLOP/s':>8}"
    print(header + f" {'of peak':>7} {'x naive':>7} {'bwd/fwd':>7}")
    rows = []
    for T in args.T:
        by_key = {}
        for kernel_name in KERNELS:
            for mode in ("fwd", "fwd+bwd"):
                row = time_case(kernel_name, mode, T, args)
                row["useful_gflops"] = 8 * D * D * H * T / row["seconds"] / 1e9
                row["fraction_of_matmul"] = row["useful_gflops"] / peak
                by_key[kernel_name, mode] = row
                naive = by_key.get(("naive", mode))
                row["speedup_vs_naive"] = naive["seconds"] / row["seconds"] if naive else None
                fwd = by_key.get((kernel_name, "fwd"))
                row["bwd_over_fwd"] = row["seconds"] / fwd["seconds"] if mode != "fwd" else None
                rows.append(row)
                print_row(row)
    print("~ : estimated from a shorter T by linear scaling (the recurrence is linear in T)")
    end_peak = matmul_gflops(args.repeats)[0]
    best_peak = max(peak, end_peak)
    print(f"fp32 matmul again at the end: {end_peak:.1f} GFLOP/s (fractions above use the start)")
    for row in rows:
        row["fraction_of_best_matmul"] = row["useful_gflops"] / best_peak
        if row["kernel"] == "chunk":
            print(
                f"T {row['T']:>6} chunk {row['mode']:>7}: {row['fraction_of_best_matmul']:.0%} "
                f"of the better matmul measurement ({best_peak:.1f} GFLOP/s)"
            )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json + ".tmp", "w") as handle:
            json.dump({"args": vars(args), "matmul_gflops": peak, "rows": rows}, handle, indent=2)
        os.replace(args.json + ".tmp", args.json)
    return 0


def print_decode(args) -> None:
    """Latency of one decode step (T = 1) of each kernel, forward only."""
    x = make_inputs(1, args.heads, args.head_dim)
    S = torch.zeros(1, args.heads, args.head_dim, args.head_dim)
    steps = {
        "fused_recurrent_gated_delta_rule": lambda: fused_recurrent_gated_delta_rule(
            **x, initial_state=S, output_final_state=True
        ),
        "chunk_gated_delta_rule": lambda: chunk_gated_delta_rule(
            **x, initial_state=S, output_final_state=True
        ),
        "mamba_chunk_scan_combined": lambda: mamba_chunk_scan_combined(
            x["v"],
            x["beta"],
            -torch.ones(args.heads),
            x["k"],
            x["q"],
            64,
            initial_states=S,
            return_final_states=True,
        ),  # fmt: skip
    }
    for name, step in steps.items():
        with torch.no_grad():
            best, _ = best_of(step, max(args.repeats, 20))
        print(f"decode step (T = 1) {name}: {best * 1e6:.0f} us")


def print_row(row: dict) -> None:
    tokens = f"{'~' if row['estimated'] else ''}{row['T'] / row['seconds']:.0f}"
    speedup = f"{row['speedup_vs_naive']:.1f}" if row["speedup_vs_naive"] else "-"
    ratio = f"{row['bwd_over_fwd']:.2f}" if row["bwd_over_fwd"] else "-"
    print(
        f"{row['T']:>6} {row['kernel']:>6} {row['mode']:>7} {tokens:>10} {row['spread']:>6.2f} "
        f"{row['useful_gflops']:>8.1f} {row['fraction_of_matmul']:>7.0%} {speedup:>7} {ratio:>7}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
