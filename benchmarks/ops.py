"""Throughput of the memory kernels against the per-token reference, and against matmul peak.

For the Qwen2.5-3B head shape (B = 1, H = 16, D = 128) and each T, prints tokens/s of the
forward and of forward + backward (all input gradients) of the naive per-token gated delta
rule and of the chunked kernel, the fp32 matmul GFLOP/s of this machine measured in the same
run, and the chunked kernel's useful GFLOP/s (8 D^2 flops per head per token) as a fraction of
it. The four cases of one T and the matmul run in turn, round after round (--repeats rounds
after a warm-up), so that the ratios compare runs made under the same conditions on a shared
machine: tokens/s are the best round; `x naive`, `bwd/fwd` and `of peak` the medians of the
per-round ratios; `spread` the worst round over the best. The naive reference keeps one state
per token for its backward, so it is timed only up to --naive-max-T and estimated linearly
beyond (marked ~). The `floor` rows time the chunked kernel's matrix products alone, at its
shapes, on buffers made once: a bound on what its algorithm can reach on this machine.

    python benchmarks/ops.py
    python benchmarks/ops.py --T 4096 --chunk-size 64 --repeats 7 --json runs/bench_ops.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

import ahn.ops.gated_delta_rule.chunk as chunk_module
import ahn.ops.gated_delta_rule.chunk_fwd as chunk_fwd
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
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after a warm-up")
    parser.add_argument("--chunk-size", type=int, default=chunk_module.CHUNK_SIZE)
    parser.add_argument("--naive-max-T", type=int, default=4096, help="naive forward beyond: ~")
    parser.add_argument("--naive-bwd-max-T", type=int, default=1024, help="naive fwd+bwd beyond: ~")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the rows to this file")
    return parser.parse_args(argv)


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(best, worst) seconds of `repeats` calls after one warm-up call."""
    seconds = rounds({"fn": fn}, repeats)["fn"]
    return min(seconds), max(seconds)


def rounds(fns: dict, repeats: int) -> dict:
    """Seconds of each function in every round: one warm-up call each, then `repeats` rounds
    in which every function runs once, in turn."""
    for fn in fns.values():
        fn()
    seconds = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


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


def forward_backward(kernel, leaves):
    for x in leaves.values():
        x.grad = None  # fresh gradients each step, as for activations in training
    o, _ = kernel(**leaves)
    o.sum().backward()


def case(kernel_name: str, mode: str, T: int, args):
    """`(timed T, function)` of one case; the naive reference runs at most to its limit."""
    limit = args.naive_max_T if mode == "fwd" else args.naive_bwd_max_T
    timed_T = min(T, limit) if kernel_name == "naive" else T
    inputs = make_inputs(timed_T, args.heads, args.head_dim)
    kernel = KERNELS[kernel_name]
    if mode == "fwd":
        return timed_T, lambda: forward(kernel, inputs)
    leaves = {n: x.requires_grad_() for n, x in inputs.items()}  # made once, outside the timing
    return timed_T, lambda: forward_backward(kernel, leaves)


