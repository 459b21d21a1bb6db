"""Fault injection: `ahn train` and `ahn eval` killed with SIGKILL at random points, then rerun,
end with the results of an uninterrupted run; no half-written file is taken for a finished one.

CI kills each twice (seeds 0, 1); more: `AHN_FAULT_SEEDS=0,1,2,3,4,5,6,7 python -m pytest ...`.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import ahn
from ahn.train.checkpoint import latest_checkpoint

SEEDS = tuple(int(s) for s in os.environ.get("AHN_FAULT_SEEDS", "0,1").split(","))
TEXT = "the quick brown fox jumps over the lazy dog while the old mill turns by the river. "


def _ahn_cmd(*args):
    return [sys.executable, "-m", "ahn", *map(str, args)]


def _killed_then_finished(cmd, rerun, seed, reference_seconds):
    """Run `cmd`, SIGKILL it at a random moment of its expected life, then run `rerun` to the
    end. Returns the kill time (None when the first run finished before it)."""
    at = random.Random(seed).uniform(0.3, 0.95) * reference_seconds
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=at)
        killed = None
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = at
    done = subprocess.run(rerun, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, _errors(done.stderr)
    return killed


def _errors(stderr: str) -> str:
    """stderr without the progress bars."""
    return "\n".join(x for x in stderr.replace("\r", "\n").splitlines() if "it/s" not in x)


def _timed(cmd):
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, _errors(done.stderr)
    return time.perf_counter() - start


def _no_visible_partial_files(folder):
    """Every visible file is complete: json parses, safetensors loads (temporaries are hidden)."""
    for path in folder.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # an atomic write's temporary: never read as a result
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny base + the character tokenizer (a spare id row for the eos token that
    `AutoTokenizer` adds when the directory is read back)."""
    from train_helpers import char_tokenizer, tiny_qwen2

    path = tmp_path_factory.mktemp("base")
    tokenizer = char_tokenizer()
    tiny_qwen2(vocab_size=len(tokenizer) + 8).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": TEXT * (3 + i)}) + "\n" for i in range(12)))
    return path


def test_train_killed_anywhere_resumes_to_the_same_ahn(tmp_path, base_dir, data):
    def cmd(out, *extra):
        return _ahn_cmd("train", "--base", base_dir, "--data", data, "--output", out,
                        "--window", 16, "--sinks", 2, "--train-window", "fixed", "--seq-len", 96,
                        "--steps", 8, "--batch-size", 2, "--lr", "1e-2", "--save-every", 2,
                        "--dtype", "float32", "--device", "cpu", *extra)  # fmt: skip

    seconds = _timed(cmd(tmp_path / "straight"))
    expected = load_file(str(tmp_path / "straight" / "ahn_model.safetensors"))
    for seed in SEEDS:
        out = tmp_path / f"killed-{seed}"
        _killed_then_finished(cmd(out), cmd(out, "--resume"), seed, seconds)
        _no_visible_partial_files(out)
        got = load_file(str(out / "ahn_model.safetensors"))
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert torch.equal(got[name], value), (seed, name)
        assert latest_checkpoint(out).name == "checkpoint-8"


def test_eval_killed_anywhere_reruns_to_the_same_results(tmp_path, base_dir, data):
    from transformers import AutoModelForCausalLM

    model = ahn.augment(AutoModelForCausalLM.from_pretrained(base_dir),
                        ahn.AHNConfig(window=16, sinks=2))  # fmt: skip
    torch.manual_seed(0)
    for _, p in ahn.trainable_parameters(model):
        p.data.normal_(0.0, 0.3)
    ahn_dir = ahn.save(model, tmp_path / "ahn")

    def cmd(out):
        return _ahn_cmd("eval", "--base", base_dir, "--ahn", ahn_dir, "--task", "nll,passkey",
                        "--data", data, "--lengths", "400,500", "--depths", "0.5", "--limit", 3,
                        "--max-new-tokens", 3, "--output", out, "--device", "cpu",
                        "--dtype", "float32")  # fmt: skip

    def scores(out):
        results = json.loads((out / "results.json").read_text())
        return {k: v for k, v in results.items() if k not in ("efficiency", "config")}

    seconds = _timed(cmd(tmp_path / "straight"))
    expected = scores(tmp_path / "straight")
    for seed in SEEDS:
        out = tmp_path / f"killed-{seed}"
        _killed_then_finished(cmd(out), cmd(out), seed, seconds)
        _no_visible_partial_files(out)
        assert scores(out) == expected, seed
