"""SPEC §2b, the salient store: three paths equal, G = 0 is today's AHN bit for bit, a store
that keeps everything is full attention, the selection is the naive per-query top-G."""

import pytest
import torch
from tiny_models import decode_logits, make_ahn_model

import ahn
from ahn.integration import store as store_module
from ahn.integration.attention import LayerContext, store_attention
from ahn.integration.cache import AHNLayer, Lossless
from ahn.integration.store import Store, reference_stores

TOL = dict(atol=5e-5, rtol=1e-4)

# (sinks, window, salient, prefill chunk, split between prefill and decode); T = 45.
GRID = [
    pytest.param(2, 8, 3, 16, 30, id="s2-w8-g3-c16-split30"),
    pytest.param(0, 5, 4, 7, 45, id="s0-w5-g4-c7-prefill-only"),
    pytest.param(4, 1, 2, 3, 10, id="s4-w1-g2-c3"),
    pytest.param(3, 6, 5, 45, 0, id="s3-w6-g5-decode-only"),
    pytest.param(2, 4, 1, 9, 33, id="g1"),
    pytest.param(2, 5, 40, 11, 20, id="store-larger-than-evicted"),
]


@pytest.mark.parametrize("score", ["novelty", "surprise", "write_gate"])
@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
@pytest.mark.parametrize("sinks, window, salient, chunk, split", GRID)
def test_parallel_chunked_decode_agree(memory, score, sinks, window, salient, chunk, split, ids):
    model = make_ahn_model(memory=memory, window=window, sinks=sinks, salient=salient,
                           salient_score=score)  # fmt: skip
    parallel = model(ids, use_cache=False).logits
    stepped, cache = decode_logits(model, ids, split, chunk)
    torch.testing.assert_close(stepped, parallel, **TOL)
    for layer in cache.layers:  # bounded: S + G + W keys per KV head
        assert layer.keys.shape[-2] <= window and layer.store.k.shape[-2] == salient


@pytest.mark.parametrize("block", [3, 7])
def test_query_blocks_agree(block, ids, monkeypatch):
    model = make_ahn_model(window=5, sinks=2, salient=3)
    one_block = model(ids, use_cache=False).logits
    monkeypatch.setattr("ahn.integration.attention.QUERY_BLOCK", block)
    torch.testing.assert_close(model(ids, use_cache=False).logits, one_block, **TOL)
    torch.testing.assert_close(decode_logits(model, ids, 20, 9)[0], one_block, **TOL)


@pytest.mark.parametrize("arch", ["qwen3-odd-heads", "llama-mha", "mistral-gqa"])
def test_paths_agree_on_every_architecture(arch, ids):
    model = make_ahn_model(arch, window=6, sinks=2, salient=3)
    parallel = model(ids, use_cache=False).logits
    torch.testing.assert_close(decode_logits(model, ids, 20, 8)[0], parallel, **TOL)


def test_padded_batch_equals_rows_alone():
    model = make_ahn_model(window=6, sinks=2, salient=3, prefill_chunk=8)
    gen = torch.Generator().manual_seed(42)
    rows = [torch.randint(1, 97, (1, n), generator=gen) for n in (17, 31, 26)]
    width = max(r.shape[1] for r in rows)
    pad = lambda r, value: torch.nn.functional.pad(r, (width - r.shape[1], 0), value=value)
    batch = torch.cat([pad(r, 0) for r in rows])
    mask = torch.cat([pad(torch.ones_like(r), 0) for r in rows])
    together = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False)
    for i, row in enumerate(rows):
        alone = model.generate(row, max_new_tokens=6, do_sample=False)
        assert torch.equal(together[i, width - row.shape[1] :], alone[0])


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
def test_no_store_is_todays_ahn_bit_for_bit(memory, ids):
    plain = make_ahn_model(memory=memory, window=6, sinks=2)
    zero = make_ahn_model(memory=memory, window=6, sinks=2, salient=0)
    assert torch.equal(plain(ids).logits, zero(ids).logits)
    with ahn.mode(plain, "sliding"), ahn.mode(stored := make_ahn_model(memory=memory, window=6,
                                                                        sinks=2, salient=4),
                                              "sliding"):  # fmt: skip
        assert torch.equal(plain(ids).logits, stored(ids).logits)  # sliding ignores the store


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
def test_store_of_everything_with_zero_o_proj_is_full_attention(memory, ids):
    """Under "original" (every key at its own position; "bounded" moves the store's keys)."""
    model = make_ahn_model(memory=memory, window=5, sinks=2, salient=ids.shape[1],
                           positions="original")  # fmt: skip
    with torch.no_grad():
        for layer in model.model.layers:
            layer.ahn.fn.o_proj.weight.zero_()
    with ahn.mode(model, "full"):
        full = model(ids).logits
    torch.testing.assert_close(model(ids, use_cache=False).logits, full, **TOL)
    torch.testing.assert_close(decode_logits(model, ids, 20, 7)[0], full, **TOL)


