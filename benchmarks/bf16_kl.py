"""Does a bfloat16 base train the AHN as well as a float32 one? The demo model's AHN trained
three times, the same steps and data: float32 base (seed 42), float32 base (seed 43, for the
run-to-run noise), bfloat16 base (seed 42; the AHN weights, states, gates and loss stay fp32).
Each trained AHN is then scored on held-out sequences with the float32 base: mean per-token
KL(full || ahn) beyond the window, next to the sliding window's.

    python benchmarks/bf16_kl.py --steps 150
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

EVAL_SEED = 10**9


def train_once(dtype_name: str, seed: int, args, task) -> tuple[dict, float]:
    import torch

    import ahn
    from ahn.demo.base import load_base
    from ahn.demo.tasks import make_batch
    from ahn.train import TrainConfig, train

    model, _ = load_base()
    model.to(getattr(torch, dtype_name))
    ahn.augment(model, ahn.AHNConfig(window=args.window, sinks=args.sinks))
    torch.manual_seed(seed)
    data = make_batch(args.steps * args.batch_size, task, seed=seed).input_ids.tolist()
    config = TrainConfig(output=tempfile.mkdtemp(), window=args.window, sinks=args.sinks,
                         train_window="fixed", seq_len=task.length, steps=args.steps,
                         batch_size=args.batch_size, lr=3e-3, warmup=0.1, weight_decay=0.0,
                         save_every=0, seed=seed, shuffle_buffer=1, device="cpu")  # fmt: skip
    start = time.perf_counter()
    train(config, model=model, data=data)
    seconds = time.perf_counter() - start
    return {n: p.detach().float().clone() for n, p in ahn.trainable_parameters(model)}, seconds


def held_out_kl(weights: dict, args, task) -> dict:
    import torch

    import ahn
    from ahn.demo.base import load_base
    from ahn.demo.tasks import make_batch
    from ahn.train import evaluate_kl

    model, _ = load_base()
    ahn.augment(model, ahn.AHNConfig(window=args.window, sinks=args.sinks))
    with torch.no_grad():
        for name, p in ahn.trainable_parameters(model):
            p.copy_(weights[name])
    batch = make_batch(args.eval_samples, dataclasses.replace(task, extra_queries=0), EVAL_SEED)
    return evaluate_kl(model, batch.input_ids.tolist(), args.sinks, args.window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--sinks", type=int, default=4)
    parser.add_argument("--eval-samples", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from ahn.demo import BASE_DIR
    from ahn.demo.toy import read_task

    torch.set_num_threads(args.threads)
    task = read_task(str(BASE_DIR))
    print("| run | train s | held-out KL ahn | held-out KL sliding |\n|---|---:|---:|---:|")
    for dtype_name, seed in (("float32", 42), ("float32", 43), ("bfloat16", 42)):
        weights, seconds = train_once(dtype_name, seed, args, task)
        kl = held_out_kl(weights, args, task)
        print(f"| {dtype_name} base, seed {seed} | {seconds:.0f} | {kl['ahn']:.4f} | "
              f"{kl['sliding']:.4f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
