"""The one type of an evaluation item (synthetic and benchmark alike) and the prompt helpers
both kinds use."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sample:
    """One generated example.

    Args:
        input_ids: the prompt's token ids (what the model is fed).
        answers: strings that must appear in the generated text (text tasks).
        answer_ids: the expected continuation (token tasks such as `copy`).
        stop_ids: token ids ending generation besides the model's EOS.
        prompt: the prompt text (None for token tasks).
    """

    task: str
    index: int
    length: int
    depth: float | None
    input_ids: list[int]
    answers: list[str]
    max_new_tokens: int
    metric: str
    prompt: str | None = None
    answer_ids: list[int] | None = None
    stop_ids: list[int] | None = None
    meta: dict = field(default_factory=dict)


def chat_prompt(tokenizer, prompt: str) -> str:
    """The prompt as one user turn of the tokenizer's chat template, generation prompt added."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat prompts need a chat template; this tokenizer has none")
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat(tokenizer, prompt: str, enabled: bool | None = None) -> str:
    """`chat_prompt` when `enabled` (`None`: when the tokenizer has a chat template)."""
    if enabled is None:
        enabled = bool(getattr(tokenizer, "chat_template", None))
    return chat_prompt(tokenizer, prompt) if enabled else prompt
