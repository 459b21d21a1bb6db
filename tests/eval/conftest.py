"""Tiny offline models for the eval tests: a character-level tokenizer and a 2-layer Qwen2."""

import string

import pytest
import torch


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["<unk>", "<eos>"] + list(string.printable)
    model = models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token="<unk>")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="session")
def chat_tokenizer():
    """The character tokenizer with a minimal chat template."""
    tok = char_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return tok


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, tokenizer):
    """A random 2-layer Qwen2 with the character tokenizer, saved like a hub checkpoint."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(42)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    path = tmp_path_factory.mktemp("tiny_base")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
