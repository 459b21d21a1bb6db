"""`ahn read`: read a document (or each document of a JSONL file) once into a memory file."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from ahn.cli.generate import add_model_arguments
from ahn.config import MODES

# A memory is bounded: every mode but full, which keeps every token.
MEMORY_MODES = tuple(m for m in MODES if m != "full")

MARK = "\x00AHN-QUESTION\x00"
SUFFIX = ".ahnmem"


def add_arguments(parser) -> None:
    add_model_arguments(parser, modes=MEMORY_MODES)
    parser.add_argument("--file", required=True, help="a text file, or a .jsonl of documents")
    parser.add_argument(
        "--output", required=True, help=f"memory file ({SUFFIX}); a directory for a .jsonl"
    )
    parser.add_argument(
        "--chat", action="store_true", help="the document opens a user turn of the chat template"
    )
    parser.add_argument("--text-field", default="text", help="JSONL: the document's field")
    parser.add_argument("--id-field", default="name", help="JSONL: the field naming the file")


def document_prompt(tokenizer, document: str, chat: bool):
    """([1, T] ids to read, prompt) where `prompt` says how `ahn ask` wraps a question so that
    memory + question are the ids of one prompt: the chat template's user turn holding the
    document, a blank line and the question, then the assistant's header; or, without chat,
    the document, a blank line and the question."""
    if not chat:
        ids = tokenizer(document, return_tensors="pt").input_ids
        return ids, {"chat": False, "before": "\n\n", "after": ""}
    from ahn.eval.sample import chat_prompt

    head, found, tail = chat_prompt(tokenizer, f"{document}\n\n{MARK}").partition(MARK)
    if not found:
        raise ValueError("the chat template does not keep the user's text verbatim")
    ids = tokenizer(head, add_special_tokens=False, return_tensors="pt").input_ids
    return ids, {"chat": True, "before": "", "after": tail}


def documents(file: Path, text_field: str, id_field: str):
    """(name, text) of a text file, or of each line of a .jsonl file."""
    if file.suffix != ".jsonl":
        yield file.stem, file.read_text()
        return
    for n, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}:{n}: not JSON ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise ValueError(f"{file}:{n}: no string field {text_field!r}")
        name = str(record.get(id_field, f"doc-{n}"))
        yield re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or f"doc-{n}", record[text_field]


def run(args) -> int:
    import ahn
    from ahn import memfile

    file = Path(args.file)
    if not file.is_file():
        raise FileNotFoundError(f"--file {file} does not exist")
    model, tokenizer, mode = load_for_memory(args)
    many = file.suffix == ".jsonl"
    current = memfile.identity(model, tokenizer)
    for name, text in documents(file, args.text_field, args.id_field):
        out = Path(args.output) / f"{name}{SUFFIX}" if many else Path(args.output)
        if many and out.exists():  # written atomically: an existing file is complete
            memfile.check_compatible(memfile.read_metadata(out), current, out)
            print(f"[ahn] {out}: already read, skipped", file=sys.stderr)
            continue
        ids, prompt = document_prompt(tokenizer, text, args.chat)
        start = time.perf_counter()
        cache = ahn.read(model, ids, progress=True)
        memfile.save_memory(cache, out, model, tokenizer, prompt=prompt)
        print(
            f"[ahn] {out}: {ids.shape[1]} tokens read in {time.perf_counter() - start:.1f} s, "
            f"mode={mode}, file {out.stat().st_size / 2**20:.2f} MiB",
            file=sys.stderr,
        )
    return 0


def load_for_memory(args):
    from ahn.cli.generate import load_model

    if not args.ahn:
        raise ValueError("a memory needs --ahn DIR (the AHN that compresses the document)")
    return load_model(args)
