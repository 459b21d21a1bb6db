"""ahn.save / ahn.load: round trip, official layouts, and clear errors."""

import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import make_ahn_model, make_model, randomize_ahn

import ahn


def ahn_tensors(model):
    return {n: p.detach().clone() for n, p in ahn.trainable_parameters(model)}


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
def test_round_trip_tensor_by_tensor(memory, tmp_path, ids):
    model = make_ahn_model(memory=memory, window=8, sinks=2, layers=[1])
    ahn.save(model, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "README.md",
        "ahn_config.json",
        "ahn_model.safetensors",
    ]
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: ahn\n") and f"ahn_memory: {memory}" in card
    loaded = ahn.load(make_model(), tmp_path / "adapter")
    assert loaded._ahn_runtime.config == model._ahn_runtime.config
    expected = ahn_tensors(model)
    got = ahn_tensors(loaded)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[n], got[n]) for n in expected)
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_save_overwrites_atomically(tmp_path):
    model = make_ahn_model()
    ahn.save(model, tmp_path / "a")
    ahn.save(model, tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def write_official(path, model, impl="GatedDeltaNet", merged=False, **extra):
    """An official ByteDance AHN directory: AHN-only (or merged) model.safetensors + config.json."""
    path.mkdir()
    config = model.config.to_dict()
    config.update({"_ahn_implementation": impl, "sliding_window": 8, "num_attn_sinks": 2, **extra})
    (path / "config.json").write_text(json.dumps(config))
    tensors = ahn_tensors(model)
    if merged:
        tensors.update(
            {n: p.detach().clone() for n, p in model.named_parameters() if ".ahn." not in n}
        )
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(path / "model.safetensors"))


@pytest.mark.parametrize("merged", [False, True], ids=["ahn-only", "merged"])
@pytest.mark.parametrize(
    "impl, memory",
    [("GatedDeltaNet", "gated_deltanet"), ("DeltaNet", "deltanet"), ("Mamba2", "mamba2")],
)
def test_official_layout_loads(impl, memory, merged, tmp_path, ids):
    model = make_ahn_model(memory=memory, window=8, sinks=2, positions="original")
    write_official(tmp_path / "official", model, impl, merged=merged)
    loaded = ahn.load(make_model(), tmp_path / "official")
    cfg = loaded._ahn_runtime.config
    assert (cfg.memory, cfg.window, cfg.sinks, cfg.layers) == (memory, 8, 2, None)
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_official_fa_layer_ids_keep_full_attention(tmp_path):
    model = make_ahn_model(window=8, sinks=2, layers=[1])
    write_official(tmp_path / "official", model, fa_layer_ids="0")
    loaded = ahn.load(make_model(), tmp_path / "official")
    assert loaded._ahn_runtime.config.layers == [1]


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"use_q_proj": True}, "use_q_proj"),
        ({"use_ahn_router": True}, "use_ahn_router"),
        ({"_ahn_implementation": "LSTM"}, "_ahn_implementation"),
        ({"sliding_window": None}, "sliding_window"),
    ],
)
def test_unsupported_official_options_are_errors(extra, match, tmp_path):
    model = make_ahn_model()
    write_official(tmp_path / "official", model, **extra)
    with pytest.raises(ValueError, match=match):
        ahn.load(make_model(), tmp_path / "official")


