"""Generated inputs (hypothesis): for random sinks, window, prefill chunk, prefill/decode split,
left padding and batch size, under all three memories, the parallel forward, chunked prefill
and token-by-token decode give the same logits at every real (unpadded) position.

CI runs a fixed, derandomized set of examples; a longer search:
    AHN_PROPERTY_EXAMPLES=2000 python -m pytest tests/integration/test_paths_property.py
"""

import os

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import make_ahn_model

import ahn

EXAMPLES = int(os.environ.get("AHN_PROPERTY_EXAMPLES", "30"))
TOL = dict(atol=5e-5, rtol=1e-4)


@st.composite
def cases(draw):
    T = draw(st.integers(1, 40))
    batch = draw(st.integers(1, 3))
    return {
        "memory": draw(st.sampled_from(ahn.MEMORY_TYPES)),
        "sinks": draw(st.integers(0, 6)),
        "window": draw(st.integers(1, 12)),
        "chunk": draw(st.integers(1, 16)),
        "T": T,
        "split": draw(st.integers(0, T)),
        "pads": draw(st.lists(st.integers(0, T - 1), min_size=batch, max_size=batch)),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(case=cases())
def test_three_paths_agree(case):
    model = make_ahn_model(memory=case["memory"], window=case["window"], sinks=case["sinks"],
                           prefill_chunk=case["chunk"])  # fmt: skip
    T, pads = case["T"], case["pads"]
    gen = torch.Generator().manual_seed(case["seed"])
    ids = torch.randint(0, 97, (len(pads), T), generator=gen)
    mask = torch.ones(len(pads), T, dtype=torch.long)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    parallel = model(ids, attention_mask=mask, use_cache=False).logits
    prefilled = model(ids[:, : case["split"]], attention_mask=mask[:, : case["split"]],
                      use_cache=True) if case["split"] else None  # fmt: skip
    cache = None if prefilled is None else prefilled.cache
    pieces = [] if prefilled is None else [prefilled.logits]
    for t in range(case["split"], T):
        out = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache,
                    use_cache=True)  # fmt: skip
        cache = out.cache
        pieces.append(out.logits)
    stepped = torch.cat(pieces, dim=1)
    real = mask.bool()
    torch.testing.assert_close(stepped[real], parallel[real], **TOL)
    assert cache.get_seq_length() == T
