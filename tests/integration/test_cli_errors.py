"""A newcomer's mistakes at the command line: one line naming the bad value (and what would be
valid), exit code 2, no traceback."""

import json
import warnings

import pytest
import torch
from tiny_models import make_model

import ahn
from ahn.cli import _one_line_warning, build_parser, main


def one_line_error(capsys, argv, *needles) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ahn ")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_base_that_does_not_exist(capsys):
    one_line_error(capsys, ["generate", "--base", "/nonexistent/model", "--prompt", "hi"],
                   "/nonexistent/model", "smollm2-135m-instruct")  # fmt: skip


def test_a_misspelt_base_name_suggests_the_known_one(capsys):
    line = one_line_error(capsys, ["generate", "--base", "smollm2-135m", "--prompt", "hi"])
    assert "did you mean 'smollm2-135m-instruct'" in line


def test_an_ahn_directory_given_as_base(saved_base, tmp_path, capsys):
    model = make_model()
    ahn.augment(model, ahn.AHNConfig(window=8, sinks=2))
    ahn.save(model, tmp_path / "ahn")
    one_line_error(capsys, ["generate", "--base", str(tmp_path / "ahn"), "--prompt", "hi"],
                   "is an AHN directory", "--ahn")  # fmt: skip


def test_a_directory_without_a_model(tmp_path, capsys):
    one_line_error(capsys, ["flops", "--base", str(tmp_path), "--length", "8", "--window", "4",
                            "--sinks", "0"], str(tmp_path), "config.json")  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(saved_base, capsys):
    one_line_error(capsys, ["generate", "--base", str(saved_base), "--prompt", "hi", "--device",
                            "cuda"], "'cuda'", "--device cpu")  # fmt: skip


def test_an_empty_prompt(saved_base, capsys):
    one_line_error(capsys, ["generate", "--base", str(saved_base), "--prompt", ""], "--prompt",
                   "empty")  # fmt: skip


