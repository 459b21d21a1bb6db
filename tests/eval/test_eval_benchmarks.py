"""Benchmark loaders on small files in each official format, and their official scoring."""

from pathlib import Path

import pytest

from ahn.eval import benchmarks
from ahn.eval.benchmarks import infinitebench, longbench, lveval
from ahn.eval.benchmarks.common import truncate_middle

FIXTURES = Path(__file__).parents[1] / "fixtures" / "eval"


def _score(sample, text, tokenizer):
    return benchmarks.score(sample, tokenizer.encode(text), tokenizer)[0]


def test_longbench_prompt_answers_and_first_line_rule(tokenizer):
    samples = benchmarks.load("longbench:hotpotqa", FIXTURES / "longbench", tokenizer, 4096)
    assert len(samples) == 2
    text = tokenizer.decode(samples[0].input_ids)
    assert text.startswith("Answer the question based on the given passages.")
    assert "Question: Where was Ada Lovelace born?\nAnswer:" in text
    assert samples[0].max_new_tokens == 32
    assert _score(samples[0], "London, England", tokenizer) == pytest.approx(2 / 3)
    assert _score(samples[1], "Babbage", tokenizer) == 1.0  # max over the answers


def test_longbench_classification_takes_the_first_line(tokenizer):
    (sample,) = benchmarks.load("longbench:trec", FIXTURES / "longbench", tokenizer, 4096)
    assert sample.meta["all_classes"][0] == "City"
    assert _score(sample, "City\nIndividual", tokenizer) == 1.0
    assert _score(sample, "City or Country", tokenizer) == 0.5


def test_chat_template_where_the_official_code_uses_it(chat_tokenizer):
    (qa,) = benchmarks.load("longbench:hotpotqa", FIXTURES / "longbench", chat_tokenizer, 4096, 1)
    assert chat_tokenizer.decode(qa.input_ids).startswith("<|user|>Answer the question")
    (trec,) = benchmarks.load("longbench:trec", FIXTURES / "longbench", chat_tokenizer, 4096)
    assert "<|user|>" not in chat_tokenizer.decode(trec.input_ids)
    (off,) = benchmarks.load(
        "longbench:hotpotqa", FIXTURES / "longbench", chat_tokenizer, 4096, 1, chat=False
    )
    assert "<|user|>" not in chat_tokenizer.decode(off.input_ids)


def test_longbench_e_reads_the_e_file(tokenizer):
    (sample,) = benchmarks.load("longbench_e:trec", FIXTURES / "longbench", tokenizer, 4096)
    assert sample.meta["length"] == 5200
    assert sample.meta["group"] == longbench.length_bucket(5200) == "4-8k"
    assert _score(sample, "Individual", tokenizer) == 1.0


def test_middle_truncation_keeps_both_ends(tokenizer):
    prompt = "BEGIN " + "x" * 500 + " END"
    short = truncate_middle(tokenizer, prompt, 20)
    assert short == "BEGIN xxxx" + "xxxxxx END"
    samples = benchmarks.load("longbench:hotpotqa", FIXTURES / "longbench", tokenizer, 200)
    text = tokenizer.decode(samples[0].input_ids)
    assert 195 <= len(samples[0].input_ids) <= 200  # decode may merge spaces, as officially
    assert text.startswith("Answer the question") and text.endswith("Answer:")


def test_lveval_scores_the_first_answer_with_keywords(tokenizer):
    (sample,) = benchmarks.load(
        "lveval:hotpotwikiqa_mixup_16k", FIXTURES / "lveval", tokenizer, 8192
    )
    assert sample.meta["gold_ans"] == "Rhine"
    assert sample.max_new_tokens == 64
    assert _score(sample, "the Rhine river", tokenizer) == 1.0
    assert _score(sample, "the river", tokenizer) == 0.0  # keyword recall 0 < 0.2
    (fact,) = benchmarks.load("lveval:factrecall_en_16k", FIXTURES / "lveval", tokenizer, 8192)
    assert fact.max_new_tokens == 16
    assert _score(fact, "Ludwig Beethoven", tokenizer) == 1.0
    assert lveval.split_level("cmrc_mixup_128k") == ("cmrc_mixup", "128k")