def test_missing_truncated_and_mismatched_files(tmp_path):
    model = make_ahn_model(window=8, sinks=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ahn.load(make_model(), tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither"):
        ahn.load(make_model(), tmp_path / "empty")
    ahn.save(model, tmp_path / "a")
    weights = tmp_path / "a" / "ahn_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-50])
    with pytest.raises(ValueError, match="truncated"):
        ahn.load(make_model(), tmp_path / "a")
    ahn.save(model, tmp_path / "b")
    with pytest.raises(ValueError, match="missing"):
        ahn.load(
            make_ahn_model(window=8, sinks=2, layers=[0, 1], memory="deltanet"), tmp_path / "b"
        )
    wide = make_ahn_model("mistral-gqa")
    ahn.save(wide, tmp_path / "c")
    with pytest.raises(ValueError, match="shape"):
        ahn.load(make_model(), tmp_path / "c")


def test_save_in_bfloat16_with_a_training_summary(tmp_path):
    model = make_ahn_model(window=8, sinks=2)
    model.config.name_or_path = "org/base-model"
    ahn.save(model, tmp_path / "a", dtype=torch.bfloat16, training={"steps": 3})
    from safetensors.torch import load_file

    assert all(
        t.dtype == torch.bfloat16
        for t in load_file(tmp_path / "a" / "ahn_model.safetensors").values()
    )
    saved = json.loads((tmp_path / "a" / "ahn_config.json").read_text())
    assert saved["base_model"] == "org/base-model" and saved["training"] == {"steps": 3}
    card = (tmp_path / "a" / "README.md").read_text()
    assert "base_model: org/base-model" in card and "- steps: 3" in card
    loaded = ahn.load(make_model(), tmp_path / "a")  # bf16 on disk, the model's dtype in memory
    assert all(p.dtype == torch.float32 for _, p in ahn.trainable_parameters(loaded))


def test_load_by_hub_repo_id_from_the_local_hub_cache(tmp_path, monkeypatch):
    """A cache laid out as huggingface_hub lays it out, used offline."""
    model = make_ahn_model(window=8, sinks=2)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--my-ahn"
    ahn.save(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from ahn.bases import resolve

    path = resolve("org/my-ahn", cache_dir=str(tmp_path / "hub"))
    assert path.endswith(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = ahn.load(make_model(), "org/my-ahn")
    expected, got = ahn_tensors(model), ahn_tensors(loaded)
    assert all(torch.equal(expected[n], got[n]) for n in expected)
    with pytest.raises(FileNotFoundError, match="org/missing"):
        resolve("org/missing", cache_dir=str(tmp_path / "hub"))


@pytest.mark.parametrize("memory", ["gated_deltanet", "deltanet", "mamba2"])
def test_export_official_round_trip(memory, tmp_path, ids):
    """The official layout has no positions scheme: it loads as "original" (the paper's)."""
    model = make_ahn_model(memory=memory, window=8, sinks=2, layers=[1])
    ahn.export_official(model, tmp_path / "official")
    config = json.loads((tmp_path / "official" / "config.json").read_text())
    assert config["fa_layer_ids"] == "0" and config["sliding_window"] == 8
    loaded = ahn.load(make_model(), tmp_path / "official")
    cfg = loaded._ahn_runtime.config
    assert (cfg.memory, cfg.window, cfg.sinks, cfg.layers) == (memory, 8, 2, [1])
    assert cfg.positions == "original"
    ahn.set_window(model, positions="original")
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_export_cli(saved_base, tmp_path, ids, capsys):
    from ahn.cli import main

    model = make_model()
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))
    randomize_ahn(model)
    ahn.save(model, tmp_path / "ours")
    out = tmp_path / "official"
    assert main(["export", "--base", str(saved_base), "--ahn", str(tmp_path / "ours"),
                 "--official", str(out)]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert "positions='bounded' is not in the official layout" in capsys.readouterr().err
    ahn.set_window(model, positions="original")
    assert torch.equal(ahn.load(make_model(), out)(ids).logits, model(ids).logits)


def test_salient_store_saved_loaded_and_refused_by_official_export(saved_base, tmp_path, ids):
    from ahn.cli import main

    model = make_ahn_model(window=6, sinks=2, salient=3, salient_score="write_gate")
    ahn.save(model, tmp_path / "ours")
    loaded = ahn.load(make_model(), tmp_path / "ours")
    cfg = loaded._ahn_runtime.config
    assert (cfg.salient, cfg.salient_score) == (3, "write_gate")
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert "ahn_salient: 3" in (tmp_path / "ours" / "README.md").read_text()
    with pytest.raises(ValueError, match="salient store"):
        ahn.export_official(model, tmp_path / "official")
    assert not (tmp_path / "official").exists()
    args = ["export", "--base", str(saved_base), "--ahn", str(tmp_path / "ours"),
            "--official", str(tmp_path / "official")]  # fmt: skip
    assert main(args) == 2  # refused: one line, no traceback
    assert main([*args, "--drop-salient"]) == 0
    dropped = ahn.load(make_model(), tmp_path / "official")
    assert dropped._ahn_runtime.config.salient == 0
