"""`ahn read` / `ahn ask`: a document read once answers questions as the whole prompt would."""

import json

import pytest
import torch
from tiny_models import make_model, randomize_ahn
from transformers import AutoTokenizer

import ahn
from ahn.cli import main

DOC = "the key is kept under the blue stone by the old mill. " * 3
TEMPLATE = (
    "{% for m in messages %}user: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}answer: {% endif %}"
)


@pytest.fixture
def setup(saved_base, tmp_path):
    tok = AutoTokenizer.from_pretrained(saved_base)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(saved_base)
    model = make_model()
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2, prefill_chunk=16))
    randomize_ahn(model, std=0.05)
    ahn.save(model, tmp_path / "ahn")
    (tmp_path / "doc.txt").write_text(DOC)
    model.generation_config.eos_token_id = 1
    return model, tok, ["--base", str(saved_base), "--ahn", str(tmp_path / "ahn")]


def _expected(model, ids, n=6):
    out = model.generate(ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1] :]
    out = out[: (out == 1).nonzero()[0, 0]] if (out == 1).any() else out
    return out.tolist()


@pytest.mark.parametrize("chat", [False, True])
def test_read_then_ask_matches_one_prompt(setup, tmp_path, capsys, chat):
    model, tok, common = setup
    flag = ["--chat"] if chat else []
    mem = tmp_path / "doc.ahnmem"
    assert main(["read", *common, "--file", str(tmp_path / "doc.txt"), "--output", str(mem),
                 *flag]) == 0  # fmt: skip
    assert "tokens read" in capsys.readouterr().err
    questions = ["where is the key?", "what is old?"]
    (tmp_path / "q.txt").write_text("\n".join(questions) + "\n")
    args = ["ask", *common, "--memory", str(mem), "--questions", str(tmp_path / "q.txt")]
    assert main([*args, "--max-new-tokens", "6", *flag]) == 0
    out = capsys.readouterr().out
    for q in questions:
        if chat:
            text = tok.apply_chat_template(
                [{"role": "user", "content": f"{DOC}\n\n{q}"}], add_generation_prompt=True,
                tokenize=False,
            )  # fmt: skip
            head, _, _ = text.partition(q)
            ids = torch.cat([tok(head, add_special_tokens=False, return_tensors="pt").input_ids,
                             tok(text[len(head):], add_special_tokens=False,
                                 return_tensors="pt").input_ids], 1)  # fmt: skip
        else:
            ids = torch.cat([tok(DOC, return_tensors="pt").input_ids,
                             tok(f"\n\n{q}", add_special_tokens=False,
                                 return_tensors="pt").input_ids], 1)  # fmt: skip
        answer = tok.decode(_expected(model, ids), skip_special_tokens=True)
        assert f"### {q}\n{answer}" in out
    # the chat flag must match how the memory was read
    assert main(["ask", *common, "--memory", str(mem), "--question", "x",
                 *([] if chat else ["--chat"])]) == 2  # fmt: skip
    assert "--chat" in capsys.readouterr().err


def test_read_jsonl_writes_one_file_each_and_resumes(setup, tmp_path, capsys):
    _, _, common = setup
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"name": f"d/{i}", "text": DOC * (i + 1)}) + "\n"
                            for i in range(2)))  # fmt: skip
    out = tmp_path / "mems"
    assert main(["read", *common, "--file", str(docs), "--output", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["d_0.ahnmem", "d_1.ahnmem"]
    sizes = {p.stat().st_size for p in out.iterdir()}
    assert len(sizes) == 1  # constant size whatever the document's length
    capsys.readouterr()
    assert main(["read", *common, "--file", str(docs), "--output", str(out)]) == 0
    assert capsys.readouterr().err.count("skipped") == 2
    # a rerun with another setup does not take the old files for its own
    args = ["read", *common, "--file", str(docs), "--output", str(out), "--mode", "sliding"]
    assert main(args) == 2
    assert "another mode" in capsys.readouterr().err


def test_read_refuses_bad_flags(setup, tmp_path, capsys):
    _, _, common = setup
    doc = str(tmp_path / "doc.txt")
    with pytest.raises(SystemExit) as refused:  # argparse: full is not a choice of read
        main(["read", *common, "--file", doc, "--output", "x", "--mode", "full"])
    assert refused.value.code == 2
    assert main(["read", *common[:2], "--file", doc, "--output", "x"]) == 2
    assert main(["read", *common, "--file", str(tmp_path / "nope.txt"), "--output", "x"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(["read", *common, "--file", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "not JSON" in capsys.readouterr().err
