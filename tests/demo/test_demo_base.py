import json

import pytest
import torch

import ahn
from ahn.cli import main
from ahn.demo.base import (
    BASE_DIR,
    TASK_FILE,
    PretrainConfig,
    answer_accuracy,
    load_base,
    model_config,
)
from ahn.demo.pretrain import DEMO_SINKS, DEMO_WINDOW
from ahn.demo.tasks import TaskConfig, make_batch

MAX_BYTES = 2_000_000  # docs/demo.md: "under 2 MB"


@pytest.fixture(scope="module")
def shipped():
    torch.manual_seed(42)
    model, tokenizer = load_base()
    info = json.loads((BASE_DIR / TASK_FILE).read_text())
    return model, tokenizer, info


def test_shipped_files_and_size(shipped):
    model, tokenizer, info = shipped
    files = {p.name for p in BASE_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", TASK_FILE} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert sum(p.stat().st_size for p in BASE_DIR.iterdir()) < MAX_BYTES
    task = TaskConfig(**info["task"])
    expected = model_config(PretrainConfig(**info["pretrain"]), task)
    assert model.config.model_type == "qwen2"
    assert model.config.hidden_size == expected.hidden_size
    assert model.config.num_hidden_layers == expected.num_hidden_layers
    assert len(tokenizer) == model.config.vocab_size
    ids = make_batch(2, task, seed=5).input_ids
    assert tokenizer(tokenizer.batch_decode(ids))["input_ids"] == ids.tolist()


def test_shipped_model_needs_long_range(shipped):
    model, _, info = shipped
    task = TaskConfig(**{**info["task"], "extra_queries": 0})
    batch = make_batch(48, task, seed=123)
    ahn.augment(model, ahn.AHNConfig(window=DEMO_WINDOW, sinks=DEMO_SINKS))
    with ahn.mode(model, "full"):
        full = answer_accuracy(model, batch)
    with ahn.mode(model, "sliding"):
        sliding = answer_accuracy(model, batch)
    assert full >= 0.9
    assert sliding <= full - 0.3


def test_pretrain_command_is_deterministic_and_loadable(tmp_path):
    flags = "--hidden 16 --layers 1 --heads 2 --steps 2 --batch-size 2 --check-samples 4".split()
    for name in ("a", "b"):
        assert main(["pretrain-demo-base", "--output", str(tmp_path / name), *flags]) == 0
    weights = [(tmp_path / n / "model.safetensors").read_bytes() for n in ("a", "b")]
    assert weights[0] == weights[1]
    model, tokenizer = load_base(tmp_path / "a")
    assert model.config.hidden_size == 16 and tokenizer.bos_token == "<bos>"
    info = json.loads((tmp_path / "a" / TASK_FILE).read_text())
    assert set(info["check"]) >= {"full_accuracy", "sliding_accuracy"}
