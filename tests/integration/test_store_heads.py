"""SPEC §2b, per-head budgets and shared choices: G_lh from a head profile, each head's store the
top-G_lh of its (or its layer's, or the first layer's) scores, the three paths equal."""

import pytest
import torch
from tiny_models import decode_logits, make_ahn_model

import ahn
from ahn.config import POSITIONS, SHARES, store_budgets
from ahn.integration.store import Store, advance, advance_one

TOL = dict(atol=5e-5, rtol=1e-4)
# mistral-gqa: 2 layers x 3 KV heads
PROFILE = [[1.0, 0.0, 3.0], [0.5, 0.5, 0.0]]


def test_budgets_split_the_total_in_proportion():
    assert store_budgets(None, 4, {0, 1}, 3, 2) == ((4, 4, 4), (4, 4, 4))
    assert store_budgets(None, 4, {1}, 3, 2) == ((0, 0, 0), (4, 4, 4))
    G = store_budgets(PROFILE, 4, {0, 1}, 3, 2)
    assert sum(map(sum, G)) == 4 * 6 and G[0][1] == G[1][2] == 0
    assert G == ((5, 0, 15), (2, 2, 0))  # 4.8, 14.4, 2.4, 2.4: remainders to .8, then the earliest
    G = store_budgets(PROFILE, 5, {1}, 3, 2)  # only windowed layers share the total
    assert G == ((0, 0, 0), (8, 7, 0))  # 7.5 each: the remainder to the earlier head
    with pytest.raises(ValueError, match="2 x 3 weights, but the model has 3 layers"):
        store_budgets(PROFILE, 4, {0}, 3, 3)
    with pytest.raises(ValueError, match="weight 0"):
        store_budgets([[0, 0, 0], [1, 1, 1]], 4, {0}, 3, 2)


@pytest.mark.parametrize(
    "profile", [[[1]], [[1, 2], [3]], [[0, 0]], [[-1, 2]], [[True, 1]], "x", [["a"]]]
)
def test_bad_profiles_are_refused_in_one_line(profile):
    with pytest.raises(ValueError, match="salient_heads=.* must be a list"):
        ahn.AHNConfig(salient=4, salient_heads=profile if profile != [[1]] else [[1], []])


def test_bad_share_is_refused():
    with pytest.raises(ValueError, match="salient_share='all' is not one of"):
        ahn.AHNConfig(salient_share="all")


@pytest.mark.parametrize("share", SHARES)
@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("chunk, split", [(16, 30), (7, 45), (45, 0), (9, 20)])
def test_paths_agree_with_budgets_and_shares(share, positions, chunk, split, ids):
    model = make_ahn_model("mistral-gqa", window=5, sinks=2, salient=3, salient_heads=PROFILE,
                           salient_share=share, positions=positions)  # fmt: skip
    parallel = model(ids, use_cache=False).logits
    stepped, cache = decode_logits(model, ids, split, chunk)
    torch.testing.assert_close(stepped, parallel, **TOL)
    budgets = store_budgets(PROFILE, 3, {0, 1}, 3, 2)
    for layer, G in zip(cache.layers, budgets, strict=True):
        assert layer.store.k.shape[1:3] == (1, sum(G))  # packed: what the budgets add up to
        assert layer.store.ok.sum().item() == sum(G) * ids.shape[0]  # full after 45 tokens
        dense = layer.store.unpack(G)
        assert dense.ok.sum(-1).tolist() == [list(G)] * ids.shape[0]
        assert torch.equal(dense.pack(G).k, layer.store.k)


def test_budgets_cost_their_sum_in_the_cache(ids):
    sizes = {}
    for name, profile in (("uniform", None), ("profile", PROFILE)):
        model = make_ahn_model("mistral-gqa", window=5, sinks=2, salient=3, salient_heads=profile)
        sizes[name] = ahn.cache_bytes(model(ids, use_cache=True).cache)
    assert sizes["profile"] == sizes["uniform"]  # the same 18 entries, held packed


def test_a_layer_without_budget_runs_without_a_store(ids):
    model = make_ahn_model("mistral-gqa", window=5, sinks=2, salient=3,
                           salient_heads=[[0, 0, 0], [1, 1, 1]])  # fmt: skip
    cache = model(ids, use_cache=True).cache
    assert cache.layers[0].store is None and cache.layers[1].store.k.shape[-2] == 6
    plain = make_ahn_model("mistral-gqa", window=5, sinks=2)  # the same weights, no store
    out, ref = model.model.layers[0], plain.model.layers[0]
    assert all(torch.equal(a, b) for a, b in zip(out.parameters(), ref.parameters()))
    a = model(ids, output_hidden_states=True).hidden_states[1]
    b = plain(ids, output_hidden_states=True).hidden_states[1]
    assert torch.equal(a, b)  # layer 0 is the AHN without a store, bit for bit


