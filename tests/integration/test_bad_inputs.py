"""Bad input across the public surface: a clear ValueError / FileNotFoundError that names the
bad value and what would be valid, never a deep traceback or a silent wrong result."""

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import make_ahn_model, make_model

import ahn
from ahn.checkpoint import official_config
from ahn.eval.flops import parse_length
from ahn.train.data import DataError, Tokenizing, file_source, parse_record

CONFIGS = [
    (dict(window=0), "window=0"),
    (dict(window=-3), "window=-3"),
    (dict(sinks=-1), "sinks=-1"),
    (dict(memory="lstm"), "lstm"),
    (dict(layers=[0, 0]), "repeated"),
    (dict(layers=[-1]), r"layers\[...\]=-1"),
    (dict(prefill_chunk=0), "prefill_chunk=0"),
]


@pytest.mark.parametrize("kwargs, match", CONFIGS, ids=[m for _, m in CONFIGS])
def test_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ahn.AHNConfig(**kwargs)


def test_layers_out_of_range():
    with pytest.raises(ValueError, match=r"layers=\[5\] out of range: the model has 2 layers"):
        ahn.augment(make_model(), ahn.AHNConfig(layers=[0, 5]))


OFFICIAL = [
    ({"_ahn_implementation": "LSTM"}, "_ahn_implementation='LSTM'"),
    ({"_ahn_implementation": "GatedDeltaNet", "sliding_window": 0}, "sliding_window=0"),
    ({"_ahn_implementation": "GatedDeltaNet", "sliding_window": 8, "use_q_proj": True},
     "use_q_proj=True"),
    ({"_ahn_implementation": "GatedDeltaNet", "sliding_window": 8, "fa_layer_ids": "0,x"},
     "fa_layer_ids='0,x'"),
]  # fmt: skip


@pytest.mark.parametrize("config, match", OFFICIAL, ids=[m for _, m in OFFICIAL])
def test_bad_official_configs(config, match):
    with pytest.raises(ValueError, match=match):
        official_config({"num_hidden_layers": 2, **config})


def _saved(tmp_path):
    return ahn.save(make_ahn_model(window=8, sinks=2), tmp_path / "ahn")


def test_truncated_wrong_shape_and_wrong_dtype_weights(tmp_path):
    path = _saved(tmp_path)
    weights = path / "ahn_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated or not safetensors"):
        ahn.load(make_model(), path)
    from safetensors.torch import load_file

    weights.write_bytes(good)
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    save_file({**tensors, name: torch.zeros(3, 3)}, str(weights))
    with pytest.raises(ValueError, match=rf"{name}: shape \(3, 3\) in the checkpoint"):
        ahn.load(make_model(), path)
    save_file({**tensors, name: tensors[name].long()}, str(weights))
    with pytest.raises(ValueError, match=rf"{name}: dtype torch.int64"):
        ahn.load(make_model(), path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ahn.load(make_model(), tmp_path / "nowhere")


DATA_LINES = [
    ("not json", "line 1|Expecting value"),
    (json.dumps({"txt": "typo"}), "needs one of the keys"),
    (json.dumps({"input_ids": "1 2 3"}), "input_ids must be a list of integers"),
    (json.dumps({"input_ids": [1, 2, 500]}), r"token id 500 is outside \[0, vocab_size=97\)"),
    (json.dumps([1, True]), "input_ids must be a list of integers"),
    (json.dumps("a string"), "expected a JSON object"),
]


@pytest.mark.parametrize("line, match", DATA_LINES, ids=[m for _, m in DATA_LINES])
def test_bad_data_lines_name_their_file_and_line(tmp_path, line, match):
    path = tmp_path / "data.jsonl"
    path.write_text("\n" + line + "\n")  # an empty line first: skipped, not an error
    with pytest.raises(DataError, match=f"data.jsonl:2: .*({match})"):
        list(file_source([str(path)], Tokenizing(None, vocab_size=97), seq_len=16)())


def test_text_data_without_a_tokenizer():
    with pytest.raises(ValueError, match='"text" records need a tokenizer'):
        parse_record({"text": "hello"}, Tokenizing(None))


def test_missing_or_unsupported_data_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        file_source([str(tmp_path / "missing.jsonl")], Tokenizing(None), seq_len=16)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unsupported type; use one of \['.jsonl', '.txt'\]"):
        file_source([str(tmp_path / "data.csv")], Tokenizing(None), seq_len=16)


@pytest.mark.parametrize("text", ["4q", "k", "-5", "1.5k", "0", ""])
def test_lengths_that_do_not_parse(text):
    with pytest.raises(ValueError, match="is not a positive integer, optionally with k or m"):
        parse_length(text)


def test_beyond_the_base_context_warns_where_positions_leave_its_range():
    model = make_ahn_model(window=8, sinks=2, positions="original")
    model.config.max_position_embeddings = 32
    ids = torch.randint(0, 97, (1, 40))
    with ahn.mode(model, "full"), pytest.warns(UserWarning, match="max_position_embeddings=32"):
        model(ids)
    # positions "original": the sinks sit beyond the base's range; the warning names the cure
    with pytest.warns(UserWarning, match="positions='bounded'"):
        model(ids)
    with ahn.mode(model, "sliding"), pytest.warns(UserWarning, match="positions='original'"):
        model(ids)
    cache = ahn.new_cache(model)  # once per cache, not once per prefill chunk
    with pytest.warns(UserWarning) as seen:
        for a in range(0, 40, 8):
            model(ids[:, a : a + 8], cache=cache, use_cache=True)
    assert len(seen) == 1
    ahn.set_window(model, positions="bounded")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key within sinks + window of its query
        model(ids)
        with ahn.mode(model, "sliding"):
            model(ids)
