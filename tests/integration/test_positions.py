"""SPEC §2c, positions inside the cache: the three paths agree under "bounded", it equals
"original" up to the horizon, past it a token's output no longer depends on how far it is, and
attention matches a per-query reference that places every key by the scheme's own rule."""

import pytest
import torch
from tiny_models import decode_logits, make_ahn_model
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, rotate_half

import ahn
from ahn.integration.attention import LayerContext, far_queries, store_attention, windowed_step
from ahn.integration.augment import runtime_of
from ahn.integration.cache import AHNLayer, Lossless
from ahn.integration.positions import Rerotation
from ahn.integration.store import reference_stores

TOL = dict(atol=5e-5, rtol=1e-4)

# (sinks, window, salient, prefill chunk, split between prefill and decode); T = 45.
GRID = [
    pytest.param(2, 8, 0, 16, 30, id="s2-w8-c16-split30"),
    pytest.param(0, 5, 0, 7, 45, id="s0-w5-c7-prefill-only"),
    pytest.param(4, 1, 0, 3, 10, id="s4-w1-c3"),
    pytest.param(2, 8, 3, 16, 30, id="s2-w8-g3-c16-split30"),
    pytest.param(3, 6, 5, 45, 0, id="s3-w6-g5-decode-only"),
    pytest.param(2, 5, 40, 11, 20, id="store-larger-than-evicted"),
]


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
@pytest.mark.parametrize("sinks, window, salient, chunk, split", GRID)
def test_parallel_chunked_decode_agree(memory, sinks, window, salient, chunk, split, ids):
    model = make_ahn_model(memory=memory, window=window, sinks=sinks, salient=salient,
                           positions="bounded")  # fmt: skip
    parallel = model(ids, use_cache=False).logits
    stepped, _ = decode_logits(model, ids, split, chunk)
    torch.testing.assert_close(stepped, parallel, **TOL)
    with ahn.mode(model, "sliding"):
        parallel = model(ids, use_cache=False).logits
        torch.testing.assert_close(decode_logits(model, ids, split, chunk)[0], parallel, **TOL)


@pytest.mark.parametrize("block", [3, 7])
def test_query_blocks_agree(block, ids, monkeypatch):
    model = make_ahn_model(window=5, sinks=2, salient=3, positions="bounded")
    one_block = model(ids, use_cache=False).logits
    monkeypatch.setattr("ahn.integration.attention.QUERY_BLOCK", block)
    torch.testing.assert_close(model(ids, use_cache=False).logits, one_block, **TOL)


@pytest.mark.parametrize("arch", ["qwen3-odd-heads", "llama-mha", "mistral-gqa"])
def test_paths_agree_on_every_architecture(arch, ids):
    model = make_ahn_model(arch, window=6, sinks=2, salient=3, positions="bounded")
    parallel = model(ids, use_cache=False).logits
    torch.testing.assert_close(decode_logits(model, ids, 20, 8)[0], parallel, **TOL)


def test_padded_batch_equals_rows_alone():
    model = make_ahn_model(window=6, sinks=2, salient=3, prefill_chunk=8, positions="bounded")
    gen = torch.Generator().manual_seed(42)
    rows = [torch.randint(1, 97, (1, n), generator=gen) for n in (17, 31, 26)]
    width = max(r.shape[1] for r in rows)
    pad = lambda r: torch.nn.functional.pad(r, (width - r.shape[1], 0))
    batch = torch.cat([pad(r) for r in rows])
    mask = torch.cat([pad(torch.ones_like(r)) for r in rows])
    together = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False)
    for i, row in enumerate(rows):
        alone = model.generate(row, max_new_tokens=6, do_sample=False)
        assert torch.equal(together[i, width - row.shape[1] :], alone[0])


@pytest.mark.parametrize("salient", [0, 3])
def test_bounded_is_original_up_to_the_horizon(salient, ids):
    """Up to C = S + G + W - 1 every distance is the original one: the same logits, bit for bit;
    beyond it they differ."""
    original = make_ahn_model(window=8, sinks=2, salient=salient, positions="original")
    bounded = make_ahn_model(window=8, sinks=2, salient=salient, positions="bounded")
    C = 2 + salient + 8 - 1
    assert torch.equal(original(ids[:, : C + 1]).logits, bounded(ids[:, : C + 1]).logits)
    assert (original(ids).logits - bounded(ids).logits)[:, C + 1 :].abs().max() > 1e-3


def test_past_the_horizon_the_window_does_not_depend_on_how_far_it_is():
    """Sliding mode: the same sinks and the same window read at two distances from the start
    give the same output under "bounded" (every distance is within the cache) and not under
    "original" (the sinks move away). The tail covers the last tokens' receptive field
    (2 layers x window)."""
    gen = torch.Generator().manual_seed(42)
    sinks, window = 2, 8
    head, tail = torch.randint(0, 97, (1, sinks), generator=gen), torch.randint(0, 97, (1, 20))
    near = torch.cat([head, torch.randint(0, 97, (1, 20), generator=gen), tail], dim=1)
    far = torch.cat([head, torch.randint(0, 97, (1, 300), generator=gen), tail], dim=1)
    for positions, equal in (("bounded", True), ("original", False)):
        model = make_ahn_model(window=window, sinks=sinks, positions=positions)
        with ahn.mode(model, "sliding"):
            a, b = model(near).logits[:, -3:], model(far).logits[:, -3:]
        assert torch.allclose(a, b, **TOL) == equal, positions


