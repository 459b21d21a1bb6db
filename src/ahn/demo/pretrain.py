"""`ahn pretrain-demo-base`: train the demo base model from scratch on CPU and save it."""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from ahn.demo.base import (
    BASE_DIR,
    PretrainConfig,
    answer_accuracy,
    pretrain,
    save_base,
    sliding_mask,
)
from ahn.demo.tasks import TaskConfig, make_batch
from ahn.flags import add_dataclass_arguments, from_args

CHECK_SEED = 2 * 10**9  # sequences for the long-range check, disjoint from training seeds
DEMO_WINDOW, DEMO_SINKS = 32, 4
TRAIN_EXTRA_QUERIES = 4  # per training sequence, besides the final query


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=str(BASE_DIR), help="model directory to write")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (results depend on it)"
    )
    add_dataclass_arguments(parser, PretrainConfig)
    parser.add_argument("--check-samples", type=int, default=256, help="held-out check sequences")


def long_range_check(model, task: TaskConfig, samples: int) -> dict:
    """Accuracy on queried values with full attention and with the demo's sinks + window."""
    batch = make_batch(samples, dataclasses.replace(task, extra_queries=0), seed=CHECK_SEED)
    mask = sliding_mask(task.length, DEMO_WINDOW, DEMO_SINKS)
    return {
        "samples": samples,
        "window": DEMO_WINDOW,
        "sinks": DEMO_SINKS,
        "full_accuracy": answer_accuracy(model, batch),
        "sliding_accuracy": answer_accuracy(model, batch, mask),
    }


def run(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads={args.threads} must be >= 1")
    cfg = from_args(PretrainConfig, args)
    task = TaskConfig(extra_queries=TRAIN_EXTRA_QUERIES)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        start = time.perf_counter()
        model = pretrain(cfg, task)
        seconds = time.perf_counter() - start
        check = long_range_check(model, task, args.check_samples)
    finally:
        torch.set_num_threads(previous)
    print(f"pretraining took {seconds:.0f} s on {args.threads} threads; {check}")
    info = {
        "task": dataclasses.asdict(task),
        "pretrain": dataclasses.asdict(cfg),
        "threads": args.threads,
        "seconds": seconds,
        "check": check,
    }
    print(f"wrote {save_base(model, args.output, info)}")
    return 0