@pytest.mark.parametrize(
    "dataset, prediction, expected",
    [
        ("passkey", " 71432.", 1.0),
        ("passkey", "It is 7143", 0.0),
        ("kv_retrieval", '"g7h8".', 1.0),
        ("kv_retrieval", "g7h8x", 0.0),
        ("longbook_choice_eng", "B", 1.0),
        ("longbook_choice_eng", "the answer is: B", 1.0),
        ("longbook_choice_eng", "so the answer is: A crow", 1.0),
        ("longbook_choice_eng", "I think C", 0.0),
        ("longbook_qa_eng", "Tom", pytest.approx(2 / 3)),
        ("math_find", " 42", 1.0),
        ("math_find", " 17", 0.0),
        ("math_find", " 42.5", 0.0),
        ("code_run", " 8", 1.0),
        ("code_run", " 8.5", 0.0),
        ("code_debug", "B. broken", 1.0),
        ("code_debug", "the answer is: broken", 1.0),
        ("code_debug", "A", 0.0),
        ("longbook_sum_eng", "A crow and a fox become friends.", pytest.approx(5 / 7)),
    ],
)
def test_infinitebench_official_scoring(tokenizer, dataset, prediction, expected):
    (sample,) = benchmarks.load(
        f"infinitebench:{dataset}", FIXTURES / "infinitebench", tokenizer, 4096
    )
    assert sample.max_new_tokens == infinitebench.MAX_NEW_TOKENS[dataset]
    assert _score(sample, prediction, tokenizer) == expected


def test_infinitebench_code_run_prompt_names_the_call(tokenizer):
    (sample,) = benchmarks.load(
        "infinitebench:code_run", FIXTURES / "infinitebench", tokenizer, 4096
    )
    text = tokenizer.decode(sample.input_ids)
    assert text.startswith("There is a function called func_2 in the following Python code.")
    assert text.endswith("The value of func_2(3) is")


def test_infinitebench_prompt_and_token_truncation(tokenizer):
    (sample,) = benchmarks.load(
        "infinitebench:passkey", FIXTURES / "infinitebench", tokenizer, 4096
    )
    assert tokenizer.decode(sample.input_ids).endswith("What is the pass key?\n\nThe pass key is")
    assert infinitebench.truncate_tokens(list(range(10)), 5) == [0, 1, 7, 8, 9]  # -5 // 2 = -3


def test_infinitebench_summary_rouge_lsum():
    # lines are sentences; tokens are lower-cased alphanumeric runs: LCS "the cat" of 3 / 2
    assert infinitebench.score_sum_eng("The cat, sat.", ["the CAT"]) == pytest.approx(0.8)
    assert infinitebench.score_sum_eng("a b\nc", ["c", "a b"]) == pytest.approx(0.8)
    assert infinitebench.score_sum_eng("...", ["the cat"]) == 0.0


def test_infinitebench_chinese_qa_is_character_f1():
    assert infinitebench.score_qa_chn("北京。", ["北京市"]) == pytest.approx(0.8)


def test_unknown_task_and_missing_file(tokenizer, tmp_path):
    assert not benchmarks.is_benchmark("longbench:nope")
    assert not benchmarks.is_benchmark("lveval:factrecall_en")  # a length level is required
    assert benchmarks.is_benchmark("lveval:factrecall_en_256k")
    with pytest.raises(ValueError, match="unknown benchmark"):
        benchmarks.load("longbench:nope", tmp_path, tokenizer, 100)
    with pytest.raises(FileNotFoundError, match="hotpotqa.jsonl"):
        benchmarks.load("longbench:hotpotqa", tmp_path, tokenizer, 100)
