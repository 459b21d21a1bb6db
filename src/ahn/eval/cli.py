"""`ahn eval`: full / sliding / ahn side by side on synthetic tasks, benchmarks and NLL."""

from __future__ import annotations

import argparse
import sys

from ahn import dtypes
from ahn.config import MODES
from ahn.eval.flops import parse_length
from ahn.generate import add_model_arguments, device_of

CHAT = {"auto": None, "on": True, "off": False}


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, mode=False)
    parser.add_argument(
        "--task",
        required=True,
        help="comma-separated: synthetic tasks (passkey, niah_*, vt, kv_retrieval, copy), the "
        "groups ruler / ruler_noise, nll, or <benchmark>:<dataset> / <benchmark>:all with "
        "benchmark longbench, longbench_e, lveval, infinitebench",
    )
    parser.add_argument("--data", help="documents (nll), benchmark files, or essay haystack")
    parser.add_argument("--lengths", default="4k", help="e.g. 4k,16k,32768")
    parser.add_argument("--methods", default=",".join(MODES), help="subset of full,sliding,ahn")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--window", type=int, help="override the lossless window")
    parser.add_argument("--sinks", type=int, help="override the number of sinks")
    parser.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="needle depths")
    parser.add_argument(
        "--samples", type=int, default=1, help="synthetic prompts per length and depth"
    )
    parser.add_argument(
        "--limit", type=int, help="at most N items per nll length / benchmark dataset (all)"
    )
    parser.add_argument("--max-new-tokens", type=int, help="override the generation length")
    parser.add_argument("--nll-bucket", type=int, help="positions per NLL bucket")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--chat",
        choices=CHAT,
        default="auto",
        help="chat template (auto: if the tokenizer has one)",
    )


def load_model(base: str, ahn_dir: str | None, window, sinks, device: str, dtype: str):
    """Tokenizer and augmented model: `ahn.load` when `ahn_dir` is given, else a fresh
    (untrained, so "ahn" equals "sliding") augmentation with the given window and sinks."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import ahn
    from ahn.bases import resolve

    base = resolve(base)
    device = str(device_of(device))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtypes.resolve(dtype, device)).to(
        device
    )
    if ahn_dir:
        model = ahn.load(model, ahn_dir)
    else:
        sizes = {k: v for k, v in (("window", window), ("sinks", sinks)) if v is not None}
        model = ahn.augment(model, ahn.AHNConfig(**sizes))
    return tokenizer, model.eval()


def run(args: argparse.Namespace) -> int:
    from ahn.eval.runner import EvalConfig, evaluate

    config = EvalConfig(
        tasks=_csv(args.task),
        lengths=[parse_length(n) for n in _csv(args.lengths)],
        methods=_csv(args.methods),
        depths=[float(d) for d in _csv(args.depths)],
        samples=args.samples,
        limit=args.limit,
        seed=args.seed,
        window=args.window,
        sinks=args.sinks,
        data=args.data,
        max_new_tokens=args.max_new_tokens,
        nll_bucket=args.nll_bucket,
        chat=CHAT[args.chat],
    )
    if args.ahn is None and "ahn" in config.methods:
        print(
            "ahn eval: no --ahn checkpoint: the fresh AHN has a zero output projection, "
            "so 'ahn' computes exactly what 'sliding' does",
            file=sys.stderr,
        )
    tokenizer, model = load_model(
        args.base, args.ahn, args.window, args.sinks, args.device, args.dtype
    )
    results = evaluate(model, tokenizer, config, args.output)
    from ahn.eval.report import markdown

    print(markdown(results))
    return 0
