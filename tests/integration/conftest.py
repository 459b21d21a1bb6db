"""Fixtures of the integration tests."""

import pytest
import torch
from tiny_models import char_tokenizer, make_model


@pytest.fixture
def ids():
    return torch.randint(0, 97, (2, 45), generator=torch.Generator().manual_seed(42))


@pytest.fixture
def saved_base(tmp_path):
    """A tiny Qwen2 model + tokenizer saved with save_pretrained."""
    model = make_model()
    model.generation_config.eos_token_id = 1
    path = tmp_path / "base"
    model.save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path