def matmul_floor(T: int, H: int, D: int, C: int, backward: bool):
    """The matrix products of the chunked kernel alone, at its shapes (B = 1, M = H heads),
    on buffers made once: the time its algorithm cannot go below at this machine's matmul
    speed, whatever is done about the other ops (decay factors, the triangular solve, copies,
    fresh pages). The values do not matter (no denormals: the state starts at zero).

    Forward, per block of G chunks: `P = [k; q'] k^T`; per chunk: `X = WQ h`, `U = Tinv X_k`,
    `O = X_q + Bq U`, `h += KE^T U`. Backward, per segment of STATE_EVERY chunks: P again and
    the recomputed entering states; per chunk the nine products of `bwd_chunk`.
    """
    M, N, R = H, -(-T // C), chunk_fwd.STATE_EVERY
    G = min(N, max(1, chunk_fwd.BLOCK_ROWS // (M * C)))
    r = lambda *shape: torch.randn(*shape) * 0.01
    h, dh = torch.zeros(M, D, D), torch.zeros(M, D, D)
    WQ, KQ, X, DX, dWQ, dKQ = (r(M, 2 * C, D) for _ in range(6))
    KE, U, O, dU, dKE, dY, dk = (r(M, C, D) for _ in range(7))
    Tinv, Bq, dP, dPU = r(M, C, C), r(M, C, C), r(M, 2 * C, C), r(M, 2 * C, C)
    KQ_block, k_block, P = r(G * M, 2 * C, D), r(G * M, C, D), r(G * M, 2 * C, C)

    def forward() -> None:
        for n0 in range(0, N, G):
            g = min(G, N - n0) * M
            torch.bmm(KQ_block[:g], k_block[:g].mT, out=P[:g])
            for _ in range(n0, min(N, n0 + G)):
                torch.bmm(WQ, h, out=X)
                torch.bmm(Tinv, X[:, :C], out=U)
                torch.baddbmm(X[:, C:], Bq, U, out=O)
                h.baddbmm_(KE.mT, U)

    def backward_chunks() -> None:
        for n0 in range(0, N, R):
            segment = min(R, N - n0)
            for s in range(0, segment, G):
                g = min(G, segment - s) * M
                torch.bmm(KQ_block[:g], k_block[:g].mT, out=P[:g])
            for _ in range(segment - 1):
                h.baddbmm_(KE.mT, U)
            for _ in range(segment):
                torch.bmm(KE, dh, out=dU).baddbmm_(Bq.mT, DX[:, C:])
                torch.bmm(U, dh.mT, out=dKE)
                torch.bmm(Tinv.mT, dU, out=dY)
                torch.bmm(DX, h.mT, out=dWQ)
                torch.bmm(DX, U.mT, out=dPU)
                dh.baddbmm_(WQ.mT, DX)
                dKQ.baddbmm_(dP, KQ[:, :C])
                torch.baddbmm(dKQ[:, :C], dP.mT, KQ, out=dk)

    return (lambda: (forward(), backward_chunks())) if backward else forward


def time_T(T: int, args) -> list[dict]:
    """The rows of one T: the four cases, the chunked kernel's matmul floor (both modes) and a
    2048^3 matmul, timed in the same rounds."""
    keys = [(kernel, mode) for kernel in KERNELS for mode in ("fwd", "fwd+bwd")]
    cases = {key: case(*key, T, args) for key in keys}
    for mode in ("fwd", "fwd+bwd"):
        floor = matmul_floor(T, args.heads, args.head_dim, args.chunk_size, mode != "fwd")
        cases["floor", mode] = (T, floor)
    keys = list(cases)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    fns = {key: fn for key, (_, fn) in cases.items()} | {"matmul": lambda: a @ b}
    seconds = rounds(fns, args.repeats)
    matmul = [2 * 2048**3 / s / 1e9 for s in seconds["matmul"]]  # GFLOP/s, per round
    per_T = {key: [s * T / cases[key][0] for s in seconds[key]] for key in keys}  # [round]
    useful = 8 * args.head_dim**2 * args.heads * T / 1e9  # GFLOP
    rows = []
    for kernel, mode in keys:
        mine = per_T[kernel, mode]
        rows.append({
            "kernel": kernel,
            "mode": mode,
            "T": T,
            "estimated": cases[kernel, mode][0] != T,
            "seconds": min(mine),
            "spread": max(mine) / min(mine),
            "tokens_per_s": T / min(mine),
            "useful_gflops": useful / min(mine),
            "matmul_gflops": max(matmul),
            "fraction_of_matmul": median_ratio([useful / s for s in mine], matmul),
            "speedup_vs_naive": median_ratio(per_T["naive", mode], mine),
            "bwd_over_fwd": median_ratio(mine, per_T[kernel, "fwd"]) if mode != "fwd" else None,
        })  # fmt: skip
    return rows


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of `a[i] / b[i]`."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    chunk_module.CHUNK_SIZE = args.chunk_size
    peak, peak_worst = matmul_gflops(args.repeats)
    H, D = args.heads, args.head_dim
    print(f"threads {args.threads}  chunk size {args.chunk_size}  H {H}  D {D}  B 1")
    print(f"fp32 matmul 2048^3 at the start: best {peak:.1f} GFLOP/s (worst {peak_worst:.1f})")
    print_decode(args)
    header = f"{'T':>6} {'kernel':>6} {'mode':>7} {'tok/s':>10} {'spread':>6} {'GFLOP/s':>8}"
    print(header + f" {'of peak':>7} {'x naive':>7} {'bwd/fwd':>7}")
    rows = []
    for T in args.T:
        for row in time_T(T, args):
            rows.append(row)
            print_row(row)
    print("~ : estimated from a shorter T by linear scaling (the recurrence is linear in T)")
    print("floor: the chunked kernel's matrix products alone, on buffers made once (its")
    print("algorithm cannot be faster than this at this machine's matmul speed)")
    print("x naive, bwd/fwd, of peak: medians of per-round ratios (the matmul runs in every")
    print("round too); tok/s, GFLOP/s: best rounds")
    print(f"fp32 matmul in the rounds: best {max(r['matmul_gflops'] for r in rows):.1f} GFLOP/s")
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
    speedup = f"{row['speedup_vs_naive']:.1f}"
    ratio = f"{row['bwd_over_fwd']:.2f}" if row["bwd_over_fwd"] else "-"
    print(
        f"{row['T']:>6} {row['kernel']:>6} {row['mode']:>7} {tokens:>10} {row['spread']:>6.2f} "
        f"{row['useful_gflops']:>8.1f} {row['fraction_of_matmul']:>7.0%} {speedup:>7} {ratio:>7}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