def test_store_matters(ids):
    model = make_ahn_model(window=5, sinks=2, salient=3)
    plain = make_ahn_model(window=5, sinks=2)
    a, b = model(ids).logits, plain(ids).logits
    torch.testing.assert_close(a[:, :7], b[:, :7], **TOL)  # nothing evicted yet
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-3


@pytest.mark.parametrize("window, sinks, G, chunk", [(4, 2, 3, 29), (3, 0, 2, 5), (5, 1, 4, 1)])
def test_selection_is_the_naive_per_query_top_g(window, sinks, G, chunk):
    """Attention with the store against a per-query reference: softmax over sinks, the naive
    top-G (by the same scores, with ties) and the window. Scores repeat, to exercise ties."""
    pieces = [(a, min(29, a + chunk)) for a in range(0, 29, chunk)]
    check_against_naive_top_g(window, sinks, G, pieces)


@pytest.mark.parametrize("budget", [(3, 1), (0, 2), (2, 0), (3, 3)])
def test_selection_is_the_naive_per_head_top_g(budget):
    """Per-head budgets: each KV head's store the naive top-G_h of its scores (with ties)."""
    pieces = [(0, 11), *((t, t + 1) for t in range(11, 29))]  # prefill, then decode
    check_against_naive_top_g(4, 2, max(budget), pieces, budget)


