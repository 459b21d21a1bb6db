"""Speed on a real model's shape: SmolLM2-135M (30 layers, hidden 576, 9 / 3 heads, head dim 64,
vocab 49,152; random weights, or the real base with --real when `ahn fetch-base` cached it).

Four parts, each measured side by side in this one run:
  floor      matmul throughput of this machine (F.linear at the model's MLP shape), fp32 and
             bf16, and what it makes of a batch's matmul FLOPs: the "floor" time of a step
  train      one `ahn.train` step (teacher forward + student forward and backward + chunked KL
             + AdamW) at 2 x 1,024 and 1 x 4,096 tokens against one teacher forward of the same
             batch and against the floor; then where the step's time goes (torch.profiler,
             self time per op)
  inference  prefill and decode per method (full / sliding / ahn / ahn+store: AHN with a
             salient store of --salient tokens per layer and KV head; window 480 + 32 sinks;
             a method ending in @compiled runs after `ahn.compile` and a warm-up whose time is
             reported as its compile cost) at 2k / 8k (and 32k with --lengths), each in a fresh
             process for its peak RSS; then
             where sliding's and AHN's time goes at the first length (torch.profiler: time per
             region of the windowed layers, and the ops whose self time AHN adds)
  compile    eager and `ahn.compile`d AHN (and AHN + store) against sliding in one process,
             interleaved rounds, medians (--rounds)

    python benchmarks/real_shape.py                        # fp32, 2 threads
    python benchmarks/real_shape.py --dtype bfloat16 --parts floor,train
    python benchmarks/real_shape.py --parts inference --lengths 2048,8192,32768
    python benchmarks/real_shape.py --dtype bfloat16 --parts train --compile
    python benchmarks/real_shape.py --dtype bfloat16 --parts compile --lengths 2048,8192
    python benchmarks/real_shape.py --dtype bfloat16 --parts inference --no-breakdown \
        --methods sliding,ahn,ahn@compiled,ahn+store,ahn+store@compiled
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time

from _common import peak_rss_bytes

SHAPE = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    vocab_size=49152,
)
METHODS = ("full", "sliding", "ahn", "ahn+store")
COMPILED = "@compiled"  # a method's suffix: run it after ahn.compile


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="floor,train,inference")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--real", action="store_true", help="the cached SmolLM2 weights")
    parser.add_argument("--batches", default="2x1024,1x4096", help="train batches BxT")
    parser.add_argument("--lengths", default="2048,8192", help="inference lengths")
    parser.add_argument("--methods", default=",".join(METHODS), help="inference methods")
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed train steps after a warm-up")
    parser.add_argument("--compile", action="store_true", help="train: also after ahn.compile")
    parser.add_argument("--rounds", type=int, default=3, help="compile part: interleaved rounds")
    parser.add_argument("--window", type=int, default=480)
    parser.add_argument("--sinks", type=int, default=32)
    parser.add_argument("--salient", type=int, default=64, help="store size of ahn+store")
    parser.add_argument("--salient-score", default="novelty", help="store score of ahn+store")
    parser.add_argument("--layers", type=int, help="fewer layers (a quick smoke run)")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the inference profile")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # method:length[:profile]
    return parser.parse_args(argv)


def build_model(args):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    import ahn

    dtype = getattr(torch, args.dtype)
    if args.real:
        from ahn.bases import fetch_base

        model = AutoModelForCausalLM.from_pretrained(
            fetch_base("smollm2-135m-instruct"), dtype=dtype
        )
    else:
        torch.manual_seed(0)
        shape = dict(SHAPE, num_hidden_layers=args.layers or SHAPE["num_hidden_layers"])
        config = LlamaConfig(**shape, tie_word_embeddings=True, max_position_embeddings=1 << 16)
        model = LlamaForCausalLM(config).to(dtype)
    model.eval()
    config = ahn.AHNConfig(window=args.window, sinks=args.sinks, salient_score=args.salient_score)
    ahn.augment(model, config)
    with torch.no_grad():
        for _, p in ahn.trainable_parameters(model):
            p.normal_(0.0, 0.02)
    return model


def gemm_gflops(dtype, rows=2048, repeats=5) -> float:
    """F.linear at the MLP up-projection shape: [rows, 576] x [576, 1536]."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(rows, SHAPE["hidden_size"], dtype=dtype)
    w = torch.randn(SHAPE["intermediate_size"], SHAPE["hidden_size"], dtype=dtype)
    F.linear(x, w)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        F.linear(x, w)
        times.append(time.perf_counter() - start)
    return 2 * x.shape[0] * w.numel() / min(times) / 1e9


def matmul_parameters(model) -> int:
    """Weights of the real matmuls per token: every linear layer of the base and the LM head
    (the input embedding is a lookup, not a matmul; AHN and norm weights are left out)."""
    from torch import nn

    layers = sum(m.weight.numel() for n, m in model.model.layers.named_modules()
                 if isinstance(m, nn.Linear) and ".ahn." not in f".{n}.")  # fmt: skip
    return layers + model.lm_head.weight.numel()


def step_flops(model, B: int, T: int, lossless: int) -> float:
    """Matmul FLOPs a training step cannot avoid: teacher forward, student forward and the
    student's backward to its inputs (no weight gradients for the frozen base), 2 per MAC."""
    cfg = model.config
    linear = 2 * matmul_parameters(model) * B * T
    per_pair = 4 * cfg.num_attention_heads * cfg.head_dim * cfg.num_hidden_layers
    full = per_pair * B * T * (T + 1) / 2
    window = per_pair * B * sum(min(t + 1, lossless) for t in range(T))
    return 3 * linear + full + 3 * window


