"""End to end: `ahn eval` on a tiny model writes every output, resumes, and the NLL curves of
the three methods agree inside the window and part after it."""

import json
from pathlib import Path

import pytest
import torch

import ahn
from ahn.cli import main
from ahn.eval import synthetic
from ahn.eval.config import EvalConfig


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
        "--limit", "1", "--output", str(out), "--device", "cpu", "--dtype", "float32",
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


def test_rerun_with_other_weights_does_not_reuse_predictions(
    tmp_path, tiny_base_dir, ahn_dir, capsys
):
    """Predictions are keyed by what made them: another AHN in the same --output starts fresh."""
    from transformers import AutoModelForCausalLM

    other = ahn.load(AutoModelForCausalLM.from_pretrained(tiny_base_dir), ahn_dir)
    with torch.no_grad():
        for _, p in ahn.trainable_parameters(other):
            p.mul_(0.5)
    other_dir = ahn.save(other, tmp_path / "other-ahn")
    out = tmp_path / "out"
    argv = ["eval", "--base", str(tiny_base_dir), "--task", "passkey", "--lengths", "300",
            "--depths", "0.5", "--max-new-tokens", "2", "--output", str(out),
            "--device", "cpu", "--dtype", "float32", "--methods", "ahn"]  # fmt: skip
    assert main([*argv, "--ahn", str(ahn_dir)]) == 0
    first = (out / "predictions.jsonl").read_text().splitlines()
    capsys.readouterr()
    assert main([*argv, "--ahn", str(other_dir)]) == 0
    assert "ahn_weights_sha256" in capsys.readouterr().out
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 2 * len(first)  # made again, not reused
    runs = {json.loads(line)["run"] for line in lines}
    assert len(runs) == 2


def test_nll_reads_every_piece_unless_limited(tmp_path, tiny_base_dir, ahn_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ahn.eval.runner import evaluate

    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "the quick brown fox jumps over the lazy dog. " * 60}))
    model = ahn.load(AutoModelForCausalLM.from_pretrained(tiny_base_dir), ahn_dir)
    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    every = evaluate(model, tok, EvalConfig(["nll"], [100], ["sliding"], data=str(docs)),
                     tmp_path / "a", progress=False)  # fmt: skip
    limited = evaluate(model, tok, EvalConfig(["nll"], [100], ["sliding"], data=str(docs), limit=2),
                       tmp_path / "b", progress=False)  # fmt: skip
    assert every["items"]["nll"]["sliding"]["100"] > 2
    assert limited["items"]["nll"]["sliding"]["100"] == 2
    assert "items per score: 100: 2" in (tmp_path / "b" / "results.md").read_text()


def test_missing_matplotlib_is_said_before_the_work_and_results_still_written(
    tmp_path, tiny_base_dir, ahn_dir, monkeypatch, capsys
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ahn.eval import report
    from ahn.eval.runner import evaluate

    monkeypatch.setattr(report, "can_plot", lambda: False)
    model = ahn.load(AutoModelForCausalLM.from_pretrained(tiny_base_dir), ahn_dir)
    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    config = EvalConfig(["passkey"], [300], ["sliding"], depths=[0.5], max_new_tokens=2)
    evaluate(model, tok, config, tmp_path, progress=False)
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert (tmp_path / "results.json").is_file() and not list(tmp_path.glob("*.png"))


def test_a_head_profile_is_run_recorded_and_drawn(tmp_path, tiny_base_dir, ahn_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ahn.eval.runner import evaluate

    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"salient_heads": [[1, 0], [0, 3]]}))
    model = ahn.load(AutoModelForCausalLM.from_pretrained(tiny_base_dir), ahn_dir)
    tok = AutoTokenizer.from_pretrained(tiny_base_dir)
    config = EvalConfig(["passkey"], [300], ["ahn"], depths=[0.5], max_new_tokens=2, salient=4,
                        salient_heads=str(profile), salient_share="layer")  # fmt: skip
    evaluate(model, tok, config, tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()[0])
    assert record["identity"]["ahn_config"]["salient_heads"] == [[1.0, 0.0], [0.0, 3.0]]
    assert record["identity"]["ahn_config"]["salient_share"] == "layer"
    assert (tmp_path / "run" / "store_budgets.png").is_file()
    rt = ahn.integration.augment.runtime_of(model)
    assert rt.config.salient_heads is None and rt.config.salient_share == "head"  # put back