def check_against_naive_top_g(window, sinks, G, pieces, budget=None):
    """`store_attention` over `pieces` (slot ranges of T = 29 tokens) equals, for every query,
    the softmax over its sinks, the naive top-G of the evicted tokens (G_h of `budget` per KV
    head) and its window."""
    gen = torch.Generator().manual_seed(42)
    B, Hkv, H, T, D = 1, 2, 4, 29, 8
    q, k, v = (torch.randn(B, n, T, D, generator=gen) for n in (H, Hkv, Hkv))
    scores = torch.randint(0, 4, (B, Hkv, T), generator=gen).float()  # many ties
    layer = AHNLayer(Lossless(window, sinks, G))
    ctx = LayerContext(None, layer, torch.zeros(B, dtype=torch.long), 0, window, sinks, None,
                       True, G, budget=budget)  # fmt: skip
    outs = []
    for a, b in pieces:
        view = layer.view(k[..., a:b, :], v[..., a:b, :], None, ctx.pad, G)
        n = max(0, view.k_loc.shape[-2] - window)
        s = scores[..., view.start : view.start + n].clone()
        s[..., : max(0, sinks - view.start)] = -torch.inf  # sinks are never stored
        out, store = store_attention(q[..., a:b, :], None, view, ctx, D**-0.5, s if n else None)
        layer.commit(view, b - a, None, store)
        outs.append(out)
    got = torch.cat(outs, dim=1)  # [B, T, H, D]
    for h in range(Hkv):
        per_token = [None if j < sinks else float(scores[0, h, j]) for j in range(T)]
        G_h = G if budget is None else budget[h]
        stores = reference_stores(per_token[sinks:], sinks, window, G_h, T)
        for t in range(T):
            keys = sorted(
                {*range(min(sinks, t + 1)), *stores[t], *range(max(0, t - window + 1), t + 1)}
            )
            for g in range(h * H // Hkv, (h + 1) * H // Hkv):
                w = torch.softmax(q[0, g, t] @ k[0, h, keys].T * D**-0.5, -1)
                torch.testing.assert_close(got[0, t, g], w @ v[0, h, keys], **TOL)


def test_store_bytes_are_bounded_and_constant():
    window, sinks, G = 16, 4, 8
    model = make_ahn_model(window=window, sinks=sinks, salient=G, prefill_chunk=32)
    sizes = []
    for factor in (4, 8, 16):
        ids = torch.randint(0, 97, (1, factor * window))
        cache = model(ids, use_cache=True).cache
        sizes.append(ahn.cache_bytes(cache))
        assert all(layer.store.k.shape[-2] == G for layer in cache.layers)
    assert sizes[0] == sizes[1] == sizes[2]
    with ahn.mode(model, "sliding"):
        sliding = ahn.cache_bytes(model(ids, use_cache=True).cache)
    assert sizes[0] > sliding


def test_empty_store_has_no_entries():
    store = Store.empty(torch.zeros(2, 3, 0, 4), 5)
    assert store.k.shape == (2, 3, 5, 4) and not store.ok.any()
    assert "surprise" in store_module.SCORES


def test_mode_store_is_ahn_without_the_memory_read(ids):
    model = make_ahn_model(window=5, sinks=2, salient=3)
    with ahn.mode(model, "store"):
        store_only = model(ids, use_cache=False).logits
        torch.testing.assert_close(decode_logits(model, ids, 20, 9)[0], store_only, **TOL)
    assert (store_only - model(ids).logits).abs().max() > 1e-3  # the memory's read matters
    with torch.no_grad():
        for layer in model.model.layers:
            layer.ahn.fn.o_proj.weight.zero_()
    torch.testing.assert_close(model(ids).logits, store_only, **TOL)


def test_novelty_is_the_decay_free_delta_rule_error():
    """The novelty score by its definition: N_0 = 0, e_j = v_j - N_{j-1}^T k_j (k normalised),
    N_j = N_{j-1} + k_j e_j^T; score ||e_j||; tokens not absorbed leave N unchanged."""
    from ahn.integration.store import Evicted, novelty
    from ahn.ops import l2norm

    gen = torch.Generator().manual_seed(42)
    B, Hkv, n, D = 2, 3, 37, 8
    k, v = torch.randn(B, Hkv, n, D, generator=gen), torch.randn(B, Hkv, n, D, generator=gen)
    absorb = torch.ones(B, n, dtype=torch.bool)
    absorb[1, :5] = False
    scores, state = novelty(Evicted(k, v, None, None, absorb, None))
    N = torch.zeros(B, Hkv, D, D, dtype=torch.float64)
    for j in range(n):
        kj = l2norm(k[:, :, j].double())
        e = v[:, :, j].double() - torch.einsum("bhkv,bhk->bhv", N, kj)
        N = N + torch.einsum("bhk,bhv->bhkv", kj, e) * absorb[:, j, None, None, None]
        want = e.norm(dim=-1) * absorb[:, j, None]  # 0 where not absorbed (never stored)
        torch.testing.assert_close(scores[:, :, j].double(), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state.double(), N, rtol=1e-4, atol=1e-4)
    # within its capacity (fewer tokens than dimensions) a repeat is far less novel
    few_k, few_v = k[..., :4, :].repeat(1, 1, 1, 2), v[..., :4, :].repeat(1, 1, 1, 2)
    few_k, few_v = few_k.view(B, Hkv, 4, 2 * D), few_v.view(B, Hkv, 4, 2 * D)
    few, seen = novelty(Evicted(few_k, few_v, None, None, None, None))
    again, _ = novelty(Evicted(few_k, few_v, None, None, None, seen))
    assert again.mean() < 0.5 * few.mean()
