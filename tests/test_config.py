import pytest

from ahn import AHNConfig


def test_defaults_match_the_paper():
    cfg = AHNConfig()
    assert (cfg.memory, cfg.window, cfg.sinks, cfg.layers) == ("gated_deltanet", 32640, 128, None)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"memory": "lstm"}, "memory"),
        ({"window": 0}, "window"),
        ({"sinks": -1}, "sinks"),
        ({"layers": [1, 1]}, "layers"),
        ({"prefill_chunk": 0}, "prefill_chunk"),
    ],
)
def test_bad_values_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        AHNConfig(**kwargs)


def test_json_round_trip(tmp_path):
    cfg = AHNConfig(memory="mamba2", window=64, sinks=4, layers=[2, 0])
    cfg.to_json_file(tmp_path / "c.json")
    assert AHNConfig.from_json_file(tmp_path / "c.json") == cfg
    assert cfg.layers == [0, 2]


def test_unknown_field_is_an_error():
    with pytest.raises(ValueError, match="bogus"):
        AHNConfig.from_dict({"bogus": 1})
