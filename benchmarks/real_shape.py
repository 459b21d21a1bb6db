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
import json
import sys

from real_shape_compile import compile_part
from real_shape_inference import inference_part, inference_worker
from real_shape_train import train_part
from shape import METHODS, build_model, gemm_gflops


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
    parser.add_argument("--salient-heads", help="ahn+store: a head profile (profile-heads json)")
    parser.add_argument("--salient-share", default="head", help="ahn+store: choice sharing")
    parser.add_argument("--layers", type=int, help="fewer layers (a quick smoke run)")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the inference profile")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # method:length[:profile]
    return parser.parse_args(argv)


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
