"""The benchmark scripts (`make bench`) run end to end at tiny sizes and print their tables."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"

TINY = {
    "ops.py": "--T 40 --heads 2 --head-dim 16 --repeats 1",
    "inference.py": "--lengths 48,96 --window 16 --sinks 2 --decode-tokens 2",
    "memory_file.py": "--models demo --lengths 64,128 --window 16 --sinks 2",
    "real_shape.py": "--layers 1 --batches 1x640 --lengths 640 --decode-tokens 2 --repeats 1 "
    "--parts floor,train,inference,compile --rounds 1",
    "soak.py": "--tokens 3000 --chunk 256 --decode 8 --window 16 --sinks 2",
    "long_decode.py": "--lengths 64,256 --layers 1 --window 16 --sinks 2 --salient 4 --chunk 32 "
    "--decode-tokens 2 --rounds 1",
    "train.py": "--seq-lens 64 --hidden 32 --layers 1 --heads 2 --kv-heads 1 --vocab 64 "
    "--window 16 --sinks 2 --repeats 1",
}
EXPECT = {
    "memory_file.py": "ratio",
    "ops.py": "GFLOP/s",
    "real_shape.py": (
        "ahn / sliding decode",
        "where decode time goes",
        "memory update + read",
        "compiled vs eager in one process",
    ),  # fmt: skip
    "soak.py": "(constant), non-finite logits 0",
    "inference.py": "ratios",
    "train.py": "tok",
    "long_decode.py": "decode 256 / 64",
}


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_and_prints_a_table(script):
    cmd = [sys.executable, str(BENCHMARKS / script), *TINY[script].split(), "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = EXPECT[script]
    for text in (expected,) if isinstance(expected, str) else expected:
        assert text in done.stdout
