"""What the benchmark loaders share: middle truncation, chat wrapping, the Sample."""

from __future__ import annotations

from ahn.eval.synthetic import Sample


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
