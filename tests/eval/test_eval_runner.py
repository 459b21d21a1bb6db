"""End to end: `ahn eval` on a tiny model writes every output, resumes, and the NLL curves of
the three methods agree inside the window and part after it."""

import json
from pathlib import Path

import pytest
import torch

import ahn
from ahn.cli import main
from ahn.eval import synthetic
from ahn.eval.runner import EvalConfig


@pytest.fixture(scope="module")
def ahn_dir(tmp_path_factory, tiny_base_dir):
    """A saved AHN (window 32, sinks 4) with random non-zero weights, so "ahn" != "sliding"."""
    from transformers import AutoModelForCausalLM

    model = ahn.augment(
        AutoModelForCausalLM.from_pretrained(tiny_base_dir), ahn.AHNConfig(window=32, sinks=4)
    )
    torch.manual_seed(42)
    for _, p in ahn.trainable_parameters(model):
        p.data.normal_(0.0, 0.5)
    path = tmp_path_factory.mktemp("ahn")
    ahn.save(model, path)
    return path


def test_ahn_eval_end_to_end(tmp_path, tiny_base_dir, ahn_dir):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "the quick brown fox jumps over the lazy dog. " * 20}))
    out = tmp_path / "out"
    argv = [
        "eval", "--base", str(tiny_base_dir), "--ahn", str(ahn_dir), "--task", "passkey,copy,nll",
        "--data", str(docs), "--lengths", "300,360", "--depths", "0.5", "--max-new-tokens", "2",
        "--output", str(out), "--device", "cpu", "--dtype", "float32",
    ]  # fmt: skip
    assert main(argv) == 0
    for name in ["predictions.jsonl", "results.json", "results.md", "score_vs_length.png",
                 "depth_heatmap_passkey.png", "nll_vs_position_300.png"]:  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 3 * 3 * 2  # (passkey, copy, nll) x methods x lengths
    results = json.loads((out / "results.json").read_text())
    assert (results["window"], results["sinks"]) == (32, 4)
    for task in ("passkey", "copy", "nll"):
        assert set(results["scores"][task]) == {"full", "sliding", "ahn"}
        assert set(results["scores"][task]["ahn"]) == {"300", "360"}
    cost = results["efficiency"]
    assert all(cost[m]["tokens_per_s"] > 0 for m in cost)
    if Path("/proc/self/statm").exists():  # peak resident memory, sampled on a CPU
        assert all(cost[m]["peak_memory_bytes"] > 10 * 2**20 for m in cost)
    assert cost["sliding"]["cache_bytes"] < cost["full"]["cache_bytes"]
    assert "| full |" in (out / "results.md").read_text()

    curves = results["nll"]["360"]  # buckets of 360 // 32 = 11 positions; S + W = 36
    inside = slice(0, 3)  # positions 0..32, all of whose keys are in the window
    assert curves["full"]["nll"][inside] == pytest.approx(
        curves["sliding"]["nll"][inside], rel=1e-4
    )
    assert curves["ahn"]["nll"][inside] == pytest.approx(curves["sliding"]["nll"][inside], rel=1e-4)
    assert curves["full"]["nll"][-1] != pytest.approx(curves["sliding"]["nll"][-1], rel=1e-4)
    assert curves["ahn"]["nll"][-1] != pytest.approx(curves["sliding"]["nll"][-1], rel=1e-4)
    assert curves["full"]["within_window"] == pytest.approx(curves["sliding"]["within_window"])
    assert curves["full"]["beyond_window"] != pytest.approx(curves["sliding"]["beyond_window"])

    assert main(argv) == 0  # resumed: nothing new is generated
    assert (out / "predictions.jsonl").read_text().splitlines() == lines

    torn = "\n".join(lines[:-1]) + "\n" + lines[-1][:20]  # a crash in the middle of a line
    (out / "predictions.jsonl").write_text(torn)
    assert main(argv) == 0
    redone = (out / "predictions.jsonl").read_text().splitlines()
    assert redone[:-2] == lines[:-1] and redone[-2] == lines[-1][:20]
    assert json.loads(redone[-1])["key"] == json.loads(lines[-1])["key"]


def test_task_groups_and_benchmark_all_expand():
    fixtures = Path(__file__).parents[1] / "fixtures" / "eval"
    config = EvalConfig(tasks=["ruler_noise", "vt", "passkey"], lengths=[512])
    assert config.tasks == [*synthetic.GROUPS["ruler_noise"], "passkey"]
    config = EvalConfig(tasks=["longbench:all"], lengths=[512], data=str(fixtures / "longbench"))
    assert config.tasks == ["longbench:hotpotqa", "longbench:trec"]
    config = EvalConfig(tasks=["lveval:all"], lengths=[512], data=str(fixtures / "lveval"))
    assert config.tasks == ["lveval:hotpotwikiqa_mixup_16k", "lveval:factrecall_en_16k"]
    with pytest.raises(FileNotFoundError, match="no file"):
        EvalConfig(tasks=["infinitebench:all"], lengths=[512], data=str(fixtures / "lveval"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tasks": ["nope"]}, "unknown"),
        ({"methods": ["fast"]}, "methods"),
        ({"lengths": [0]}, "lengths"),
        ({"depths": [2.0]}, "depths"),
        ({"tasks": ["nll"]}, "data"),
    ],
    ids=["task", "method", "length", "depth", "nll-needs-data"],
)
def test_eval_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvalConfig(**{"tasks": ["passkey"], "lengths": [512], **kwargs})
