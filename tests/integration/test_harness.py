"""lm-eval's `--model ahn`: mode=full gives lm-eval's own `hf` numbers; sliding / ahn run."""

import json

import pytest
from tiny_models import make_model, randomize_ahn

import ahn

lm_eval = pytest.importorskip("lm_eval")

TASKS = {
    "ahn_tiny_choice": """output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
""",
    "ahn_tiny_rolling": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: bits_per_byte
""",
    "ahn_tiny_gen": """output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
""",
}
TEXT = "the old mill stands by the river, and the key lies under the blue stone. "
ROWS = {
    "ahn_tiny_choice": [
        {"context": TEXT * 2 + "the key lies under the", "choices": [" blue stone", " river"],
         "label": 0},
        {"context": "the mill stands by the", "choices": [" river", " stone"], "label": 0},
    ],
    "ahn_tiny_rolling": [{"text": TEXT * 3}, {"text": TEXT}],
    "ahn_tiny_gen": [{"question": TEXT + "where is the key?", "answer": " under"}],
}  # fmt: skip


@pytest.fixture
def tasks(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name, body in TASKS.items():
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in ROWS[name]))
        head = f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        head += f"    test: {data}\ntest_split: test\n"
        (folder / f"{name}.yaml").write_text(head + body)
    return folder


@pytest.fixture
def ahn_dir(tmp_path):
    model = make_model()
    ahn.augment(model, ahn.AHNConfig(window=12, sinks=2, prefill_chunk=32))
    randomize_ahn(model, std=0.05)
    return ahn.save(model, tmp_path / "ahn")


def _run(model, model_args, tasks):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import ahn.eval.harness  # noqa: F401  (registers --model ahn)

    out = simple_evaluate(model=model, model_args=model_args, tasks=sorted(TASKS),
                          task_manager=TaskManager(include_path=str(tasks)), device="cpu",
                          batch_size=2)  # fmt: skip
    return {t: {k: v for k, v in r.items() if "stderr" not in k and k != "alias"}
            for t, r in out["results"].items()}  # fmt: skip


def test_lm_eval_model_ahn(saved_base, ahn_dir, tasks, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = f"pretrained={saved_base}"
    reference = _run("hf", base, tasks)
    full = _run("ahn", f"{base},ahn={ahn_dir},mode=full", tasks)
    assert full == reference
    sliding = _run("ahn", f"{base},ahn={ahn_dir},mode=sliding,window=12,sinks=2", tasks)
    with_ahn = _run("ahn", f"{base},ahn={ahn_dir},mode=ahn,window=12,sinks=2", tasks)
    stored = _run("ahn", f"{base},ahn={ahn_dir},mode=ahn,window=12,sinks=2,salient=4", tasks)
    original = _run("ahn", f"{base},ahn={ahn_dir},mode=ahn,window=12,sinks=2,salient=4,"
                    "positions=original", tasks)  # fmt: skip
    rolling = "ahn_tiny_rolling"
    runs = (full, sliding, with_ahn, stored, original)
    perplexity = [r[rolling]["word_perplexity,none"] for r in runs]
    assert len(set(perplexity)) == 5  # each mode computed its own (texts exceed the window)
    for result in (sliding, with_ahn, stored, original):
        assert set(result) == set(TASKS)


def test_lm_eval_model_ahn_bad_args(saved_base):
    from ahn.eval.harness import AHNLM

    with pytest.raises(ValueError, match="need ahn=DIR"):
        AHNLM(pretrained=str(saved_base), mode="ahn", device="cpu")
    with pytest.raises(ValueError, match="mode="):
        AHNLM(pretrained=str(saved_base), mode="bogus", device="cpu")


def test_ahn_lm_eval_command(saved_base, ahn_dir, tasks, tmp_path, monkeypatch, capsys):
    """`ahn-lm-eval run --model ahn ...`: lm-eval's own command line, with the model registered."""
    from ahn.eval.harness import cli

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = f"pretrained={saved_base},ahn={ahn_dir},mode=sliding,window=12,sinks=2"
    argv = ["ahn-lm-eval", "run", "--model", "ahn", "--model_args", args, "--tasks",
            "ahn_tiny_rolling", "--include_path", str(tasks), "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    cli()
    assert "ahn_tiny_rolling" in capsys.readouterr().out
