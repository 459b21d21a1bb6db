"""`real_shape.py --parts train`: one `ahn.train` step against one teacher forward and the
matmul floor, then where the step's time goes."""

from __future__ import annotations

import statistics
import tempfile
import time

from shape import gemm_gflops


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
