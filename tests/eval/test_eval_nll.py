"""Per-token NLL, position buckets and document reading."""

import json

import pytest
import torch

from ahn.eval import nll


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(42)
    config = Qwen2Config(
        vocab_size=37, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def test_token_nll_matches_the_logits(model):
    ids = torch.randint(0, 37, (2, 63), generator=torch.Generator().manual_seed(42))
    values = nll.token_nll(model, ids, chunk=10)
    logp = torch.log_softmax(model(ids).logits.float(), dim=-1)
    expected = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    assert values.shape == (2, 62)
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-5)


def test_bucket_sums():
    sums, counts = nll.bucket_sums(torch.arange(7.0), 3)
    assert sums == [3.0, 12.0, 6.0] and counts == [3, 3, 1]


def test_read_documents_and_pieces(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n"
    )
    (tmp_path / "b.txt").write_text("three")
    assert nll.read_documents(tmp_path) == ["one", "two", "three"]
    assert nll.read_documents(tmp_path / "b.txt") == ["three"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="'text'"):
        nll.read_documents(tmp_path / "c.jsonl")
    with pytest.raises(FileNotFoundError):
        nll.read_documents(tmp_path / "missing.jsonl")
    assert nll.pieces([[1, 2, 3], [4, 5]], 3, separator=0, limit=5) == [[1, 2, 3], [0, 4, 5]]
    assert nll.pieces([[1, 2, 3, 4, 5, 6, 7]], 2, separator=None, limit=2) == [[1, 2], [3, 4]]
