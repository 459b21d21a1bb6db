"""`real_shape.py --parts inference`: prefill and decode per method, each in a fresh process (its
peak RSS), then where sliding's and AHN's time goes (torch.profiler)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _common import peak_rss_bytes
from shape import COMPILED, build_model, compile_and_warm_up, in_method, measure

SCRIPT = Path(__file__).with_name("real_shape.py")  # a worker runs the script itself


def inference_worker(args) -> dict:
    """Prefill `length` random tokens in one method, then decode; in a process of its own."""
    import torch

    import ahn

    torch.set_num_threads(args.threads)
    method, length, *profile = args.worker.split(":")
    model = build_model(args)
    if profile:
        return profile_worker(model, method, int(length), args)
    base_method, compile_s = method.removesuffix(COMPILED), None
    if method.endswith(COMPILED):
        with in_method(model, base_method, args):
            compile_s = compile_and_warm_up(model)
    prefill, decode_ms, cache = measure(model, base_method, int(length), args)
    return {
        "method": method,
        "length": int(length),
        "prefill_s": prefill,
        "decode_ms": decode_ms,
        "cache_mib": ahn.cache_bytes(cache) / 2**20,
        "peak_rss_mib": peak_rss_bytes() / 2**20,
        "compile_s": compile_s,
    }


# Regions of a windowed layer's call, timed inclusively by the profile worker:
# label -> (module, class or None, functions).
REGIONS = {
    "memory projection (gate logits)": ("ahn.memory.base", "MemoryModule", ("project",)),
    "cache view + commit": ("ahn.integration.cache", "AHNLayer", ("view", "commit")),
    "sinks + window attention": ("ahn.integration.attention", None, ("lossless_attention",)),
    "memory update + read": ("ahn.integration.attention", None, ("memory_read",)),
}


def _label_regions(record_function):
    """Wrap each region's functions in a profiler label (in this worker process only)."""
    import importlib

    for tag, (module_name, cls, names) in REGIONS.items():
        owner = importlib.import_module(module_name)
        owner = owner if cls is None else getattr(owner, cls)
        for name in names:
            setattr(owner, name, _labelled(getattr(owner, name), tag, record_function))


def _labelled(fn, tag, record_function):
    def wrapped(*args, **kwargs):
        with record_function(tag):
            return fn(*args, **kwargs)

    return wrapped


def profile_worker(model, method: str, length: int, args) -> dict:
    """Per-region and per-op time of one prefill of `length` tokens and of the decode steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    import ahn

    _label_regions(record_function)
    ids = torch.randint(
        0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0)
    )
    result = {"method": method, "length": length}
    with torch.no_grad(), ahn.mode(model, method):
        cache = ahn.new_cache(model)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = model(ids, cache=cache, use_cache=True, logits_to_keep=1)
        result["prefill"] = _profile_table(prof, 1)
        cache, token = out.cache, out.logits[:, -1:].argmax(-1)
        model(token, cache=cache, use_cache=True)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.decode_tokens):
                out = model(token, cache=cache, use_cache=True)
                cache, token = out.cache, out.logits[:, -1:].argmax(-1)
        result["decode"] = _profile_table(prof, args.decode_tokens)
    return result


def _profile_table(prof, calls: int) -> dict:
    """ms per call: the regions (inclusive), every op's self time, the total self time."""
    events = prof.key_averages()
    per = 1000 / 1e6 / calls  # profiler microseconds -> ms per call
    regions = {e.key: e.cpu_time_total * per for e in events if e.key in REGIONS}
    ops = {e.key: e.self_cpu_time_total * per for e in events if e.key not in REGIONS}
    return {"regions": regions, "ops": ops, "total_ms": sum(ops.values())}