def test_generate_reports_prefill_first_token_and_decode_rate_in_mode_full(saved_base, capsys):
    argv = ["generate", "--base", str(saved_base), "--prompt", "hello there, general",
            "--max-new-tokens", "4", "--dtype", "auto"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "--dtype auto:" in err and "mode=full" in err
    assert "prefill" in err and "first token after" in err and "decode" in err


def test_memory_directory_and_missing_eval_data(tmp_path, saved_base, capsys):
    (tmp_path / "memories").mkdir()
    (tmp_path / "memories" / "a.ahnmem").write_bytes(b"")
    one_line_error(capsys, ["ask", "--base", str(saved_base), "--ahn", str(tmp_path),
                            "--memory", str(tmp_path / "memories"), "--question", "q"],
                   "is a directory", "a.ahnmem")  # fmt: skip
    line = one_line_error(capsys, ["eval", "--base", str(saved_base), "--task", "nll", "--data",
                                   str(tmp_path / "missing.jsonl"), "--output", str(tmp_path)],
                          "missing.jsonl")  # fmt: skip
    assert "earlier" not in line


def test_read_and_ask_offer_only_the_modes_they_accept():
    for command in ("read", "ask"):
        parser = build_parser(command)
        sub = parser._subparsers._group_actions[0].choices[command]
        mode = next(a for a in sub._actions if a.dest == "mode")
        assert "full" not in mode.choices and "ahn" in mode.choices


def test_flops_takes_a_base_name_and_says_when_the_window_covers_the_input(saved_base, capsys):
    argv = ["flops", "--base", str(saved_base), "--length", "4096", "--window", "8000",
            "--sinks", "0", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "covers the whole length 4096" in out.err
    json.loads(out.out)


def test_warnings_are_one_line_without_a_source_path():
    line = _one_line_warning(UserWarning("resuming with\nother steps"), UserWarning,
                             "/x/loop.py", 382)  # fmt: skip
    assert line == "ahn: warning: resuming with other steps\n"


def test_ctrl_c_in_train_names_the_last_checkpoint(saved_base, tmp_path, monkeypatch, capsys):
    from ahn.train import loop

    real_train = loop.train

    def interrupted(config):
        def stop(record):
            if record["step"] >= 2:
                raise KeyboardInterrupt

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return real_train(config, model=make_model(), data=[list(range(3, 67))] * 8,
                              callback=stop)  # fmt: skip

    monkeypatch.setattr(loop, "train", interrupted)
    argv = ["train", "--base", str(saved_base), "--data", "unused.jsonl", "--output", str(tmp_path),
            "--steps", "5", "--save-every", "1", "--seq-len", "64"]  # fmt: skip
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "checkpoint-" in err and "--resume" in err
    assert "Traceback" not in err


def test_lm_eval_model_args(monkeypatch):
    pytest.importorskip("lm_eval")
    from ahn.eval.harness import _check_hflm_arguments

    kwargs = {"dtype": "fp16", "batch_size": 1}
    _check_hflm_arguments(kwargs)
    assert kwargs["dtype"] == "float16"
    with pytest.raises(ValueError, match="'windw'.*did you mean window"):
        _check_hflm_arguments({"windw": 480})
    with pytest.raises(ValueError, match="dtype='fp8'"):
        _check_hflm_arguments({"dtype": "fp8"})


def test_an_ahn_hub_id_not_in_the_cache_is_named_as_an_ahn(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from ahn.bases import resolve

    with pytest.raises(FileNotFoundError) as err:
        resolve("org/missing-ahn", cache_dir=str(tmp_path / "hub"), kind="AHN")
    assert "AHN 'org/missing-ahn'" in str(err.value) and "known base" not in str(err.value)


def test_ahn_lm_eval_ends_bad_input_in_one_line(monkeypatch, capsys):
    pytest.importorskip("lm_eval")
    import lm_eval.__main__

    from ahn.eval.harness import cli

    def bad_args():
        raise ValueError("model_args key 'windw' is not an argument\nof the ahn model")

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", bad_args)
    with pytest.raises(SystemExit) as done:
        cli()
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1
    assert err.startswith("ahn-lm-eval: error: model_args key 'windw'") and "Traceback" not in err


def test_the_second_tour_error_lines(saved_base, tmp_path, capsys):
    """An unknown task: a short line with close matches; a bad --lengths: one line, no usage;
    the base's directory as --ahn: named as a base; a wrong --ahn: before the base loads."""
    argv = ["eval", "--base", str(saved_base), "--output", str(tmp_path / "o")]
    line = one_line_error(capsys, [*argv, "--task", "passkee"], "did you mean 'passkey'")
    assert len(line) < 600  # was every benchmark dataset, thousands of characters
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--task", "nll", "--lengths", "2kk"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "usage" not in err
    assert "2kk" in err
    one_line_error(capsys, ["generate", "--base", str(saved_base), "--ahn", str(saved_base),
                            "--prompt", "hi"], "base model's directory", "--base")  # fmt: skip
    calls = []
    import ahn.cli.generate as generate

    real = generate.load_base
    generate.load_base = lambda *a: calls.append(a) or real(*a)
    try:
        one_line_error(capsys, ["generate", "--base", str(saved_base), "--ahn",
                                str(tmp_path / "nope"), "--prompt", "hi"], "nope")  # fmt: skip
    finally:
        generate.load_base = real
    assert calls == []  # refused before the base was loaded


def test_a_memory_of_another_ahn_names_the_field_that_differs(tmp_path):
    from ahn.memfile import _difference

    same = {"window": 8, "long": "x" * 90}
    made, now = _difference({"memory": "deltanet", **same}, {"memory": "gated_deltanet", **same})
    assert made == '{"memory": "deltanet"}' and now == '{"memory": "gated_deltanet"}'