@pytest.mark.parametrize("share", ["layer", "global"])
def test_shared_choices_store_the_same_tokens(share, ids):
    model = make_ahn_model("mistral-gqa", window=5, sinks=2, salient=3, salient_share=share)
    cache = model(ids, use_cache=True).cache
    slots = [sorted(s) for layer in cache.layers for s in layer.store.slot[0].tolist()]
    if share == "layer":
        assert all(s == slots[0] for s in slots[:3]) and all(s == slots[3] for s in slots[3:])
    else:
        assert all(s == slots[0] for s in slots)
    alone = make_ahn_model("mistral-gqa", window=5, sinks=2, salient=3)
    own = [sorted(s) for layer in alone(ids, use_cache=True).cache.layers
           for s in layer.store.slot[0].tolist()]  # fmt: skip
    assert own != slots  # each head's own choice differs on random weights


def _entries(store: Store) -> list:
    """The (row, KV head, slot, key) of every entry, sorted: a store as a set."""
    ok = store.ok.nonzero().tolist()
    return sorted((b, h, int(store.slot[b, h, g]), store.k[b, h, g].tolist()) for b, h, g in ok)


def test_advance_one_is_advance_for_one_query():
    gen = torch.Generator().manual_seed(7)
    B, Hkv, G, D, W = 2, 3, 4, 5, 3
    budget = torch.tensor([4, 2, 0])
    store = Store.empty(torch.zeros(B, Hkv, 0, D), G)
    for t in range(W, 40):
        k, v = torch.randn(B, Hkv, 1, D, generator=gen), torch.randn(B, Hkv, 1, D, generator=gen)
        s = torch.randint(0, 3, (B, Hkv, 1), generator=gen).float()
        ok = torch.rand(B, Hkv, 1, generator=gen) > 0.2
        args = (store, k, v, torch.tensor([t - W]), s, ok)
        E_s, E_n, want = advance(*args, W=W, last_query=t, budget=budget)
        e_s, e_n, got = advance_one(*args, last_query=t, budget=budget)
        assert torch.equal((E_s > t) & store.ok, (e_s > t) & store.ok)
        assert torch.equal(E_n > t, e_n > t)
        assert _entries(want) == _entries(got)  # the same (slot, key) set, in any order
        store = got
    assert store.ok.sum(-1).tolist() == [[4, 2, 0]] * B


@pytest.mark.parametrize("budget", [None, (5, 2, 0)])
def test_split_expiry_is_the_quadratic_reference_for_the_block(budget):
    """`expiry_split` (what `advance` runs) against `expiry` (every candidate against every
    other): the same visibility for every query of each block, scores with many ties."""
    from ahn.integration.store import expiry, expiry_split

    gen = torch.Generator().manual_seed(3)
    B, Hkv, G, D, W = 2, 3, 5, 2, 4
    cap = None if budget is None else torch.tensor(budget)
    store, slot0 = Store.empty(torch.zeros(B, Hkv, 0, D), G), 0
    for m in (0, 3, 1, 7, 12, 2, 9):
        score = torch.randint(0, 4, (B, Hkv, m), generator=gen).float()
        ok = torch.rand(B, Hkv, m, generator=gen) > 0.2
        slots = torch.arange(slot0, slot0 + m)
        k = torch.randn(B, Hkv, m, D, generator=gen)
        ref = expiry(torch.cat([store.score, score], -1),
                     torch.cat([store.slot, slots.expand(B, Hkv, m)], -1),
                     torch.cat([store.ok, ok], -1), G, W, cap)  # fmt: skip
        got = expiry_split(store, score, slots, ok, W, cap)
        for t in range(slot0 + W, slot0 + W + max(m, 1)):  # the block's queries
            assert torch.equal(ref > t, got > t), (m, t)
        store = advance(store, k, k, slots, score, ok, W, slot0 + W + max(m, 1) - 1, cap)[2]
        slot0 += m


def test_novelty_one_token_at_a_time_is_the_whole_sequence():
    from ahn.integration.store import Evicted, novelty

    gen = torch.Generator().manual_seed(5)
    B, Hkv, n, D = 2, 3, 9, 8
    k, v = torch.randn(B, Hkv, n, D, generator=gen), torch.randn(B, Hkv, n, D, generator=gen)
    absorb = torch.ones(B, n, dtype=torch.bool)
    absorb[0, 4] = False
    whole, final = novelty(Evicted(k, v, None, None, absorb, None))
    first, state = novelty(Evicted(k[:, :, :1], v[:, :, :1], None, None, absorb[:, :1], None))
    scores = [first]
    for j in range(1, n):
        at = slice(j, j + 1)
        s, state = novelty(Evicted(k[:, :, at], v[:, :, at], None, None, absorb[:, at], state))
        scores.append(s)
    torch.testing.assert_close(torch.cat(scores, -1), whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state, final, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("profile", [None, PROFILE])
def test_decoding_between_prefills_keeps_the_store(profile, ids):
    """Prefill, decode, prefill again, ...: the packed store decoding writes is the one the next
    prefill unpacks (and the reverse)."""
    model = make_ahn_model("mistral-gqa", window=5, sinks=2, salient=3, salient_heads=profile)
    parallel = model(ids, use_cache=False).logits
    cache, logits, at = None, [], 0
    for size in (9, 1, 1, 1, 7, 1, 1, 1, 1, 12, 1, 1, 3, 1, 1, 1, 1, 1):
        out = model(ids[:, at : at + size], cache=cache, use_cache=True)
        cache, at = out.cache, at + size
        logits.append(out.logits)
    assert at == ids.shape[1]
    torch.testing.assert_close(torch.cat(logits, dim=1), parallel, **TOL)
