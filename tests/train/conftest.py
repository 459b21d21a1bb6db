"""Session fixtures of the training tests: the tokenizer and a saved tiny base."""

import pytest
from train_helpers import char_tokenizer, tiny_qwen2
from transformers import PreTrainedTokenizerFast


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return char_tokenizer()


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, tokenizer):
    """A tiny base model and its tokenizer saved like a real checkpoint directory."""
    path = tmp_path_factory.mktemp("base")
    tiny_qwen2(vocab_size=len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
