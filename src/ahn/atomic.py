"""Atomic writes: nothing is ever left half-written under its final name.

A file is written next to its target and renamed over it (`os.replace` is atomic on one file
system); a directory is assembled in a temporary sibling and renamed into place. A killed
process leaves at most a hidden temporary, which no reader takes for a finished result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically."""
    path = Path(path)
    with temp_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | os.PathLike, data, **dump) -> Path:
    """`json.dumps(data, indent=2, **dump)` written to `path` atomically."""
    return write_text(path, json.dumps(data, indent=2, **dump) + "\n")


@contextlib.contextmanager
def temp_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary file name beside `path`, renamed over `path` when the block ends without an
    error (for writers that take a file name, e.g. `savefig`, `save_file`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def directory(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary directory beside `path`; when the block ends without an error it
    replaces `path` as a whole (an older `path` is removed only after the new one is in place).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            file.chmod(0o755 if file.is_dir() else 0o644)
        tmp.chmod(0o755)
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename directory `src` to `dst`, replacing an existing `dst`."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
