"""The one way the CLI turns a config dataclass into flags: each field is a flag
(`seq_len` -> `--seq-len`), its `help` and `choices` from `opt(...)` metadata, its type and
default from the field. `opt(..., parse=fn)` reads the flag's text with `fn` (e.g. "4k,16k" ->
[4096, 16384]); `opt(..., flag="task")` names the flag otherwise than the field. Imports no
torch (every `--help` stays instant)."""

from __future__ import annotations

import argparse
import dataclasses
import typing

# field type, as written in the dataclass -> argparse keywords
ARG_TYPES: dict[str, dict] = {
    "str": {"type": str},
    "str | None": {"type": str},
    "int": {"type": int},
    "int | None": {"type": int},
    "float": {"type": float},
    "bool": {"action": "store_true"},
    "list[str]": {"type": str, "nargs": "+"},
    "list[int] | None": {"type": int, "nargs": "+"},
}


# --compile, on every command that runs a model (one text for the CLI and the config fields)
COMPILE_HELP = "torch.compile the memory's small ops (ahn.compile; measured in docs/benchmarks.md)"


def opt(help_text: str, **extra) -> dict:
    """Field metadata: the flag's help text (and argparse extras such as `choices`)."""
    return {"help": help_text, **extra}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, required=()) -> None:
    """One flag per field of dataclass `cls`; fields named in `required` must be given."""
    for field in dataclasses.fields(cls):
        kind = str(field.type)
        meta = field.metadata
        if "parse" in meta:
            kwargs = {"type": _reader(meta["parse"])}
        elif kind in ARG_TYPES:
            kwargs = dict(ARG_TYPES[kind])
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no flag for type {kind!r}")
        kwargs.update({k: meta[k] for k in ("choices", "metavar") if k in meta})
        default = default_of(field)
        if kwargs.get("action") != "store_true":
            kwargs["default"] = default
        help_text = meta.get("help", "")
        if field.name not in required and default not in (None, False, []):
            help_text += f" (default: {default})"
        parser.add_argument(
            "--" + meta.get("flag", field.name).replace("_", "-"),
            dest=field.name,
            required=field.name in required,
            help=help_text.strip() or None,
            **kwargs,
        )


def _reader(parse):
    """argparse `type=`: its ValueError message becomes the usage error's text."""

    def read(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    read.__name__ = parse.__name__
    return read


def default_of(field: dataclasses.Field) -> typing.Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def from_args(cls, args: argparse.Namespace):
    """The `cls` instance of parsed flags (its `__post_init__` checks the values)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
