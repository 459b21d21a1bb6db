"""`real_shape.py --parts compile`: eager and `ahn.compile`d AHN (+ store) against sliding in
one process, interleaved rounds, medians."""

from __future__ import annotations

import statistics
import time

from shape import build_model, compile_and_warm_up, in_method, measure


def compile_part(args, report):
    """Eager and compiled (`ahn.compile`) side by side in one process: two models of the same
    weights, every case measured once per round, rounds interleaved (these machines drift
    within minutes); medians over the rounds."""

    eager, compiled = build_model(args), build_model(args)
    start = time.perf_counter()
    for method in ("ahn", "ahn+store"):
        with in_method(compiled, method, args):
            compile_and_warm_up(compiled)
    compile_s = time.perf_counter() - start
    cases = [("sliding", eager, "sliding"), ("ahn", eager, "ahn"),
             ("ahn@compiled", compiled, "ahn"), ("ahn+store", eager, "ahn+store"),
             ("ahn+store@compiled", compiled, "ahn+store")]  # fmt: skip
    rows = []
    print(
        f"\ncompiled vs eager in one process ({args.rounds} interleaved rounds, medians; "
        f"compiling + warm-up {compile_s:.1f} s):\n"
        "| length | method | prefill s | decode ms/token | prefill / sliding | decode / sliding |"
        "\n|---:|---|---:|---:|---:|---:|"
    )
    for length in (int(n) for n in args.lengths.split(",")):
        times = {name: [] for name, *_ in cases}
        for _ in range(args.rounds):
            for name, model, method in cases:
                times[name].append(measure(model, method, length, args)[:2])
        median = {n: [statistics.median(t[i] for t in ts) for i in (0, 1)]
                  for n, ts in times.items()}  # fmt: skip
        base = median["sliding"]
        for name, (prefill, decode) in median.items():
            rows.append({"length": length, "method": name, "prefill_s": prefill,
                         "decode_ms": decode, "rounds": times[name]})  # fmt: skip
            print(
                f"| {length} | {name} | {prefill:.2f} | {decode:.1f} | "
                f"{prefill / base[0]:.2f}x | {decode / base[1]:.2f}x |",
                flush=True,
            )
    report["compile"] = {"compile_s": compile_s, "rows": rows}
