"""SPEC §3: parallel == chunked prefill == token-by-token decode, bounded cache, generate."""

import pytest
import torch
from tiny_models import decode_logits, make_ahn_model

import ahn

TOL = dict(atol=5e-5, rtol=1e-4)

# (sinks, window, prefill chunk, split between prefill and decode); T = 45.
GRID = [
    pytest.param(2, 8, 16, 30, id="s2-w8-c16-split30"),
    pytest.param(0, 5, 7, 45, id="s0-w5-c7-prefill-only"),
    pytest.param(4, 1, 3, 10, id="s4-w1-c3"),
    pytest.param(3, 16, 45, 0, id="s3-w16-decode-only"),
    pytest.param(2, 64, 10, 20, id="window-larger-than-input"),
    pytest.param(20, 4, 9, 33, id="many-sinks"),
]


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
@pytest.mark.parametrize("sinks, window, chunk, split", GRID)
def test_parallel_chunked_decode_agree(memory, sinks, window, chunk, split, ids):
    model = make_ahn_model(memory=memory, window=window, sinks=sinks)
    parallel = model(ids, use_cache=False).logits
    stepped, _ = decode_logits(model, ids, split, chunk)
    torch.testing.assert_close(stepped, parallel, **TOL)


@pytest.mark.parametrize("block", [3, 7, 16])
@pytest.mark.parametrize("sinks, window", [(2, 8), (0, 5), (20, 4)])
def test_query_blocks_smaller_or_larger_than_the_window_agree(
    block, sinks, window, ids, monkeypatch
):
    """The parallel path splits queries into blocks of `QUERY_BLOCK` (256 at run time, more
    than these inputs): blocks of any size against the window give the same logits."""
    model = make_ahn_model(window=window, sinks=sinks)
    one_block = model(ids, use_cache=False).logits
    monkeypatch.setattr("ahn.integration.attention.QUERY_BLOCK", block)
    blocked = model(ids, use_cache=False).logits
    torch.testing.assert_close(blocked, one_block, **TOL)
    torch.testing.assert_close(decode_logits(model, ids, 20, 9)[0], one_block, **TOL)


@pytest.mark.parametrize("arch", ["qwen3-odd-heads", "llama-mha", "mistral-gqa"])
def test_paths_agree_on_every_architecture(arch, ids):
    model = make_ahn_model(arch, window=6, sinks=2)
    parallel = model(ids, use_cache=False).logits
    torch.testing.assert_close(decode_logits(model, ids, 20, 8)[0], parallel, **TOL)


def test_internal_chunked_prefill_matches_parallel(ids):
    model = make_ahn_model(window=8, sinks=2, prefill_chunk=7)
    parallel = model(ids, use_cache=False).logits
    out = model(ids, use_cache=True)
    torch.testing.assert_close(out.logits, parallel, **TOL)
    assert out.cache.get_seq_length() == ids.shape[1]
    last = model(ids, use_cache=True, logits_to_keep=1).logits
    torch.testing.assert_close(last, parallel[:, -1:], **TOL)


def test_memory_matters(ids):
    model = make_ahn_model(window=8, sinks=2)
    with ahn.mode(model, "sliding"):
        sliding = model(ids).logits
    ahn_logits = model(ids).logits
    assert torch.equal(sliding[:, :10], ahn_logits[:, :10])  # memory empty while t - W < S
    assert (sliding[:, 11:] - ahn_logits[:, 11:]).abs().max() > 1e-3


def test_layers_subset_keeps_full_attention_elsewhere(ids):
    model = make_ahn_model(window=6, sinks=1, layers=[1])
    assert not hasattr(model.model.layers[0], "ahn") and hasattr(model.model.layers[1], "ahn")
    parallel = model(ids, use_cache=False).logits
    stepped, cache = decode_logits(model, ids, 25, 10)
    torch.testing.assert_close(stepped, parallel, **TOL)
    assert cache.layers[0].keys.shape[-2] == ids.shape[1]  # full layer keeps everything
    assert cache.layers[1].keys.shape[-2] == 6


@pytest.mark.parametrize("mode", ["ahn", "sliding"])
def test_cache_size_is_constant(mode):
    window, sinks = 16, 4
    model = make_ahn_model(window=window, sinks=sinks, prefill_chunk=32)
    sizes = []
    with ahn.mode(model, mode):
        for factor in (4, 8, 16):
            ids = torch.randint(0, 97, (1, factor * window))
            cache = model(ids, use_cache=True).cache
            sizes.append(ahn.cache_bytes(cache))
            assert all(layer.keys.shape[-2] <= window for layer in cache.layers)
            assert all(layer.sink_k.shape[-2] == sinks for layer in cache.layers)
    assert sizes[0] == sizes[1] == sizes[2]


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
def test_generate_equals_greedy_argmax(memory, ids):
    model = make_ahn_model(memory=memory, window=8, sinks=2, prefill_chunk=16)
    prompt = ids[:, :30]
    generated = model.generate(prompt, max_new_tokens=10, do_sample=False)
    seq = prompt
    for _ in range(10):
        nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(generated, seq)


def test_padded_batch_equals_rows_alone():
    model = make_ahn_model(window=8, sinks=2, prefill_chunk=8)
    gen = torch.Generator().manual_seed(42)
    rows = [torch.randint(1, 97, (1, n), generator=gen) for n in (17, 31, 26)]
    width = max(r.shape[1] for r in rows)
    batch = torch.cat([torch.nn.functional.pad(r, (width - r.shape[1], 0)) for r in rows])
    mask = torch.cat(
        [torch.nn.functional.pad(torch.ones_like(r), (width - r.shape[1], 0)) for r in rows]
    )
    together = model.generate(batch, attention_mask=mask, max_new_tokens=8, do_sample=False)
    for i, row in enumerate(rows):
        alone = model.generate(row, max_new_tokens=8, do_sample=False)
        assert torch.equal(together[i, width:], alone[0, row.shape[1] :])


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
def test_bfloat16_model_paths_agree_with_float32_states(memory, ids):
    model = make_ahn_model(memory=memory, window=8, sinks=2).to(torch.bfloat16)
    parallel = model(ids, use_cache=False).logits.float()
    stepped, cache = decode_logits(model, ids, 20, 8)
    torch.testing.assert_close(stepped.float(), parallel, atol=2e-2, rtol=2e-2)
    assert all(layer.state.dtype == torch.float32 for layer in cache.layers)


def test_long_prompts_are_prefilled_in_chunks(ids):
    model = make_ahn_model(window=8, sinks=2, prefill_chunk=8)
    seen = []
    attn = model.model.layers[0].self_attn
    handle = attn.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["hidden_states"].shape[1]), with_kwargs=True
    )
    try:
        model.generate(ids, max_new_tokens=3, do_sample=False)
    finally:
        handle.remove()
    assert max(seen) == 8 and sum(seen) == ids.shape[1] + 2  # prompt in chunks, then 1 by 1


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
def test_cached_parameter_forms_follow_in_place_updates(memory, ids):
    """Under no_grad the memory reuses tensors derived from its parameters (fused projection,
    folded o_proj, exp(A_log)); an in-place update of a parameter must be seen at once."""
    model = make_ahn_model(memory=memory, window=8, sinks=2)
    with torch.no_grad():
        before = model(ids).logits
        for _, p in ahn.trainable_parameters(model):
            p.mul_(1.5)
        after = model(ids).logits
    assert (after - before).abs().max() > 1e-3
    fresh = model(ids).logits  # with gradients enabled nothing is cached
    torch.testing.assert_close(after, fresh, **TOL)
