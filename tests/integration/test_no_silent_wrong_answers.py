"""Regression tests of defects found by probing: a cache and the runtime that disagree on the
window, a caller's cache swapped silently, cache implementations that cannot hold a memory."""

import pytest
import torch
from tiny_models import make_model, randomize_ahn
from transformers import DynamicCache

import ahn


@pytest.fixture
def model():
    m = ahn.augment(make_model("qwen2-gqa"), ahn.AHNConfig(window=8, sinks=2))
    randomize_ahn(m)
    return m


def test_a_cache_read_at_one_window_is_refused_at_another(model, ids):
    out = model(ids[:, :20], use_cache=True)
    with (
        ahn.window(model, window=4),
        pytest.raises(ValueError, match=r"window=8, sinks=2.*window=4"),
    ):
        model(ids[:, 20:21], past_key_values=out.past_key_values, use_cache=True)
    # the same cache still works at the sizes it was made with
    model(ids[:, 20:21], past_key_values=out.past_key_values, use_cache=True)


def test_an_empty_cache_takes_the_runtime_sizes(model, ids):
    cache = ahn.new_cache(model)
    with ahn.window(model, window=4, sinks=1):
        step = model(ids[:, :12], past_key_values=cache, use_cache=True)
        assert (cache.window, cache.sinks) == (4, 1)
        reference = model(ids[:, :12]).logits
    torch.testing.assert_close(step.logits, reference)


def test_a_callers_cache_of_another_class_is_refused_not_swapped(model, ids):
    cache = DynamicCache()
    with pytest.raises(ValueError, match="ahn.new_cache"):
        model(ids[:, :10], past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError, match="DynamicCache"):
        model.generate(ids[:, :10], past_key_values=DynamicCache(), max_new_tokens=2)
    with ahn.mode(model, "full"):  # the base model takes any cache, as before
        model(ids[:, :10], past_key_values=DynamicCache(), use_cache=True)


def test_a_callers_ahn_cache_is_used_and_filled_by_generate(model, ids):
    cache = ahn.new_cache(model)
    out = model.generate(ids[:, :10], past_key_values=cache, max_new_tokens=3, do_sample=False)
    assert cache.get_seq_length() == out.shape[1] - 1  # the last token is not fed back
    fresh = model.generate(ids[:, :10], max_new_tokens=3, do_sample=False)
    assert torch.equal(out, fresh)


@pytest.mark.parametrize("implementation", ["static", "offloaded", "quantized"])
def test_unsupported_cache_implementations_get_a_clear_error(model, ids, implementation):
    with pytest.raises(ValueError, match=f"cache_implementation='{implementation}'.*dynamic"):
        model.generate(ids[:, :10], max_new_tokens=2, cache_implementation=implementation)


def test_save_pretrained_points_at_ahn_save(model, tmp_path):
    with pytest.raises(ValueError, match=r"ahn\.save"):
        model.save_pretrained(tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_unaugment_gives_the_base_model_back(ids, tmp_path):
    reference = make_model("qwen2-gqa")
    model = make_model("qwen2-gqa")
    names = {n for n, _ in model.named_parameters()}
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))
    randomize_ahn(model)
    ahn.unaugment(model)
    assert not ahn.is_augmented(model)
    assert {n for n, _ in model.named_parameters()} == names
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(model(ids).logits, reference(ids).logits)
    model.save_pretrained(tmp_path / "base")  # a plain transformers model again
    out = model.generate(ids[:, :10], max_new_tokens=3, do_sample=False)
    assert torch.equal(out, reference.generate(ids[:, :10], max_new_tokens=3, do_sample=False))
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))  # and it can be augmented again
