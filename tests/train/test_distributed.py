"""`torchrun` with 2 CPU processes (gloo) against one process with the doubled batch."""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from ahn.cli import main


def write_text_data(path, count=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    letters = "abcdefghij klmnopqrst"
    with open(path, "w") as handle:
        for _ in range(count):
            length = int(torch.randint(40, 90, (1,), generator=g))
            text = "".join(
                letters[i] for i in torch.randint(0, len(letters), (length,), generator=g)
            )
            handle.write(json.dumps({"text": text}) + "\n")
    return path


def test_two_processes_equal_one_with_the_doubled_batch(tmp_path, base_dir):
    data = write_text_data(tmp_path / "d.jsonl")
    common = [
        "--base",
        str(base_dir),
        "--data",
        str(data),
        "--seq-len",
        "64",
        "--steps",
        "3",
        "--lr",
        "1e-2",
        "--save-every",
        "0",
        "--min-len",
        "40",
    ]
    assert main(["train", *common, "--output", str(tmp_path / "one"), "--batch-size", "4"]) == 0
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "ahn",
        "train",
        *common,
        "--output",
        str(tmp_path / "two"),
        "--batch-size",
        "1",
        "--grad-accum",
        "2",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one = load_file(str(tmp_path / "one" / "ahn_model.safetensors"))
    two = load_file(str(tmp_path / "two" / "ahn_model.safetensors"))
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
    logs = [
        [json.loads(x) for x in open(tmp_path / run / "train_log.jsonl")] for run in ("one", "two")
    ]
    for a, b in zip(*logs, strict=True):
        assert (a["sinks"], a["window"], a["loss_tokens"]) == (
            b["sinks"],
            b["window"],
            b["loss_tokens"],
        )
        for key in ("kl", "grad_norm"):  # grad_norm: gradients are sums, not per-rank means
            assert abs(a[key] - b[key]) <= 1e-4 * abs(a[key]), key
