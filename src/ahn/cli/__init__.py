"""The `ahn` command line. Each subcommand lives in its own module, imported only when used:
commands that only parse flags and call the library are the modules of this package
(`generate`, `read`, `ask`, `export`, `train`, `eval`); a library module that is itself a
command (`ahn.eval.flops`, `ahn.bases`, `ahn.corpus`, `ahn.demo.real`, `ahn.demo.toy`,
`ahn.demo.pretrain`) ends with its `add_arguments` and `run`. `COMMANDS` names them all.

Bad input ends in one line naming the bad value and exit code 2; `AHN_DEBUG=1` shows the
traceback instead."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ahn.errors import debugging, error_line, one_line

# name -> (module, help). The module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("ahn.cli.generate", "stream an answer with constant-memory AHN generation"),
    "read": ("ahn.cli.read", "read a document once into a constant-size memory file"),
    "ask": ("ahn.cli.ask", "answer questions from a memory file without re-reading the document"),
    "export": ("ahn.cli.export", "write an AHN in the official ByteDance checkpoint layout"),
    "flops": ("ahn.eval.flops", "FLOPs and cache bytes of full attention vs AHN from a config"),
    "eval": ("ahn.cli.eval", "full / sliding / AHN side by side on long-context tasks"),
    "train": ("ahn.cli.train", "train an AHN for a base model by self-distillation"),
    "profile-heads": (
        "ahn.eval.heads",
        "measure which heads retrieve far facts: the salient store's head profile",
    ),
    "demo": (
        "ahn.demo.real",
        "the shipped AHN on a real LLM: full / sliding / AHN on held-out text",
    ),
    "demo-toy": (
        "ahn.demo.toy",
        "train an AHN on the shipped toy base in minutes; compare methods",
    ),
    "fetch-base": ("ahn.bases", "download and convert a real base model into the local cache"),
    "corpus": ("ahn.corpus", "training data from the Python standard library's docs and sources"),
    "pretrain-demo-base": ("ahn.demo.pretrain", "train the shipped demo base model from scratch"),
}


class OneLineParser(argparse.ArgumentParser):
    """Usage errors on one line (`ahn eval: error: argument --lengths: ...`), not the whole
    usage first: `--help` has it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `ahn` parser; only `command`'s module is imported (for its flags), so `ahn --help`
    and `ahn COMMAND --help` load nothing heavy that the command does not need."""
    parser = OneLineParser(prog="ahn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=OneLineParser)  # fmt: skip
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        if name == command:
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(command).parse_args(argv)
    module = importlib.import_module(args._module)
    python_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return int(module.run(args) or 0)
    except (ValueError, OSError) as err:  # bad input: one line (AHN_DEBUG=1: the traceback)
        if debugging():
            raise
        return error_line(f"ahn {args.command}", err)
    except KeyboardInterrupt:
        print(f"ahn {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = python_format


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as `ahn: warning: ...` lines, without the source path and line (AHN_DEBUG=1
    keeps Python's format)."""
    if debugging():
        return _PYTHON_FORMAT(message, category, filename, lineno, line)
    return f"ahn: warning: {one_line(message)}\n"


_PYTHON_FORMAT = warnings.formatwarning


if __name__ == "__main__":
    sys.exit(main())
