""" "full" is the untouched model, "sliding" is an explicit sinks + window mask, fresh "ahn" ==
"sliding"; only AHN parameters train."""

import pytest
import torch
from tiny_models import ARCHS, make_model, randomize_ahn
from transformers import GPT2Config, GPT2LMHeadModel

import ahn


@pytest.mark.parametrize("arch", list(ARCHS))
def test_full_mode_equals_untouched_model(arch, ids):
    reference = make_model(arch)
    model = make_model(arch)
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))
    randomize_ahn(model)
    with ahn.mode(model, "full"):
        assert torch.equal(model(ids).logits, reference(ids).logits)
    assert model._ahn_runtime.mode == "ahn"


def explicit_mask(T: int, window: int, sinks: int) -> torch.Tensor:
    """[1, 1, T, T] additive mask: key j visible to query t iff j <= t and (j < S or j > t - W)."""
    t = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = (j <= t) & ((j < sinks) | (j > t - window))
    return torch.where(visible, 0.0, float("-inf"))[None, None]


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("window, sinks", [(8, 2), (5, 0), (60, 4)], ids=["w8s2", "w5s0", "w60s4"])
def test_sliding_equals_explicit_mask(arch, window, sinks, ids):
    reference = make_model(arch)
    reference.config._attn_implementation = "eager"
    expected = reference(ids, attention_mask=explicit_mask(ids.shape[1], window, sinks)).logits
    model = make_model(arch)  # the mask places every key at its own position: "original"
    ahn.augment(model, ahn.AHNConfig(window=window, sinks=sinks, positions="original"))
    randomize_ahn(model)
    with ahn.mode(model, "sliding"):
        torch.testing.assert_close(model(ids).logits, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
def test_fresh_ahn_computes_sinks_plus_window(memory, ids):
    model = make_model()
    ahn.augment(model, ahn.AHNConfig(memory=memory, window=8, sinks=2))
    ahn_logits = model(ids).logits
    with ahn.mode(model, "sliding"):
        assert torch.equal(model(ids).logits, ahn_logits)


def test_only_ahn_parameters_train(ids):
    model = make_model()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in ahn.trainable_parameters(model)}
    assert trainable and all(".ahn.fn." in n for n in trainable)
    model.train()
    model(ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in ahn.trainable_parameters(model)}
    # `D` is kept for the official layout only; the forward does not use it.
    assert all((g is None) == n.endswith(".D") for n, g in grads.items())
    assert all(grads[n].abs().sum() > 0 for n in grads if n.endswith("o_proj.weight"))
    assert all(torch.equal(base[n], p) for n, p in model.named_parameters() if n in base)


def test_mode_restores_previous_mode_on_error(ids):
    model = make_model()
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))
    with pytest.raises(RuntimeError, match="boom"):
        with ahn.mode(model, "full"):
            raise RuntimeError("boom")
    assert model._ahn_runtime.mode == "ahn" and model.config._attn_implementation == "ahn"


def test_bad_inputs_are_named():
    model = make_model()
    with pytest.raises(ValueError, match="not augmented"):
        ahn.set_mode(model, "full")
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))
    with pytest.raises(ValueError, match="mode 'bogus'"):
        ahn.set_mode(model, "bogus")
    with pytest.raises(ValueError, match="already augmented"):
        ahn.augment(model, ahn.AHNConfig())
    with pytest.raises(ValueError, match="left padding"):
        model(torch.ones(1, 4, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 0, 1]]))
    with pytest.raises(ValueError, match="layers=\\[5\\]"):
        ahn.augment(make_model(), ahn.AHNConfig(layers=[0, 5]))


def test_unsupported_model_gets_a_clear_error():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10))
    with pytest.raises(ValueError, match="GPT2LMHeadModel is not supported"):
        ahn.augment(gpt2, ahn.AHNConfig())


@pytest.mark.parametrize(
    "memory, millions", [("gated_deltanet", 13.0), ("deltanet", 11.8), ("mamba2", 11.9)]
)
def test_parameter_count_on_qwen25_3b_meta(memory, millions):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    ahn.augment(model, ahn.AHNConfig(memory=memory))
    count = sum(p.numel() for _, p in ahn.trainable_parameters(model))
    assert round(count / 1e6, 1) == millions
    assert all(p.device.type == "meta" for _, p in ahn.trainable_parameters(model))


def test_gradient_checkpointing_with_padding_gives_the_same_gradients(ids):
    mask = torch.ones_like(ids)
    mask[0, :7] = 0
    grads = []
    for checkpointing in (False, True):
        model = make_model()
        ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))
        randomize_ahn(model)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(ids, attention_mask=mask, labels=ids).loss.backward()
        grads.append([p.grad for _, p in ahn.trainable_parameters(model) if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
