"""`ahn eval`: full / sliding / ahn side by side on synthetic tasks, benchmarks and NLL."""

from __future__ import annotations

import argparse
import sys

from ahn.cli.generate import add_model_arguments, load_base
from ahn.eval.config import EvalConfig
from ahn.flags import add_dataclass_arguments, from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, modes=())
    parser.add_argument("--output", required=True, help="output directory")
    add_dataclass_arguments(parser, EvalConfig, required=("tasks",))


def load_model(base: str, ahn_dir: str | None, window, sinks, device: str, dtype: str,
               compile: bool = False):  # noqa: A002  # fmt: skip
    """Tokenizer and augmented model: `ahn.load` when `ahn_dir` is given, else a fresh
    (untrained, so "ahn" equals "sliding") augmentation with the given window and sinks."""
    import ahn
    from ahn.checkpoint import ahn_directory

    ahn_dir = ahn_dir and str(ahn_directory(ahn_dir))  # a wrong --ahn fails before the base loads
    model, tokenizer = load_base(base, dtype, device)
    if ahn_dir:
        model = ahn.load(model, ahn_dir)
    else:
        sizes = {k: v for k, v in (("window", window), ("sinks", sinks)) if v is not None}
        model = ahn.augment(model, ahn.AHNConfig(**sizes))
    if compile:
        ahn.compile(model)
    return tokenizer, model.eval()


def run(args: argparse.Namespace) -> int:
    from ahn.eval.runner import evaluate

    config = from_args(EvalConfig, args)
    if args.ahn is None and "ahn" in config.methods:
        print(
            "ahn eval: no --ahn checkpoint: the fresh AHN has a zero output projection, "
            "so 'ahn' computes exactly what 'sliding' does",
            file=sys.stderr,
        )
    tokenizer, model = load_model(
        args.base, args.ahn, args.window, args.sinks, args.device, args.dtype, args.compile
    )
    results = evaluate(model, tokenizer, config, args.output)
    from ahn.eval.report import markdown

    print(markdown(results))
    return 0
