import json

import pytest
import torch

from ahn.cli import main
from ahn.demo.evaluate import METHODS
from ahn.demo.toy import DemoConfig, run_demo

FIGURES = ("beyond_window_accuracy", "answer_nll", "kl_to_full", "cache_bytes", "model_flops",
           "tokens_per_s", "nll_by_position", "accuracy_by_distance")  # fmt: skip


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    code = main(["demo-toy", "--output", str(out), "--steps", "2", "--batch-size", "2",
                 "--eval-samples", "4", "--seed", "42"])  # fmt: skip
    assert code == 0
    return out


def test_reduced_demo_writes_the_report(reduced):
    report = json.loads((reduced / "report.json").read_text())
    for method in METHODS:
        row = report["results"][method]
        assert set(FIGURES) <= set(row)
        assert 0.0 <= row["beyond_window_accuracy"] <= 1.0
    assert report["results"]["full"]["kl_to_full"] == pytest.approx(0.0, abs=1e-6)
    assert len(report["train"]["kl"]) == 2
    bill = report["memory_bill"]
    assert bill["full"]["cache_bytes"][-1] > bill["full"]["cache_bytes"][0]
    assert bill["sliding"]["cache_bytes"][-1] == bill["sliding"]["cache_bytes"][0]
    assert bill["ahn"]["cache_bytes"][-1] == bill["ahn"]["cache_bytes"][0]
    assert "accuracy beyond window" in (reduced / "report.md").read_text()
    for name in ("accuracy", "nll_by_position", "memory", "training"):
        assert (reduced / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (reduced / "ahn" / "ahn_config.json").is_file()
    for example in report["examples"]:
        assert set(example["answers"]) == set(METHODS)
        assert example["answers"]["full"] == example["expected"]


def test_demo_is_deterministic_for_a_seed(reduced, tmp_path):
    again = run_demo(DemoConfig(output=str(tmp_path), steps=2, batch_size=2, eval_samples=4))
    first = json.loads((reduced / "report.json").read_text())
    assert again["train"]["kl"] == first["train"]["kl"]
    for method in METHODS:
        assert again["results"][method]["answer_nll"] == first["results"][method]["answer_nll"]


@pytest.mark.parametrize("flag, value", [("--steps", "0"), ("--window", "0"), ("--lr", "-1")])
def test_demo_rejects_bad_flags(flag, value, capsys, tmp_path):
    assert main(["demo-toy", "--output", str(tmp_path), flag, value]) == 2
    assert f"{flag}={value}" in capsys.readouterr().err
