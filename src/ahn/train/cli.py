"""`ahn train`: the flags mirror `TrainConfig` field by field."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from ahn.train.config import TrainConfig

REQUIRED = ("base", "data", "output")
# field type (as written in the dataclass) -> argparse keywords
ARG_TYPES: dict[str, dict] = {
    "str": {"type": str},
    "str | None": {"type": str},
    "int": {"type": int},
    "float": {"type": float},
    "bool": {"action": "store_true"},
    "list[str]": {"type": str, "nargs": "+"},
    "list[int] | None": {"type": int, "nargs": "+"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(TrainConfig):
        kwargs = dict(ARG_TYPES[str(field.type)])
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        default = _default(field)
        if kwargs.get("action") != "store_true":
            kwargs["default"] = default
        help_text = field.metadata["help"]
        if field.name not in REQUIRED and default not in (None, False, []):
            help_text += f" (default: {default})"
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            required=field.name in REQUIRED,
            help=help_text,
            **kwargs,
        )


def _default(field: dataclasses.Field) -> typing.Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def run(args: argparse.Namespace) -> int:
    from ahn.train.loop import train

    train(config_from_args(args))
    return 0