def train_part(model, args, report):
    import torch

    import ahn
    from ahn.train.config import TrainConfig
    from ahn.train.data import Sample
    from ahn.train.distributed import DistEnv
    from ahn.train.loop import build_optimizer, train_step

    gflops = report.setdefault("floor", {}).get(args.dtype) or gemm_gflops(
        getattr(torch, args.dtype)
    )
    named = ahn.trainable_parameters(model)
    rows = []
    print(
        "\n| batch | memory | teacher forward s | train step s | step / teacher | floor s | "
        "% of floor | tokens/s |\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    runs = [(spec, False) for spec in args.batches.split(",")]
    if args.compile:
        runs += [(spec, True) for spec in args.batches.split(",")]
    for spec, compiled in runs:
        if compiled and not ahn.is_compiled(model):
            ahn.compile(model)
        B, T = map(int, spec.split("x"))
        config = TrainConfig(
            output=tempfile.mkdtemp(),
            seq_len=T,
            train_window="fixed",
            window=args.window,
            sinks=args.sinks,
            steps=args.repeats + 1,
        )
        optimizer = build_optimizer(named, config)
        ids = torch.randint(
            0, model.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(T)
        )
        batch = [Sample(row.tolist()) for row in ids]
        with torch.no_grad(), ahn.mode(model, "full"):
            model(ids, use_cache=False)  # warm-up
            start = time.perf_counter()
            model(ids, use_cache=False)
            teacher = time.perf_counter() - start
        env = DistEnv(device=torch.device("cpu"))
        params = [p for _, p in named]
        times = []
        for step in range(args.repeats + 1):
            start = time.perf_counter()
            train_step(model, optimizer, params, batch, step, config, env)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times[1:])
        floor = step_flops(model, B, T, args.sinks + args.window) / (gflops * 1e9)
        row = {
            "batch": spec,
            "compiled": compiled,
            "teacher_forward_s": teacher,
            "train_step_s": seconds,
            "step_over_teacher": seconds / teacher,
            "floor_s": floor,
            "share_of_floor": floor / seconds,
            "tokens_per_s": B * T / seconds,
        }
        rows.append(row)
        print(
            f"| {spec} | {'compiled' if compiled else 'eager'} | {teacher:.2f} | {seconds:.2f} | "
            f"{seconds / teacher:.2f}x | "
            f"{floor:.2f} | {100 * floor / seconds:.0f}% | {B * T / seconds:.0f} |",
            flush=True,
        )
    report["train"] = rows
    report["train_breakdown"] = breakdown(model, optimizer, params, batch, config, env)


def breakdown(model, optimizer, params, batch, config, env, top=12):
    """Self CPU time per op of one train step (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from ahn.train.loop import train_step

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, optimizer, params, batch, 0, config, env)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    print(
        f"\nwhere one {len(batch)}x{len(batch[0])} step's time goes (self CPU time, top {top}):\n"
        "| op | calls | self s | share |\n|---|---:|---:|---:|"
    )
    rows = []
    for e in events[:top]:
        rows.append(
            {
                "op": e.key,
                "calls": e.count,
                "self_s": e.self_cpu_time_total / 1e6,
                "share": e.self_cpu_time_total / total,
            }
        )
        print(
            f"| {e.key} | {e.count} | {e.self_cpu_time_total / 1e6:.2f} | "
            f"{100 * e.self_cpu_time_total / total:.1f}% |"
        )
    return rows


def in_method(model, method: str, args) -> contextlib.ExitStack:
    """The contexts that run `model` as `method` (full / sliding / ahn / ahn+store), no grad."""
    import torch

    import ahn

    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(ahn.mode(model, method.removesuffix("+store")))
    salient = args.salient if method == "ahn+store" else 0
    stack.enter_context(ahn.window(model, salient=salient))
    return stack


def measure(model, method: str, length: int, args):
    """(prefill s, median decode ms/token, the cache after) of one method (no @compiled
    suffix) on `length` random tokens."""
    import torch

    import ahn

    ids = torch.randint(
        0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0)
    )
    with in_method(model, method, args):
        cache = ahn.new_cache(model) if method != "full" else None
        start = time.perf_counter()
        out = model(ids, cache=cache, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - start
        steps = []
        for _ in range(args.decode_tokens):
            token = out.logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            out = model(token, cache=out.cache, use_cache=True)
            steps.append(time.perf_counter() - start)
    return prefill, 1000 * statistics.median(steps), out.cache


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


def compile_and_warm_up(model, tokens=1024, steps=3) -> float:
    """`ahn.compile` and the first calls that compile (a prefill and decode steps): seconds."""
    import torch

    import ahn

    start = time.perf_counter()
    ahn.compile(model)
    ids = torch.zeros(1, tokens, dtype=torch.long)
    out = model(ids, cache=ahn.new_cache(model), use_cache=True, logits_to_keep=1)
    for _ in range(steps):
        out = model(ids[:, :1], cache=out.cache, use_cache=True)
    return time.perf_counter() - start


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
    argv = [sys.executable, __file__, *sys.argv[1:], "--worker", spec]
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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(inference_worker(args)))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    report = {"args": vars(args)}
    if "floor" in parts:
        report["floor"] = {
            name: gemm_gflops(getattr(torch, name)) for name in ("float32", "bfloat16")
        }
        print("| matmul (F.linear 2048 x 576 x 1536) | GFLOP/s |\n|---|---:|")
        for name, value in report["floor"].items():
            print(f"| {name} | {value:.1f} |")
    if "train" in parts:
        train_part(build_model(args), args, report)
    if "inference" in parts:
        inference_part(args, report)
    if "compile" in parts:
        compile_part(args, report)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
