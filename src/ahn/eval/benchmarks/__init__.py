"""Real long-context benchmarks read from local files (downloaded once by the user).

Task names are "<benchmark>:<dataset>", e.g. "longbench:hotpotqa", "longbench_e:trec",
"lveval:factrecall_en_64k", "infinitebench:passkey". `data` is the file itself or the folder
holding the benchmark's official file name for the dataset. The evaluation length is the
benchmark's truncation length (middle truncation, as the official code does).
"""

from __future__ import annotations

import json
from pathlib import Path

from ahn.eval.benchmarks import infinitebench, longbench, lveval
from ahn.eval.benchmarks.common import Benchmark

BENCHMARKS: dict[str, Benchmark] = {
    "longbench": longbench.LONGBENCH,
    "longbench_e": longbench.LONGBENCH_E,
    "lveval": lveval.LVEVAL,
    "infinitebench": infinitebench.INFINITEBENCH,
}


def _split(task: str):
    prefix, _, dataset = task.partition(":")
    return BENCHMARKS.get(prefix), dataset


def is_benchmark(task: str) -> bool:
    """Whether `task` names a dataset of a benchmark, e.g. "longbench:hotpotqa"."""
    bench, dataset = _split(task)
    return bench is not None and bench.knows(dataset)


def names() -> list[str]:
    """The valid task names, per benchmark, for messages."""
    return [f"{prefix}:<{'|'.join(b.datasets())}>" for prefix, b in BENCHMARKS.items()]


def expand(task: str, data: str | Path | None) -> list[str]:
    """ "<benchmark>:all" -> the benchmark's datasets whose files are in the folder `data`;
    any other task unchanged."""
    bench, dataset = _split(task)
    if bench is None or dataset != "all":
        return [task]
    if data is None or not Path(data).is_dir():
        raise ValueError(f"{task} needs data=FOLDER holding the benchmark's files")
    found = [d for d in bench.candidates() if (Path(data) / bench.file_name(d)).is_file()]
    if not found:
        raise FileNotFoundError(f"{task}: no file of the benchmark in {data}")
    prefix = task.partition(":")[0]
    return [f"{prefix}:{d}" for d in found]


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    """The first `limit` (all when None) non-empty json lines of `path`."""
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
            if limit is not None and len(records) == limit:
                break
    return records


def load(
    task: str,
    data: str | Path,
    tokenizer,
    length: int,
    limit: int | None = None,
    chat: bool | None = None,
):
    """`Sample`s of a benchmark dataset, prompts built and truncated to `length` tokens.

    Args:
        task: "<benchmark>:<dataset>".
        data: the jsonl file, or a folder containing the official file name.
        tokenizer: the model's tokenizer.
        length: the truncation length (max prompt tokens).
        limit: read at most this many records.
        chat: wrap prompts in the tokenizer's chat template (`None`: when it has one), except
            where the benchmark's code never does (LongBench's few-shot and code tasks).
    """
    bench, dataset = _split(task)
    if bench is None or not bench.knows(dataset):
        raise ValueError(f"unknown benchmark task {task!r}; valid: {names()}")
    path = Path(data)
    if path.is_dir():
        path = path / bench.file_name(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"{task}: no file {path} (expected {bench.file_name(dataset)})")
    records = read_jsonl(path, limit)
    return [
        bench.sample(task, dataset, i, r, tokenizer, length, chat) for i, r in enumerate(records)
    ]


def score(sample, new_ids: list[int], tokenizer) -> tuple[float, str]:
    """The official score in [0, 1] of one generation, and the prediction text."""
    bench, dataset = _split(sample.task)
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    return bench.score(dataset, text, sample), text
