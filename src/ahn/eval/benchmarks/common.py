"""What the benchmark loaders share: middle truncation, chat wrapping, the Sample."""

from __future__ import annotations

from typing import Protocol

from ahn.eval.synthetic import Sample


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


def chat_prompt(tokenizer, prompt: str) -> str:
    """The prompt as one user turn of the tokenizer's chat template, generation prompt added."""
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat(tokenizer, prompt: str, enabled: bool | None = None) -> str:
    """`chat_prompt` when `enabled` (`None`: when the tokenizer has a chat template)."""
    if enabled is None:
        enabled = bool(getattr(tokenizer, "chat_template", None))
    return chat_prompt(tokenizer, prompt) if enabled else prompt


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
