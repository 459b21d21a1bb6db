"""`ahn train`: the flags mirror `TrainConfig` field by field."""

from __future__ import annotations

import argparse

from ahn.flags import add_dataclass_arguments, from_args
from ahn.train.config import TrainConfig

REQUIRED = ("base", "data", "output")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, TrainConfig, required=REQUIRED)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return from_args(TrainConfig, args)


def run(args: argparse.Namespace) -> int:
    import sys

    from ahn.train.checkpoint import latest_checkpoint
    from ahn.train.loop import train

    config = config_from_args(args)
    try:
        train(config)
    except KeyboardInterrupt:
        last = latest_checkpoint(config.output)
        where = (
            f"the last checkpoint is {last} (continue with the same flags and --resume)"
            if last
            else "no checkpoint was saved yet (--save-every N saves every N steps)"
        )
        print(f"ahn train: interrupted; {where}", file=sys.stderr)
        return 130
    print(f"[ahn] saved the trained AHN to {config.output} (ahn.load(base, DIR) or --ahn DIR)",
          file=sys.stderr)  # fmt: skip
    return 0
