"""The baselines of `ahn eval` past the base's context: full attention over the last context's
tokens (strided NLL, cut prompts) and transformers' RoPE scaling, against their definitions."""

import json
import sys
from pathlib import Path

import pytest
import torch

import ahn
from ahn.cli import main
from ahn.eval import methods, nll

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from tiny_models import make_ahn_model  # noqa: E402

CONTEXT = 16


@pytest.fixture
def model():
    model = make_ahn_model("llama-mha", window=8, sinks=2)
    model.config.max_position_embeddings = CONTEXT
    return model


def test_truncated_nll_scores_each_target_once_with_half_a_context_or_more(model):
    ids = torch.randint(0, 97, (1, 45), generator=torch.Generator().manual_seed(42))
    with methods.running(model, "truncated", 45):  # never past the context: no warning
        got = methods.truncated_nll(model, ids)[0]  # [44]
    assert got.shape == (44,)
    with ahn.mode(model, "full"):
        for target in range(1, 45):  # windows end at 16, 24, 32, 40, 45
            end = next(e for e in (16, 24, 32, 40, 45) if e > target)
            start = max(0, end - CONTEXT)
            assert start == 0 or target - start >= CONTEXT // 2
            want = nll.token_nll(model, ids[:, start : target + 1])[0, -1]
            torch.testing.assert_close(got[target - 1], want, atol=1e-5, rtol=1e-5)


def test_truncated_prompt_keeps_the_last_context_tokens(model):
    ids = torch.arange(40)[None]
    assert torch.equal(methods.truncated_prompt(ids, model, 4), ids[:, -12:])


@pytest.mark.parametrize("rope_type", ["yarn", "dynamic"])
def test_rope_scaling_is_transformers_own_and_put_back(model, rope_type):
    ids = torch.randint(0, 97, (1, 45), generator=torch.Generator().manual_seed(42))
    original = model.model.rotary_emb
    with ahn.mode(model, "full"), pytest.warns(UserWarning):
        full = nll.token_nll(model, ids)
    with methods.running(model, rope_type, 45), pytest.warns(UserWarning):
        assert model.model.rotary_emb.rope_type == rope_type
        scaled = nll.token_nll(model, ids)
    assert model.model.rotary_emb is original
    assert (scaled - full).abs().max() > 1e-5


def test_eval_runs_the_baselines(tmp_path, tiny_base_dir):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "the quick brown fox jumps over the lazy dog. " * 20}))
    out = tmp_path / "out"
    argv = [
        "eval", "--base", str(tiny_base_dir), "--task", "nll,passkey", "--data", str(docs),
        "--lengths", "300", "--depths", "0.5", "--max-new-tokens", "2", "--limit", "1",
        "--methods", "full,truncated,yarn,dynamic,sliding", "--positions", "bounded",
        "--window", "32", "--sinks", "4", "--output", str(out), "--device", "cpu",
        "--dtype", "float32",
    ]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]["nll"]) == {"full", "truncated", "yarn", "dynamic", "sliding"}
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {r["positions"] for r in records} == {"bounded"}


def test_rebased_nll_reads_each_block_behind_the_sinks_and_its_window(model):
    """Targets past sinks + window + block are read as [sinks, window before their block,
    block]: every distance inside the context (16 here, S + W = 2 + 8: blocks of 6)."""
    ids = torch.randint(0, 97, (1, 45), generator=torch.Generator().manual_seed(42))
    with methods.running(model, "rebased", 45):
        got = methods.rebased_nll(model, ids)[0]
        assert got.shape == (44,)
        for target in range(1, 45):
            if target < 16:  # the first sinks + window + block tokens: read as they are
                want = nll.token_nll(model, ids[:, : target + 1])[0, -1]
            else:
                a = 16 + (target - 16) // 6 * 6  # the first target of its block
                piece = torch.cat([ids[:, :2], ids[:, a - 8 : target + 1]], dim=1)
                assert piece.shape[1] <= CONTEXT
                want = nll.token_nll(model, piece)[0, -1]
            torch.testing.assert_close(got[target - 1], want, atol=1e-5, rtol=1e-5)


def test_rebased_is_for_nll_only():
    from ahn.eval.config import EvalConfig

    with pytest.raises(ValueError, match="'rebased' reads NLL only"):
        EvalConfig(tasks=["passkey"], methods=["rebased"])
