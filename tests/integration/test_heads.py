"""`ahn profile-heads`: the retrieval profile is the attention answer tokens pay to the fact's
tokens they repeat, measured against the base's own eager attention weights."""

import json

import pytest
import torch
from tiny_models import char_tokenizer, make_model

from ahn.config import load_profile
from ahn.eval.heads import chat_rows, kv_profile, retrieval_profile

TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
CHATS = [
    ({"messages": [{"role": "user", "content": "abc code is 4711. more text here. code?"},
                   {"role": "assistant", "content": "code is 4711."}]}, "code is 4711."),
    ({"messages": [{"role": "user", "content": "xy the key is in the pot. zz zz. where?"},
                   {"role": "assistant", "content": "in the pot"}]}, "the key is in the pot."),
]  # fmt: skip


@pytest.fixture
def tokenizer():
    tok = char_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def test_rows_point_at_the_fact_tokens_they_repeat(tokenizer):
    ids, rows, sources = chat_rows(tokenizer, *CHATS[0])
    text = tokenizer.decode(ids)
    f0, a0 = text.index("code is 4711."), text.rindex("code is 4711.")
    assert rows == [a0 - 1 + i for i in range(len("code is 4711."))]  # one token per character
    for r, found in zip(rows, sources, strict=True):
        assert found and all(f0 <= p < f0 + 13 and ids[p] == ids[r + 1] for p in found)
        assert len(found) == "code is 4711.".count(text[r + 1])


def test_profile_is_the_attention_on_the_repeated_fact_tokens(tokenizer):
    model = make_model("mistral-gqa")
    got = retrieval_profile(model, tokenizer, CHATS)  # [layers, H]
    model.config._attn_implementation = "eager"
    credit, count = 0, 0
    for chat, fact in CHATS:
        ids, rows, sources = chat_rows(tokenizer, chat, fact)
        attn = model(ids[None], output_attentions=True).attentions  # layers x [1, H, T, T]
        for r, found in zip(rows, sources, strict=True):
            if found:
                credit = credit + torch.stack([a[0, :, r, found].sum(-1) for a in attn])
                count += 1
    torch.testing.assert_close(got, credit / count, atol=1e-5, rtol=1e-4)
    assert model.config._attn_implementation == "eager"  # the probe put back what it found
    kv = kv_profile(got, 3)
    assert kv.shape == (2, 3) and torch.equal(kv[:, 1], got[:, 2:4].amax(-1))


def test_profiles_load_from_json_or_ahn_dir(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"salient_heads": [[1, 0], [0, 2]]}))
    assert load_profile(tmp_path / "p.json") == [[1.0, 0.0], [0.0, 2.0]]
    (tmp_path / "ahn_config.json").write_text(json.dumps({"config": {"salient_heads": [[3]]}}))
    assert load_profile(tmp_path) == [[3.0]]
    with pytest.raises(ValueError, match="no head profile"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "q.json").write_text("{}")
    with pytest.raises(ValueError, match="has no salient_heads"):
        load_profile(tmp_path / "q.json")


def test_gates_mix_full_attention_and_the_window(tokenizer):
    from transformers import AttentionInterface

    from ahn.eval.heads import GATED, gated_attention, learned_profile

    AttentionInterface.register(GATED, gated_attention)
    model = make_model("mistral-gqa")
    ids = chat_rows(tokenizer, *CHATS[0])[0][None]
    full = model(ids).logits
    model.config._attn_implementation = "ahn_gated"
    for layer in model.model.layers:
        layer.self_attn._gate, layer.self_attn._lossless = torch.ones(3), (2, 5)
    torch.testing.assert_close(model(ids).logits, full, atol=1e-5, rtol=1e-5)
    for layer in model.model.layers:
        layer.self_attn._gate = torch.zeros(3)
    band = model(ids).logits
    model.config._attn_implementation = "sdpa"
    import ahn

    ahn.augment(model, ahn.AHNConfig(window=5, sinks=2, positions="original"))  # zero o_proj
    torch.testing.assert_close(band, model(ids, use_cache=False).logits, atol=1e-5, rtol=1e-5)
    ahn.unaugment(model)
    gates = learned_profile(model, tokenizer, CHATS, sinks=2, window=5, steps=3, penalty=1.0)
    assert gates.shape == (2, 3) and bool((gates >= 0).all() and (gates < 1).any())
    assert model.config._attn_implementation == "sdpa"
