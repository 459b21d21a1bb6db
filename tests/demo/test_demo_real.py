"""The real demo's report (the model run itself needs the SmolLM2 download: `make demo`)."""

import pytest

from ahn.demo.real import METHODS, RealDemoConfig, markdown


def _report(salient):
    row = dict(nll_within_window=2.5, nll_beyond_window=2.1, passkey_beyond_window=0.5,
               cache_bytes=1000, model_flops=1e12, tokens_per_s=100.0)  # fmt: skip
    results = {m: dict(row) for m in METHODS}
    results["ahn"]["nll_gap_recovered"] = 0.4
    chat = {"prompt_tokens": 1536, "question": "Q?", "expected": "A."}
    chat.update({m: {"answer": f"{m} says"} for m in METHODS})
    return {
        "results": results,
        "config": {"length": 4096, "sinks": 32, "window": 480, "salient": salient},
        "base": {"path": "/x/smollm2"},
        "ahn": {"config": {"memory": "gated_deltanet"}, "parameters": 10},
        "chat": chat,
    }


def test_markdown_names_the_store():
    text = markdown(_report(64))
    assert "| ahn + store 64 |" in text and "salient store of 64 tokens" in text
    assert "- ahn + store 64: 'ahn says'" in text
    assert "| ahn |" in markdown(_report(0)) and "store" not in markdown(_report(0))


def test_bad_salient_is_refused():
    with pytest.raises(ValueError, match="--salient=-1"):
        RealDemoConfig(salient=-1)


def test_the_line_past_the_base_context(tmp_path):
    """One piece longer than the base's context, read by the sliding window with original and
    bounded positions and by the AHN with bounded ones; its line in the report."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from tiny_models import char_tokenizer, make_ahn_model

    from ahn.demo.real import beyond_context

    model = make_ahn_model(window=8, sinks=2, salient=2)
    model.config.max_position_embeddings = 40
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps({"text": "the quick brown fox jumps over the lazy dog. " * 4}))
    beyond = beyond_context(model, char_tokenizer(), heldout, 64)
    assert beyond["length"] == 64 and beyond["context"] == 40
    assert beyond["sliding (original)"] != beyond["sliding"] != beyond["ahn"]
    assert beyond_context(model, char_tokenizer(), heldout, 40) is None  # not past it
    report = _report(64) | {"beyond_context": beyond}
    assert "Past the base's context (one 64-token piece, NLL of positions 40+)" in markdown(report)
