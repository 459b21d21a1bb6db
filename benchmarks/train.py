"""Training-step throughput and peak memory of AHN self-distillation on a small model.

For each sequence length, three cases each run in a fresh process (so peak RSS is theirs alone):
  base     forward + backward of the unmodified model (full attention) with the CE loss
  student  forward + backward of the student ("ahn" mode) with the CE loss
  train    one whole `ahn.train` step: teacher forward, student forward + backward, chunked KL,
           AdamW update
The overheads are the times relative to `base`.

    python benchmarks/train.py                       # seq-len 1k / 4k / 16k on CPU
    python benchmarks/train.py --seq-lens 1024 4096 --device cuda --json runs/bench_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import peak_rss_bytes

CASES = ("base", "student", "train")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--memory", default="gated_deltanet")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--sinks", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_model(args):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import ahn

    torch.manual_seed(42)
    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(args.seq_lens + [args.seq_len or 0]),
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config).to(args.device).eval()
    cfg = ahn.AHNConfig(memory=args.memory, window=args.window, sinks=args.sinks)
    return ahn.augment(model, cfg)


def base_step(model, input_ids):
    """Full attention forward + backward (to the input embeddings: the base is frozen)."""
    import ahn
    from ahn.train.loss import distill_sums, loss_positions

    positions = loss_positions(torch_ones_like(input_ids), 0, 0)
    with ahn.mode(model, "full"):
        embeds = model.model.embed_tokens(input_ids).detach().requires_grad_()
        hidden = model.model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        distill_sums(model.lm_head, hidden, None, input_ids, positions)[1].backward()


def student_step(model, input_ids):
    """ "ahn" mode forward + backward (gradients reach the AHN parameters)."""
    import ahn
    from ahn.train.loss import distill_sums, loss_positions

    positions = loss_positions(torch_ones_like(input_ids), 0, 0)
    with ahn.mode(model, "ahn"):
        hidden = model.model(input_ids=input_ids, use_cache=False).last_hidden_state
        distill_sums(model.lm_head, hidden, None, input_ids, positions)[1].backward()
    model.zero_grad(set_to_none=True)


def torch_ones_like(input_ids):
    import torch

    return torch.ones_like(input_ids, dtype=torch.bool)


def make_train_step(model, args):
    import ahn
    from ahn.train.config import TrainConfig
    from ahn.train.data import Sample
    from ahn.train.distributed import DistEnv
    from ahn.train.loop import build_optimizer, train_step

    config = TrainConfig(
        output=tempfile.mkdtemp(),
        seq_len=args.seq_len,
        train_window="fixed",
        window=args.window,
        sinks=args.sinks,
        memory=args.memory,
        steps=args.repeats + 1,
    )
    named = ahn.trainable_parameters(model)
    optimizer = build_optimizer(named, config)
    env = DistEnv(device=model.lm_head.weight.device)
    params = [p for _, p in named]
    counter = iter(range(10**9))

    def step(model, input_ids):
        batch = [Sample(input_ids[0].tolist())]
        train_step(model, optimizer, params, batch, next(counter), config, env)

    return step


def run_worker(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    input_ids = torch.randint(0, args.vocab, (1, args.seq_len), device=args.device)
    step = {"base": base_step, "student": student_step}.get(args.worker)
    step = step or make_train_step(model, args)
    seconds = []
    for _ in range(args.repeats + 1):
        sync(args.device)
        start = time.perf_counter()
        step(model, input_ids)
        sync(args.device)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds[1:])
    cuda = args.device.startswith("cuda")
    return {
        "case": args.worker,
        "seq_len": args.seq_len,
        "seconds": median,
        "tokens_per_s": args.seq_len / median,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def measure(args, case: str, seq_len: int) -> dict:
    argv = [sys.executable, __file__, *sys.argv[1:], "--worker", case, "--seq-len", str(seq_len)]
    done = subprocess.run(argv, capture_output=True, text=True, env=os.environ)
    if done.returncode != 0:
        return {"case": case, "seq_len": seq_len, "error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0
    rows = []
    print(f"{'seq_len':>8} {'case':>8} {'tok/s':>9} {'s/step':>8} {'x base':>7} {'RSS MB':>8}")
    for seq_len in args.seq_lens:
        base_seconds = None
        for case in CASES:
            row = measure(args, case, seq_len)
            rows.append(row)
            if "error" in row:
                print(f"{seq_len:>8} {case:>8} failed: {row['error']}")
                continue
            base_seconds = base_seconds or (row["seconds"] if case == "base" else None)
            row["overhead_vs_base"] = row["seconds"] / base_seconds if base_seconds else None
            ratio = f"{row['overhead_vs_base']:.2f}" if base_seconds else "-"
            print(
                f"{seq_len:>8} {case:>8} {row['tokens_per_s']:>9.0f} {row['seconds']:>8.3f} "
                f"{ratio:>7} {row['peak_rss_mb']:>8.0f}",
                flush=True,
            )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
