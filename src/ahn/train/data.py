"""Training data: files or in-memory samples -> a deterministic, resumable stream of global batches.

Every rank reads the same global stream and takes its own slice of each global batch, so the
order does not depend on the number of processes and a resumed run skips exactly what was used.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

TXT_BLOCK_CHARS = 1 << 16


class DataError(ValueError):
    """A malformed sample, reported as `FILE:LINE: reason`."""


@dataclass
class Sample:
    """One training sequence.

    Args:
        input_ids: token ids, at most `seq_len` of them.
        targets: per token, whether it may be predicted (False on non-assistant tokens of
            `messages` data when only assistant tokens are trained on); None means all.
    """

    input_ids: list[int]
    targets: list[bool] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DataPosition:
    """Where the stream stands: `consumed` samples of epoch `epoch` already used."""

    epoch: int = 0
    consumed: int = 0


@dataclass
class Tokenizing:
    """What turns raw records into token ids."""

    tokenizer: object | None
    assistant_only: bool = False
    vocab_size: int | None = None


# ---------------------------------------------------------------- records -> samples


def _ids_from_input_ids(value: object, tok: Tokenizing) -> Sample:
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise ValueError("input_ids must be a list of integers")
    bad = [i for i in value if i < 0 or (tok.vocab_size is not None and i >= tok.vocab_size)]
    if bad:
        raise ValueError(f"token id {bad[0]} is outside [0, vocab_size={tok.vocab_size})")
    return Sample(list(value))


def _ids_from_text(value: object, tok: Tokenizing) -> Sample:
    if not isinstance(value, str):
        raise ValueError(f"text must be a string, got {type(value).__name__}")
    return Sample(_require_tokenizer(tok, "text")(value)["input_ids"])


def _ids_from_messages(value: object, tok: Tokenizing) -> Sample:
    tokenizer = _require_tokenizer(tok, "messages")
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
    )
    if not ok:
        raise ValueError('messages must be a non-empty list of {"role": str, "content": str}')
    text = tokenizer.apply_chat_template(value, tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if not tok.assistant_only:
        return Sample(encoded["input_ids"])
    spans = _assistant_spans(tokenizer, value, text)
    targets = [any(start <= a < end for start, end in spans) for a, _ in encoded["offset_mapping"]]
    return Sample(encoded["input_ids"], targets)


def _assistant_spans(tokenizer, messages: list[dict], text: str) -> list[tuple[int, int]]:
    """Character spans of the assistant replies in the rendered conversation.

    A reply spans from the end of the prompt that asks for it (generation prompt included) to the
    end of the conversation rendered up to it; the template must render prefixes as prefixes.
    """
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = messages[:i]
        prompt = tokenizer.apply_chat_template(head, tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (text.startswith(upto) and upto.startswith(prompt if head else "")):
            raise ValueError(
                "the chat template does not render a conversation's prefixes as prefixes, so "
                "assistant tokens cannot be located; train without --assistant-only"
            )
        spans.append((len(prompt) if head else 0, len(upto)))
    return spans


def _require_tokenizer(tok: Tokenizing, kind: str):
    if tok.tokenizer is None:
        raise ValueError(f'"{kind}" records need a tokenizer; give --base or a tokenizer')
    return tok.tokenizer


# record key -> parser; a record uses the first key it has, in this order
RECORD_FORMATS: dict[str, Callable[[object, Tokenizing], Sample]] = {
    "input_ids": _ids_from_input_ids,
    "text": _ids_from_text,
    "messages": _ids_from_messages,
}


def parse_record(record: object, tok: Tokenizing) -> Sample:
    """Turn one record (`{"text"}`, `{"messages"}`, `{"input_ids"}`, or a list of ids) into ids."""
    if isinstance(record, list):
        record = {"input_ids": record}
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    for key, parse in RECORD_FORMATS.items():
        if key in record:
            return parse(record[key], tok)
    raise ValueError(f"a record needs one of the keys {list(RECORD_FORMATS)}; got {list(record)}")


# ---------------------------------------------------------------- files -> samples


def _read_jsonl(path: Path, tok: Tokenizing, seq_len: int, skip_bad: bool) -> Iterator[Sample]:
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                yield parse_record(json.loads(raw), tok)
            except Exception as err:  # bad json, bad fields, a chat template that fails on it
                message = f"{path}:{number}: {err}"
                if not skip_bad:
                    raise DataError(message + " (use --skip-bad-lines to skip such lines)") from err
                warnings.warn(f"skipping bad line {message}", stacklevel=2)


def _read_txt(path: Path, tok: Tokenizing, seq_len: int, skip_bad: bool) -> Iterator[Sample]:
    """A text file is one long document: cut into consecutive samples of `seq_len` tokens, read
    in blocks of whole lines so that files larger than memory stream."""
    tokenizer = _require_tokenizer(tok, ".txt")
    ids: list[int] = []
    block: list[str] = []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                block.append(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not UTF-8 text ({err.reason})") from err
            if sum(map(len, block)) >= TXT_BLOCK_CHARS:
                ids += tokenizer("".join(block), add_special_tokens=False)["input_ids"]
                block = []
                while len(ids) >= seq_len:
                    yield Sample(ids[:seq_len])
                    ids = ids[seq_len:]
    ids += tokenizer("".join(block), add_special_tokens=False)["input_ids"] if block else []
    for start in range(0, len(ids), seq_len):
        yield Sample(ids[start : start + seq_len])


# file suffix -> reader
FILE_READERS = {".jsonl": _read_jsonl, ".txt": _read_txt}


def data_files(paths: Iterable[str]) -> list[Path]:
    """Expand the `--data` paths (files, or directories of `.jsonl`/`.txt` files), in order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in FILE_READERS)
        elif not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist")
        elif path.suffix not in FILE_READERS:
            raise ValueError(f"data file {path}: unsupported type; use one of {list(FILE_READERS)}")
        else:
            files.append(path)
    if not files:
        raise ValueError(f"no {list(FILE_READERS)} files in {list(paths)}")
    return files