def rope(x, positions, rotary):
    """x [B, h, T, D] placed at `positions` [T] by RoPE (the model's own formula)."""
    cos, sin = rotary(x, positions[None])
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


@pytest.mark.parametrize("salient, chunk", [(0, 5), (0, 29), (3, 4), (3, 29), (2, 11)])
def test_attention_is_the_per_query_reference(salient, chunk):
    """Attention under "bounded" against a readable reference: raw queries and keys placed by
    RoPE where SPEC §2c's scheme puts them (window keys at their own positions and the query at
    t; sinks and stored keys at min(j, S + G - 1) and the query at min(t, C)), one softmax over
    sinks, the naive top-G store and the window."""
    gen = torch.Generator().manual_seed(42)
    B, Hkv, H, T, D, W, S = 1, 2, 4, 29, 8, 5, 2
    G, C = salient, S + salient + W - 1
    rotary = LlamaRotaryEmbedding(LlamaConfig(head_dim=D, hidden_size=4 * D, num_attention_heads=4))
    q_raw, k_raw, v = (torch.randn(B, n, T, D, generator=gen) for n in (H, Hkv, Hkv))
    pos = torch.arange(T)
    q, k = rope(q_raw, pos, rotary), rope(k_raw, pos, rotary)  # as the base caches them
    scores = torch.randint(0, 4, (B, Hkv, T), generator=gen).float()
    layer = AHNLayer(Lossless(W, S, G, "bounded"))
    ctx = LayerContext(None, layer, torch.zeros(B, dtype=torch.long), 0, W, S, None, True, G,
                       far=Rerotation(rotary, rotate_half))  # fmt: skip
    outs = []
    for a in range(0, T, chunk):
        b = min(T, a + chunk)
        if G == 0:
            outs.append(windowed_step(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :], ctx, D**-0.5))
            continue
        view = layer.view(k[..., a:b, :], v[..., a:b, :], None, ctx.pad, G)
        n = max(0, view.k_loc.shape[-2] - W)
        s = scores[..., view.start : view.start + n].clone()
        s[..., : max(0, S - view.start)] = -torch.inf  # sinks are never stored
        q_far = far_queries(q[..., a:b, :], layer.seen, ctx)
        out, store = store_attention(q[..., a:b, :], q_far, view, ctx, D**-0.5, s if n else None)
        layer.commit(view, b - a, None, store)
        outs.append(out)
    got = torch.cat(outs, dim=1)  # [B, T, H, D]
    for h in range(Hkv):
        per_token = [None if j < S else float(scores[0, h, j]) for j in range(T)]
        stores = reference_stores(per_token[S:], S, W, G, T) if G else [set()] * T
        for t in range(T):
            far_keys = sorted({*range(min(S, t + 1)), *stores[t]})
            near_keys = [j for j in range(max(0, t - W + 1), t + 1) if j >= S]  # sinks: far
            far_pos = torch.tensor([min(j, S + G - 1) for j in far_keys])
            for g in range(h * H // Hkv, (h + 1) * H // Hkv):
                qt = q_raw[:, g : g + 1, t : t + 1]
                q_near = rope(qt, torch.tensor([t]), rotary)[0, 0, 0]
                q_far = rope(qt, torch.tensor([min(t, C)]), rotary)[0, 0, 0]
                k_far = rope(k_raw[:, h : h + 1, far_keys], far_pos, rotary)[0, 0]
                logits = torch.cat([k_far @ q_far, k[0, h, near_keys] @ q_near]) * D**-0.5
                w = torch.softmax(logits, -1)
                want = w @ v[0, h, far_keys + near_keys]
                torch.testing.assert_close(got[0, t, g], want, **TOL)


def test_a_cache_keeps_its_positions_and_bad_values_are_named(ids):
    model = make_ahn_model(window=6, sinks=2, positions="original")
    cache = model(ids, use_cache=True).cache
    ahn.set_window(model, positions="bounded")
    with pytest.raises(ValueError, match="positions='original'"):
        model(ids[:, :1], cache=cache, use_cache=True)
    with pytest.raises(ValueError, match="positions='nearby' is not one of"):
        ahn.set_window(model, positions="nearby")
    with ahn.window(model, positions="original"):
        assert runtime_of(model).positions == "original"
    assert runtime_of(model).positions == "bounded"


def test_a_saved_config_without_positions_loads_as_original():
    config = ahn.AHNConfig.from_dict({"window": 8, "sinks": 2})
    assert config.positions == "original"
    assert ahn.AHNConfig.from_dict({**config.to_dict(), "positions": "bounded"}).positions == (
        "bounded"
    )


def test_a_base_without_rotary_embedding_refuses_bounded(ids):
    model = make_ahn_model(window=6, sinks=2)
    rt = runtime_of(model)
    rt.far = None
    with pytest.raises(ValueError, match="rotary"):
        ahn.set_window(model, positions="bounded")
