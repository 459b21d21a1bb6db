"""What the benchmark loaders share: the Benchmark protocol, middle truncation, make_sample."""

from __future__ import annotations

from typing import Protocol

from ahn.eval.sample import Sample


class Benchmark(Protocol):
    """What `ahn.eval.benchmarks` needs from one benchmark (one object per benchmark)."""

    def knows(self, dataset: str) -> bool:
        """Whether `dataset` is one of its datasets (with its length level if it has levels)."""

    def datasets(self) -> list[str]:
        """Its dataset names, for messages."""

    def candidates(self) -> list[str]:
        """Every dataset name `knows` accepts (length levels expanded)."""

    def file_name(self, dataset: str) -> str:
        """The official file name of `dataset` (looked up in the data folder)."""

    def sample(self, task, dataset, index, record, tokenizer, length, chat_template=None):
        """The `Sample` of one record: official prompt, truncated to `length` tokens."""

    def score(self, dataset: str, prediction: str, sample: Sample) -> float:
        """The official score of one prediction, in [0, 1]."""


def truncate_middle(tokenizer, prompt: str, max_length: int) -> str:
    """LongBench / LV-Eval: keep the first and last `int(max_length / 2)` tokens, decoded."""
    ids = tokenizer.encode(prompt)
    if len(ids) <= max_length:
        return prompt
    half = int(max_length / 2)
    return tokenizer.decode(ids[:half], skip_special_tokens=True) + tokenizer.decode(
        ids[-half:], skip_special_tokens=True
    )


def make_sample(task, index, length, prompt, tokenizer, answers, max_new_tokens, meta) -> Sample:
    """A benchmark `Sample`: the tokenized prompt and the answers as strings."""
    return Sample(
        task=task,
        index=index,
        length=length,
        depth=None,
        input_ids=list(tokenizer.encode(prompt)),
        answers=[str(a) for a in answers],
        max_new_tokens=max_new_tokens,
        metric=task,
        prompt=None,
        meta=meta,
    )