def breakdown_part(args, length: int, report, top: int = 10):
    """Print where sliding's and AHN's prefill and decode time goes, side by side."""
    tables = {}
    for method in ("sliding", "ahn"):
        tables[method] = run_worker(f"{method}:{length}:profile")
        if isinstance(tables[method], str):
            print(f"breakdown of {method} failed: {tables[method]}")
            return
    for phase, unit in (("prefill", "ms"), ("decode", "ms/token")):
        s, a = tables["sliding"][phase], tables["ahn"][phase]
        print(
            f"\nwhere {phase} time goes at {length} tokens (profiled, {unit}; the profiler adds "
            f"overhead of its own):\n| | sliding | ahn | ahn - sliding |\n|---|---:|---:|---:|"
        )
        cells = [("(all ops, self time)", s["total_ms"], a["total_ms"])] + [
            (name, s["regions"].get(name, 0.0), a["regions"].get(name, 0.0)) for name in REGIONS
        ]
        for name, sliding, memory in cells:
            print(f"| {name} | {sliding:.2f} | {memory:.2f} | {memory - sliding:+.2f} |")
        extra = {op: a["ops"].get(op, 0.0) - s["ops"].get(op, 0.0) for op in a["ops"]}
        print(f"\nops whose self time AHN adds most ({phase}, {unit}):")
        print("| op | ahn - sliding |\n|---|---:|")
        for op, ms in sorted(extra.items(), key=lambda kv: -kv[1])[:top]:
            print(f"| {op} | {ms:+.3f} |")
    report["inference_breakdown"] = tables


def run_worker(spec: str) -> dict | str:
    """Run this script as a worker (`--worker spec`) in a fresh process: its json result, or
    the last line of its error."""
    argv = [sys.executable, str(SCRIPT), *sys.argv[1:], "--worker", spec]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def inference_part(args, report):
    rows = []
    print(
        "\n| length | method | prefill s | decode ms/token | cache MiB | peak RSS MiB | compile s |"
        "\n|---:|---|---:|---:|---:|---:|---:|"
    )
    requested = [int(n) for n in args.lengths.split(",")]
    for length in requested:
        for method in args.methods.split(","):
            row = run_worker(f"{method}:{length}")
            if isinstance(row, str):
                print(f"| {length} | {method} | failed: {row} |")
                continue
            rows.append(row)
            print(
                f"| {length} | {method} | {row['prefill_s']:.2f} | {row['decode_ms']:.1f} | "
                f"{row['cache_mib']:.1f} | {row['peak_rss_mib']:.0f} | "
                f"{'-' if row['compile_s'] is None else format(row['compile_s'], '.1f')} |",
                flush=True,
            )
    by = {(r["method"], r["length"]): r for r in rows}
    lengths = sorted({r["length"] for r in rows})
    print("\n| ratio | " + " | ".join(map(str, lengths)) + " |\n|---|" + "---:|" * len(lengths))
    for name, num, den, key in [
        ("ahn / sliding prefill", "ahn", "sliding", "prefill_s"),
        ("ahn / sliding decode", "ahn", "sliding", "decode_ms"),
        ("ahn+store / sliding prefill", "ahn+store", "sliding", "prefill_s"),
        ("ahn+store / sliding decode", "ahn+store", "sliding", "decode_ms"),
        ("ahn@compiled / sliding prefill", "ahn@compiled", "sliding", "prefill_s"),
        ("ahn@compiled / sliding decode", "ahn@compiled", "sliding", "decode_ms"),
        ("ahn+store@compiled / sliding prefill", "ahn+store@compiled", "sliding", "prefill_s"),
        ("ahn+store@compiled / sliding decode", "ahn+store@compiled", "sliding", "decode_ms"),
        ("ahn / full prefill", "ahn", "full", "prefill_s"),
        ("ahn / full decode", "ahn", "full", "decode_ms"),
    ]:
        cells = [
            f"{by[num, n][key] / by[den, n][key]:.2f}x"
            if (num, n) in by and (den, n) in by
            else "-"
            for n in lengths
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    report["inference"] = rows
    if not args.no_breakdown:
        breakdown_part(args, requested[0], report)
