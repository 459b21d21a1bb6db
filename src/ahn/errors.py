"""How the commands (`ahn`, `ahn-lm-eval`) end on bad input: one line naming the bad value, no
traceback unless `AHN_DEBUG` is set. Imports nothing of ours, so any room may use it."""

from __future__ import annotations

import os
import sys


def debugging() -> bool:
    """`AHN_DEBUG` is set: show tracebacks and Python's warning format."""
    return bool(os.environ.get("AHN_DEBUG"))


def one_line(text) -> str:
    return " ".join(str(text).split())


def error_line(prog: str, err: Exception) -> int:
    """Print `PROG: error: ...` on one line to stderr; returns the exit code for bad input, 2."""
    print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
    return 2