def file_source(
    paths: Iterable[str], tok: Tokenizing, seq_len: int, skip_bad: bool = False
) -> Callable[[], Iterator[Sample]]:
    """A replayable source: each call reads the files again from the start."""
    files = data_files(paths)

    def read() -> Iterator[Sample]:
        for path in files:
            yield from FILE_READERS[path.suffix](path, tok, seq_len, skip_bad)

    return read


def memory_source(data: Iterable, tok: Tokenizing) -> Callable[[], Iterator[Sample]]:
    """A source over in-memory data: token-id lists (or 1-D tensors), records or `Sample`s.

    A list (or any re-iterable) is replayed every epoch; a one-shot iterator serves one pass.
    """

    def read() -> Iterator[Sample]:
        for index, item in enumerate(data):
            item = item.tolist() if hasattr(item, "tolist") else item  # tensors, arrays
            try:
                yield item if isinstance(item, Sample) else parse_record(item, tok)
            except ValueError as err:
                raise DataError(f"data[{index}]: {err}") from err

    return read


# ---------------------------------------------------------------- samples -> global batches


def _shuffled(samples: Iterator[Sample], buffer_size: int, rng: np.random.Generator):
    """Streaming shuffle: hold `buffer_size` samples, emit a random one as each new one arrives."""
    buffer: list[Sample] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        j = int(rng.integers(buffer_size))
        yield buffer[j]
        buffer[j] = sample
    rng.shuffle(buffer)
    yield from buffer


@dataclass
class SampleStream:
    """Epochs of truncated, length-filtered, shuffled samples; epoch `e` is a pure function of
    `(source, seed, e)`."""

    source: Callable[[], Iterator[Sample]]
    seq_len: int
    min_len: int = 0
    seed: int = 0
    shuffle_buffer: int = 10000

    def epoch(self, epoch: int) -> Iterator[Sample]:
        kept = (
            Sample(s.input_ids[: self.seq_len], s.targets and s.targets[: self.seq_len])
            for s in self.source()
            if len(s) >= max(self.min_len, 2)
        )
        yield from _shuffled(kept, self.shuffle_buffer, np.random.default_rng([self.seed, epoch]))

    def global_batches(
        self, size: int, start: DataPosition
    ) -> Iterator[tuple[list[Sample], DataPosition]]:
        """Yield `(batch of size samples, position after it)` forever, from `start` on."""
        epoch, consumed = start.epoch, start.consumed
        batch: list[Sample] = []
        while True:
            produced = 0
            for index, sample in enumerate(self.epoch(epoch)):
                produced += 1
                if index < consumed:
                    continue
                batch.append(sample)
                if len(batch) == size:
                    yield batch, DataPosition(epoch, index + 1)
                    batch = []
            if produced == 0:
                raise ValueError(
                    f"the data gave no sample of >= {max(self.min_len, 2)} tokens in epoch "
                    f"{epoch} (a one-shot iterator serves one epoch only: pass a list)"
                )
            epoch, consumed = epoch + 1, 0


def rank_micro_batches(
    batch: list[Sample], rank: int, world: int, grad_accum: int
) -> list[list[Sample]]:
    """This rank's micro-batches of a global batch of `world * grad_accum * b` samples."""
    per_rank = len(batch) // world
    mine = batch[rank * per_rank : (rank + 1) * per_rank]
    b = per_rank // grad_accum
    return [mine[m * b : (m + 1) * b] for m in range(grad_accum)]


def collate(samples: list[Sample], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a micro-batch; causal models never look at the padding of a real token.

    Returns:
        input_ids `[B, T]` (long) and targets `[B, T]` (bool: the token may be predicted).
    """
    length = max(map(len, samples))
    input_ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    targets = torch.zeros((len(samples), length), dtype=torch.bool)
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample)] = torch.tensor(sample.input_ids)
        targets[row, : len(sample)] = torch.tensor(sample.targets or [True] * len(sample))
    return input_ids, targets
