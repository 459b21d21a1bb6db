"""`ahn generate` streams the same tokens as model.generate and reports the cache size."""

import pytest
from tiny_models import make_model, randomize_ahn
from transformers import AutoTokenizer

import ahn
from ahn.cli import main


@pytest.mark.parametrize("compiled", [[], ["--compile"]], ids=["eager", "compiled"])
def test_generate_cli_streams_greedy_answer(compiled, saved_base, tmp_path, capsys):
    model = make_model()
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2, prefill_chunk=16))
    randomize_ahn(model, std=0.05)
    ahn.save(model, tmp_path / "ahn")
    prompt = "the quick brown fox jumps over the lazy dog, again and again."
    (tmp_path / "prompt.txt").write_text(prompt)
    code = main(
        [
            "generate",
            "--base",
            str(saved_base),
            "--ahn",
            str(tmp_path / "ahn"),
            "--prompt-file",
            str(tmp_path / "prompt.txt"),
            "--max-new-tokens",
            "12",
            *compiled,
        ]
    )
    out = capsys.readouterr()
    assert code == 0
    tok = AutoTokenizer.from_pretrained(saved_base)
    ids = tok(prompt, return_tensors="pt").input_ids
    model.generation_config.eos_token_id = 1
    expected = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :]
    expected = expected[: (expected == 1).nonzero()[0, 0]] if (expected == 1).any() else expected
    assert out.out.rstrip("\n") == tok.decode(expected.tolist(), skip_special_tokens=True)
    assert "mode=ahn" in out.err and "MiB" in out.err and "tokens/s" in out.err
    assert "read" in out.err  # the prompt's progress bar


def test_generate_cli_bad_flags(saved_base, capsys):
    assert main(["generate", "--base", str(saved_base), "--prompt", "hi", "--mode", "ahn"]) == 2
    assert "--ahn" in capsys.readouterr().err
    assert (
        main(["generate", "--base", str(saved_base), "--prompt", "hi", "--max-new-tokens", "0"])
        == 2
    )


def test_generate_cli_chat_template_and_base_only(saved_base, capsys):
    tok = AutoTokenizer.from_pretrained(saved_base)
    tok.chat_template = (
        "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}answer: {% endif %}"
    )
    tok.save_pretrained(saved_base)
    args = ["generate", "--base", str(saved_base), "--prompt", "hello", "--max-new-tokens", "4"]
    assert main([*args, "--chat"]) == 0
    err = capsys.readouterr().err
    assert "mode=full" in err
    # "hello" alone is 5 tokens; the template adds "\nanswer:" around it.
    assert int(err.split("tokens seen=")[1].split()[0]) >= 12


def test_generate_cli_decoding_flags(saved_base, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    base = ["generate", "--base", str(saved_base), "--prompt", "the quick brown fox"]
    assert main([*base, "--max-new-tokens", "12"]) == 0
    greedy = capsys.readouterr().out.rstrip("\n")
    stop = greedy[3:5]
    assert main([*base, "--max-new-tokens", "12", "--stop", stop]) == 0
    stopped = capsys.readouterr().out.rstrip("\n")
    assert stopped.endswith(stop) and len(stopped) <= len(greedy)
    # sampling with a fixed seed repeats itself, and top-k 1 is greedy
    sample = [*base, "--max-new-tokens", "8", "--temperature", "0.9", "--seed", "3"]
    assert main(sample) == 0 and main(sample) == 0
    first, second = capsys.readouterr().out.split("\n")[:2]
    assert first == second
    assert main([*base, "--max-new-tokens", "12", "--temperature", "1", "--top-k", "1"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == greedy
    model = AutoModelForCausalLM.from_pretrained(saved_base)
    assert model.generation_config.eos_token_id == 1  # read from the directory
    for bad, name in [(["--top-p", "1.5"], "--top-p"), (["--top-k", "0"], "--top-k"),
                      (["--repetition-penalty", "0"], "--repetition-penalty"),
                      (["--device", "nonsense"], "--device")]:  # fmt: skip
        assert main([*base, *bad]) == 2
        assert name in capsys.readouterr().err


def test_chat_without_a_template_is_refused(saved_base, capsys):
    args = ["generate", "--base", str(saved_base), "--prompt", "hi", "--chat"]
    assert main(args) == 2
    assert "chat template" in capsys.readouterr().err


def test_prompt_file_then_prompt_is_document_then_question(tmp_path):
    from argparse import Namespace

    from ahn.cli.generate import prompt_text

    doc = tmp_path / "doc.txt"
    doc.write_text("A long document.\n\n")
    both = prompt_text(Namespace(prompt=" What is it? ", prompt_file=str(doc)))
    assert both == "A long document.\n\nWhat is it?"
    assert prompt_text(Namespace(prompt=None, prompt_file=str(doc))) == "A long document.\n\n"
    assert prompt_text(Namespace(prompt="hi", prompt_file=None)) == "hi"
    with pytest.raises(ValueError, match="--prompt TEXT, --prompt-file FILE, or both"):
        prompt_text(Namespace(prompt=None, prompt_file=None))
    with pytest.raises(ValueError, match="--prompt is empty"):
        prompt_text(Namespace(prompt=" ", prompt_file=str(doc)))


def test_positions_flag_sets_the_scheme_and_needs_an_ahn(saved_base, tmp_path, capsys):
    model = make_model()
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))
    ahn.save(model, tmp_path / "ahn")
    base = ["generate", "--base", str(saved_base), "--prompt", "hi", "--max-new-tokens", "2"]
    assert main([*base, "--positions", "bounded"]) == 2
    assert "--positions bounded needs --ahn" in capsys.readouterr().err
    assert main([*base, "--ahn", str(tmp_path / "ahn"), "--positions", "bounded"]) == 0


def test_compile_without_an_ahn_says_there_is_nothing_to_compile(saved_base, capsys):
    argv = ["generate", "--base", str(saved_base), "--prompt", "hi", "--max-new-tokens", "2"]
    assert main([*argv, "--compile"]) == 0
    assert "--compile: nothing to compile without --ahn" in capsys.readouterr().err


def test_a_chat_answer_has_a_shorter_default_length(saved_base):
    from argparse import Namespace

    from ahn.cli.generate import CHAT_NEW_TOKENS, TEXT_NEW_TOKENS, generation_config

    model = make_model()
    flags = dict(max_new_tokens=None, temperature=0.0, top_p=None, top_k=None,
                 repetition_penalty=None, stop=[])  # fmt: skip
    assert generation_config(model, Namespace(chat=True, **flags)).max_new_tokens == CHAT_NEW_TOKENS
    assert (
        generation_config(model, Namespace(chat=False, **flags)).max_new_tokens == TEXT_NEW_TOKENS
    )
    assert (
        generation_config(
            model, Namespace(chat=True, **flags | {"max_new_tokens": 7})
        ).max_new_tokens
        == 7
    )
