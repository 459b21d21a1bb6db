"""`ahn flops` reproduces the paper's Table 1 figures for Qwen2.5-3B from a config.json."""

import json
from pathlib import Path

import pytest

from ahn.cli import main
from ahn.eval.flops import ModelShape, causal_pairs, efficiency, parse_length
from ahn.registry import MEMORY_TYPES

CONFIG = Path(__file__).parents[1] / "fixtures" / "eval" / "qwen2.5-3b-config.json"


@pytest.fixture(scope="module")
def shape():
    from ahn.eval.flops import load_config

    return ModelShape.from_config(load_config(CONFIG))


def test_paper_table_1(shape):
    report = efficiency(shape, length=128_000, window=32_640, sinks=128)
    assert f"{report['full']['model_flops']:.2e}" == "3.29e+15"
    assert f"{report['ahn']['model_flops']:.2e}" == "1.95e+15"
    assert f"{report['full']['cache_bytes'] / 1e9:.2f}" == "9.44"
    assert f"{report['ahn']['cache_bytes'] / 1e9:.2f}" == "2.45"
    assert f"{100 * report['reduction']['model_flops']:.1f}" == "40.5"
    assert f"{100 * report['reduction']['cache_bytes']:.1f}" == "74.0"


def test_matmul_parameters_count_tied_embedding_twice(shape):
    non_embedding = 36 * (2048 * 2048 * 2 + 2 * 2048 * 256 + 3 * 2048 * 11008)
    assert shape.matmul_parameters - 2 * 151936 * 2048 == pytest.approx(non_embedding, rel=1e-3)


@pytest.mark.parametrize(
    "memory, millions", [("gated_deltanet", "13.0"), ("mamba2", "11.9")], ids=["gdn", "mamba2"]
)
def test_ahn_parameter_counts(shape, memory, millions):
    report = efficiency(shape, length=10, window=4, sinks=0, memory=memory)
    assert f"{report['ahn']['breakdown']['ahn_parameters'] / 1e6:.1f}" == millions


@pytest.mark.parametrize("memory", sorted(MEMORY_TYPES))
def test_ahn_parameter_formula_matches_the_modules(memory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import ahn

    config = Qwen2Config(
        vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2,
    )  # fmt: skip
    model = ahn.augment(Qwen2ForCausalLM(config), ahn.AHNConfig(memory=memory, layers=[0, 2]))
    counted = sum(p.numel() for _, p in ahn.trainable_parameters(model))
    report = efficiency(config, length=64, window=8, sinks=0, memory=memory, layers=[0, 2])
    assert report["ahn"]["breakdown"]["ahn_parameters"] == counted


def test_breakdown_adds_up_and_short_inputs_cost_no_memory(shape):
    report = efficiency(shape, length=1000, window=2000, sinks=4)
    for method in ("full", "sliding", "ahn"):
        row = report[method]
        flops = ("linear_flops", "attention_flops", "memory_flops")
        assert row["model_flops"] == sum(row["breakdown"][key] for key in flops)
        assert (
            row["cache_bytes"]
            == row["breakdown"]["kv_cache_bytes"] + row["breakdown"]["state_bytes"]
        )
    assert report["ahn"]["breakdown"]["memory_flops"] == 0
    assert report["sliding"]["model_flops"] == report["full"]["model_flops"]


def test_partial_layers_keep_full_attention(shape):
    all_layers = efficiency(shape, length=4096, window=512, sinks=0)
    two_layers = efficiency(shape, length=4096, window=512, sinks=0, layers=[0, 1])
    per_layer = (all_layers["full"]["cache_bytes"] - all_layers["sliding"]["cache_bytes"]) / 36
    saved = two_layers["full"]["cache_bytes"] - two_layers["sliding"]["cache_bytes"]
    assert saved == pytest.approx(2 * per_layer)


def test_causal_pairs():
    assert causal_pairs(5) == 15
    assert causal_pairs(5, lossless=2) == 1 + 2 * 4
    assert causal_pairs(3, lossless=8) == 6


def test_parse_length_and_bad_input(shape):
    assert parse_length("128000") == 128000
    assert parse_length("4k") == 4096
    with pytest.raises(ValueError, match="length"):
        parse_length("4x")
    with pytest.raises(ValueError, match="memory"):
        efficiency(shape, length=10, window=4, sinks=0, memory="lstm")
    with pytest.raises(ValueError, match="window"):
        efficiency(shape, length=10, window=0, sinks=0)


def test_cli_json(capsys):
    argv = [
        "flops",
        "--base",
        str(CONFIG),
        "--length",
        "128000",
        "--window",
        "32640",
        "--sinks",
        "128",
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["full"]) >= {"model_flops", "cache_bytes", "breakdown"}
    assert report["ahn"]["cache_bytes"] == 2 * 36 * 256 * 32768 * 4 + 36 * 16 * 128 * 128 * 4


def test_cli_table_and_missing_config(capsys, tmp_path):
    argv = ["flops", "--base", str(CONFIG), "--length", "64k", "--window", "1024", "--sinks", "0"]
    assert main(argv) == 0
    assert "| ahn |" in capsys.readouterr().out
    assert (
        main(["flops", "--base", str(tmp_path), "--length", "8", "--window", "4", "--sinks", "0"])
        == 2
    )
    assert sorted(MEMORY_TYPES) == ["deltanet", "gated_deltanet", "mamba2"]


def test_salient_store_adds_its_keys_and_pairs(shape):
    from ahn.eval.flops import store_pairs

    # query t >= lossless reads min(G, t + 1 - lossless): lossless 4, G 2, 8 tokens: 1 + 2 + 2 + 2
    assert store_pairs(8, 4, 2) == 7 and store_pairs(5, 4, 3) == 1 and store_pairs(3, 4, 2) == 0
    plain = efficiency(shape, length=8192, window=480, sinks=32)
    stored = efficiency(shape, length=8192, window=480, sinks=32, salient=64)
    H, D, Hkv, n = shape.n_heads, shape.head_dim, shape.n_kv_heads, shape.n_layers
    extra_kv = stored["ahn"]["cache_bytes"] - plain["ahn"]["cache_bytes"]
    assert extra_kv == n * 64 * 2 * Hkv * D * 4
    extra_flops = stored["ahn"]["model_flops"] - plain["ahn"]["model_flops"]
    assert extra_flops == 4 * H * D * n * store_pairs(8192, 512, 64)
    assert stored["sliding"] == plain["sliding"] and stored["inputs"]["salient"] == 64
    with pytest.raises(ValueError, match="salient"):
        efficiency(shape, length=10, window=4, sinks=0, salient=-1)
