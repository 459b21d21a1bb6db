"""Memory files: read once, save, load, answer many questions; token-identical to one go."""

import pytest
import torch
from tiny_models import make_ahn_model, randomize_ahn

import ahn
from ahn import memfile

WINDOW, SINKS = 8, 2


def _model(memory="gated_deltanet", **kw):
    model = make_ahn_model(memory=memory, window=WINDOW, sinks=SINKS, prefill_chunk=16, **kw)
    model.generation_config.eos_token_id = None
    return model


def _ids(n, seed=0):
    return torch.randint(0, 97, (1, n), generator=torch.Generator().manual_seed(seed))


def _greedy(model, ids, cache=None, n=8):
    out = model.generate(ids, cache=cache, max_new_tokens=n, do_sample=False)
    return out[0, -n:].tolist()


@pytest.mark.parametrize(
    "salient, positions",
    [(0, "original"), (3, "original"), (3, "bounded")],
    ids=["no-store", "store", "store-bounded"],
)
@pytest.mark.parametrize("memory", ["gated_deltanet", "deltanet", "mamba2"])
@pytest.mark.parametrize("doc_len", [5, 4 * WINDOW + 3])
def test_loaded_memory_answers_as_one_go(tmp_path, memory, doc_len, salient, positions):
    model = _model(memory, salient=salient, positions=positions)
    doc, questions = _ids(doc_len), [_ids(4, seed=1), _ids(6, seed=2)]
    cache = ahn.read(model, doc)
    ahn.save_memory(cache, tmp_path / "doc.ahnmem", model=model)
    loaded = ahn.load_memory(model, tmp_path / "doc.ahnmem")
    for q in questions:  # the same memory answers several questions: copies are not consumed
        expected = _greedy(model, torch.cat([doc, q], dim=1))
        assert _greedy(model, q, loaded.copy()) == expected
        assert _greedy(model, q, cache.copy()) == expected
    assert loaded.get_seq_length() == doc_len


def test_memory_file_size_is_constant_in_the_document_length(tmp_path):
    model = _model()
    sizes = []
    for n in (4 * WINDOW, 16 * WINDOW):
        path = ahn.save_memory(ahn.read(model, _ids(n)), tmp_path / f"{n}.ahnmem", model=model)
        sizes.append(path.stat().st_size)
        assert memfile.read_metadata(path)["tokens"] == n
    assert sizes[0] == sizes[1]


def test_memory_refused_for_another_setup(tmp_path):
    model = _model()
    path = ahn.save_memory(ahn.read(model, _ids(30)), tmp_path / "m.ahnmem", model=model)
    with ahn.window(model, window=WINDOW + 1):
        with pytest.raises(ValueError, match="another window"):
            ahn.load_memory(model, path)
    with ahn.mode(model, "sliding"), pytest.raises(ValueError, match="another mode"):
        ahn.load_memory(model, path)
    other_ahn = randomize_ahn(_model(), seed=7)
    with pytest.raises(ValueError, match="another ahn_weights"):
        ahn.load_memory(other_ahn, path)
    other_base = make_ahn_model("llama-mha", window=WINDOW, sinks=SINKS)
    with pytest.raises(ValueError, match="another base"):
        ahn.load_memory(other_base, path)
    model.to(torch.bfloat16)
    with pytest.raises(ValueError, match="another dtype"):
        ahn.load_memory(model, path)


def test_memory_refused_for_another_tokenizer(tmp_path):
    from tiny_models import char_tokenizer

    model, tok = _model(), char_tokenizer()
    cache = ahn.read(model, "the quick brown fox jumps over the lazy dog", tokenizer=tok)
    path = ahn.save_memory(cache, tmp_path / "m.ahnmem", model=model, tokenizer=tok)
    assert ahn.load_memory(model, path, tok).get_seq_length() == cache.get_seq_length()
    other = char_tokenizer()
    other.add_tokens(["zz"])
    with pytest.raises(ValueError, match="tokenizer"):
        ahn.load_memory(model, path, other)


def test_truncated_or_tampered_memory_is_refused(tmp_path):
    model = _model()
    path = ahn.save_memory(ahn.read(model, _ids(30)), tmp_path / "m.ahnmem", model=model)
    data = path.read_bytes()
    (tmp_path / "cut.ahnmem").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        ahn.load_memory(model, tmp_path / "cut.ahnmem")
    tampered = bytearray(data)
    tampered[-5] ^= 0xFF
    (tmp_path / "bad.ahnmem").write_bytes(bytes(tampered))
    with pytest.raises(ValueError, match="checksum"):
        ahn.load_memory(model, tmp_path / "bad.ahnmem")
    (tmp_path / "other.ahnmem").write_bytes(b"not a memory file")
    with pytest.raises(ValueError, match="not a readable memory file"):
        ahn.load_memory(model, tmp_path / "other.ahnmem")
    with pytest.raises(FileNotFoundError):
        ahn.load_memory(model, tmp_path / "missing.ahnmem")


def test_read_refuses_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="no tokenizer"):
        ahn.read(model, "some text")
    with pytest.raises(ValueError, match="T >= 1"):
        ahn.read(model, torch.zeros(1, 0, dtype=torch.long))
    with ahn.mode(model, "full"), pytest.raises(ValueError, match="mode 'full'"):
        ahn.read(model, _ids(10))


def test_ahn_cache_in_full_mode_is_refused():
    model = _model()
    cache = ahn.read(model, _ids(10))
    with ahn.mode(model, "full"), pytest.raises(ValueError, match="mode 'full'"):
        model(_ids(3), cache=cache, use_cache=True)


def test_copy_is_independent():
    model = _model()
    cache = ahn.read(model, _ids(30))
    copy = cache.copy()
    model(_ids(5, seed=3), cache=copy, use_cache=True)
    assert copy.get_seq_length() == 35 and cache.get_seq_length() == 30
    layer = cache.layers[0]
    assert not torch.equal(layer.state, copy.layers[0].state)


def test_memory_with_another_store_size_is_refused(tmp_path):
    model = _model(salient=3)
    ahn.save_memory(ahn.read(model, _ids(40)), tmp_path / "doc.ahnmem", model=model)
    ahn.set_window(model, salient=4)
    with pytest.raises(ValueError, match="another salient"):
        ahn.load_memory(model, tmp_path / "doc.ahnmem")


def test_memory_read_with_other_positions_is_refused(tmp_path):
    model = _model(positions="bounded")
    path = ahn.save_memory(ahn.read(model, _ids(40)), tmp_path / "doc.ahnmem", model=model)
    assert memfile.read_metadata(path)["positions"] == "bounded"
    ahn.set_window(model, positions="original")
    with pytest.raises(ValueError, match="another positions"):
        ahn.load_memory(model, path)


def test_a_file_from_before_positions_reads_as_original():
    old = {"window": 8, "ahn_config": {"window": 8}}  # written before SPEC §2c
    assert memfile._with_defaults(old)["positions"] == "original"
    assert memfile._with_defaults(old)["ahn_config"]["positions"] == "original"
