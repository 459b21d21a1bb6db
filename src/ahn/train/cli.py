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
    from ahn.train.loop import train

    train(config_from_args(args))
    return 0
