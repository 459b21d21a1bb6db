"""`ahn demo`: train a GDN AHN on the shipped demo base and compare full / sliding / AHN."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ahn.config import MEMORY_TYPES
from ahn.demo import BASE_DIR, TASK_FILE
from ahn.flags import add_dataclass_arguments, from_args, opt

# torch, transformers and the demo's modelling code load in the functions that use them, so
# that `ahn demo-toy --help` is instant.

EVAL_SEED = 10**9  # held-out sequences: seeds far from every training seed


@dataclass
class DemoConfig:
    """One demo run; every field is a flag of `ahn demo` (`eval_samples` -> `--eval-samples`)."""

    output: str = field(default="runs/demo", metadata=opt("directory for the report and AHN"))
    base: str = field(default=str(BASE_DIR), metadata=opt("demo base model directory"))
    memory: str = field(default="gated_deltanet", metadata=opt("AHN rule", choices=MEMORY_TYPES))
    window: int = field(default=32, metadata=opt("recent tokens kept losslessly"))
    sinks: int = field(default=4, metadata=opt("first tokens kept losslessly"))
    steps: int = field(default=300, metadata=opt("AHN training steps"))
    batch_size: int = field(default=16, metadata=opt("sequences per step"))
    lr: float = field(default=3e-3, metadata=opt("peak learning rate of the AHN"))
    eval_samples: int = field(default=256, metadata=opt("held-out sequences"))
    bucket: int = field(default=16, metadata=opt("positions per NLL bucket"))
    seed: int = field(default=42, metadata=opt("seed of the AHN init and training data"))
    threads: int = field(
        default=1, metadata=opt("torch CPU threads; 1 is fastest for this tiny model")
    )

    def __post_init__(self) -> None:
        for name in ("window", "steps", "batch_size", "eval_samples", "bucket", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}={getattr(self, name)} must be >= 1")
        for name in ("sinks", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}={getattr(self, name)} must be >= 0")
        if self.memory not in MEMORY_TYPES:
            raise ValueError(f"--memory={self.memory!r} is not one of {MEMORY_TYPES}")
        if not self.lr > 0:
            raise ValueError(f"--lr={self.lr} must be > 0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, DemoConfig)


def read_task(base: str):
    """The task the base was trained on (stored next to it by `pretrain-demo-base`)."""
    from ahn.demo.tasks import TaskConfig

    path = Path(base) / TASK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {TASK_FILE} in {base}: not a demo base model directory")
    return TaskConfig(**json.loads(path.read_text())["task"])


def train_ahn(model, cfg: DemoConfig, task) -> dict:
    """Self-distil the AHN with `ahn.train` (fixed window); returns the training figures."""
    import ahn
    from ahn.demo.tasks import make_batch
    from ahn.train import TrainConfig, train

    batch = make_batch(cfg.steps * cfg.batch_size, task, seed=cfg.seed)
    records = []
    config = TrainConfig(
        output=str(Path(cfg.output) / "ahn"),
        memory=cfg.memory,
        window=cfg.window,
        sinks=cfg.sinks,
        train_window="fixed",
        seq_len=task.length,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup=0.1,
        weight_decay=0.0,
        save_every=0,
        seed=cfg.seed,
        shuffle_buffer=1,
        device="cpu",
    )
    start = time.perf_counter()
    train(config, model=model, data=batch.input_ids.tolist(), callback=records.append)
    return {
        "steps": cfg.steps,
        "seconds": time.perf_counter() - start,
        "kl": [r["kl"] for r in records],
        "final_kl": records[-1]["kl"],
        "ahn_parameters": sum(p.numel() for _, p in ahn.trainable_parameters(model)),
    }


def run_demo(cfg: DemoConfig) -> dict:
    """Train and evaluate with `cfg.threads` torch threads; returns the report."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run_demo(cfg)
    finally:
        torch.set_num_threads(previous)


def _run_demo(cfg: DemoConfig) -> dict:
    import torch

    import ahn
    from ahn.demo.base import load_base
    from ahn.demo.evaluate import METHODS, evaluate, examples, memory_bill
    from ahn.demo.tasks import make_batch

    torch.manual_seed(cfg.seed)
    task = read_task(cfg.base)
    model, tokenizer = load_base(cfg.base)
    base_parameters = sum(p.numel() for p in model.parameters())
    ahn.augment(model, ahn.AHNConfig(memory=cfg.memory, window=cfg.window, sinks=cfg.sinks))
    print(f"Training a {cfg.memory} AHN on {cfg.base} by self-distillation ({cfg.steps} steps)")
    train = train_ahn(model, cfg, task)
    model.eval()
    print(f"Evaluating full / sliding / ahn on {cfg.eval_samples} held-out sequences")
    held_out = make_batch(cfg.eval_samples, dataclasses.replace(task, extra_queries=0), EVAL_SEED)
    results = evaluate(model, held_out, cfg.window, cfg.sinks, cfg.bucket)
    acc = {m: results[m]["beyond_window_accuracy"] for m in METHODS}
    gap = acc["full"] - acc["sliding"]
    lengths = [task.length * 2**i for i in range(5)]
    return {
        "config": dataclasses.asdict(cfg),
        "task": dataclasses.asdict(task),
        "base": {"path": cfg.base, "parameters": base_parameters},
        "train": train,
        "results": results,
        "recovered_fraction": (acc["ahn"] - acc["sliding"]) / gap if gap > 0 else None,
        "memory_bill": memory_bill(model, lengths, cfg.window, cfg.sinks, cfg.seed),
        "examples": examples(model, tokenizer, held_out, n=3),
    }


def run(args: argparse.Namespace) -> int:
    from ahn.demo.report import (
        breakdown_tables,
        examples_text,
        results_table,
        summary,
        write_report,
    )

    cfg = from_args(DemoConfig, args)
    report = run_demo(cfg)
    paths = write_report(report, Path(cfg.output))
    print()
    print(results_table(report["results"]))
    print()
    print(breakdown_tables(report))
    print()
    print(summary(report))
    print(examples_text(report))
    print("Wrote " + ", ".join(str(p) for p in paths))
    return 0
