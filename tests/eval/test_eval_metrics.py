"""Official LongBench / LV-Eval / RULER metric semantics on hand-computed cases."""

import pytest

from ahn.eval import metrics as M


def test_normalize_answer_drops_case_punctuation_articles():
    assert M.normalize_answer("The Quick,  brown fox! An apple") == "quick brown fox apple"
    assert M.normalize_zh_answer("北京，是 首都。ABC") == "北京是首都abc"


def test_qa_f1_score():
    # [cat, sat] vs [cat, sat, down]: P = 1, R = 2/3
    assert M.qa_f1_score("The cat sat.", "a cat sat down") == pytest.approx(0.8)
    assert M.qa_f1_score("dog", "cat") == 0


def test_qa_f1_score_with_gold_ans_passes_the_keyword_gate():
    # keywords [was, in, paris]: only "paris" counts (blacklist), recall 1/3 >= 0.2;
    # then F1 of [he, was, in, paris] vs [paris, france] = 2 * (1/4 * 1/2) / (3/4)
    score = M.qa_f1_score_with_gold_ans("he was in paris", "paris france", gold_ans="was in paris")
    assert score == pytest.approx(1 / 3)


def test_qa_f1_score_with_gold_ans_blacklist_quirk():
    # Every matched keyword is blacklisted: recall 0 < 0.2, although plain F1 is positive.
    prediction, truth = "and to of in paris", "and to of in"
    assert M.qa_f1_score(prediction, truth) > 0
    assert M.qa_f1_score_with_gold_ans(prediction, truth, gold_ans="and to of in lyon") == 0.0
    assert M.qa_f1_score_with_gold_ans(prediction, truth) == M.qa_f1_score(prediction, truth)


def test_qa_f1_score_factrecall():
    assert M.qa_f1_score_factrecall("Paris is big", "paris france") == pytest.approx(0.5)


def test_rouge_score_rouge_l_f():
    # LCS words {the, cat, on, mat}; 5 distinct words each side: R = P = 4/5
    assert M.rouge_score("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(0.8)


def test_rouge_score_counts_distinct_words_quirk():
    # The `rouge` package counts *sets* of words, so repetitions are free: 1.0, not 0.5.
    assert M.rouge_score("a a a", "a") == pytest.approx(1.0)


def test_rouge_score_sentences_split_on_periods():
    # hyp sentences "x y", "z"; ref "z y": LCS words of (ref, "x y") = {y}, (ref, "z") = {z}
    assert M.rouge_score("x y. z", "z y") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


@pytest.mark.parametrize("prediction", ["", "...", "."])
def test_rouge_score_empty_prediction_is_zero(prediction):
    assert M.rouge_score(prediction, "the cat") == 0.0


def test_classification_score_exact_class():
    classes = ["sports", "politics", "science"]
    assert M.classification_score("It is about sports.", "sports", all_classes=classes) == 1.0
    assert M.classification_score("sports or science", "sports", all_classes=classes) == 0.5
    assert M.classification_score("politics", "sports", all_classes=classes) == 0.0


def test_classification_score_remove_while_iterating_quirk():
    # Matches [cat, at, category]; removing "cat" (a substring of the truth) makes the loop
    # skip "at", which stays in although it is a substring too: 1/2 instead of 1.
    classes = ["cat", "at", "category"]
    assert M.classification_score("category", "category", all_classes=classes) == 0.5


def test_count_and_retrieval_scores():
    assert M.count_score("There are 3 passages, not 4 or 3", "3") == pytest.approx(2 / 3)
    assert M.count_score("no numbers", "3") == 0.0
    assert M.retrieval_score("Paragraph 12, maybe 1", "Paragraph 12") == pytest.approx(0.5)
    assert M.retrieval_zh_score("答案是段落5", "段落5") == 1.0


def test_fuzz_ratio_matches_fuzzywuzzy_rules():
    assert M.fuzz_ratio("", "") == 100
    assert M.fuzz_ratio("", "a") == 0
    assert M.fuzz_ratio("abcd", "abce") == 75  # 2 * 3 / 8
    assert M.fuzz_ratio("abcdefgh", "abcdexyz") == 62  # 62.5 rounds half to even


def test_code_sim_score_uses_first_plain_line():
    prediction = "\n# a comment\n```python\nx = foo(1)\ny = 2\n"
    assert M.code_sim_score(prediction, "x = foo(1)") == 1.0
    assert M.code_sim_score("// only comments", "x") == 0.0


def test_ruler_string_match():
    preds = ["The keys are 12 and 34.", "nothing"]
    refs = [["12", "34", "56"], ["7"]]
    assert M.string_match_all(preds, refs) == pytest.approx((2 / 3 + 0) / 2 * 100)
    assert M.string_match_part(preds, refs) == pytest.approx(50.0)
    assert M.string_match_part(["ABC"], [["abc"]]) == 100.0
    assert M.ruler_postprocess(" 12\x0034 ") == "12\n34"


@pytest.fixture
def space_segmenter(monkeypatch):
    """Segment Chinese on spaces so the zh metric logic is checked without jieba."""
    monkeypatch.setattr(M, "cut", str.split)


def test_qa_f1_zh_score_logic(space_segmenter):
    # ["北京", "是", "首都"] ("。" normalises to "" and is dropped) vs ["北京", "首都"]
    assert M.qa_f1_zh_score("北京 是 首都 。", "北京 首都") == pytest.approx(0.8)


def test_qa_f1_zh_score_with_gold_ans_defaults_to_ground_truth_quirk(space_segmenter):
    # No gold_ans: the ground truth is the keyword list; only 北京 counts (的, 和 blacklisted):
    # recall 1/5 < 0.4, so 0 although the plain F1 is 0.75.
    prediction, truth = "的 和 北京", "的 和 上海 天津 北京"
    assert M.qa_f1_zh_score(prediction, truth) == pytest.approx(0.75)
    assert M.qa_f1_zh_score_with_gold_ans(prediction, truth) == 0.0
    assert M.qa_f1_zh_score_with_gold_ans(prediction, truth, gold_ans="北京") == pytest.approx(0.75)


def test_rouge_zh_score_blacklist_logic(space_segmenter):
    assert M.rouge_zh_score("北京 的 首都", "北京 首都") == pytest.approx(0.8)
    assert M.rouge_zh_score_blacklist("北京 的 首都", "北京 首都") == pytest.approx(1.0)


def test_qa_f1_zh_score_factrecall_logic(space_segmenter):
    assert M.qa_f1_zh_score_factrecall("北京", "北京 首都") == pytest.approx(0.5)


def test_chinese_metrics_with_jieba():
    pytest.importorskip("jieba")
    assert M.cut("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert M.qa_f1_zh_score("我爱北京天安门", "北京天安门") == pytest.approx(2 * 0.5 / 1.5)
    assert M.rouge_zh_score("", "北京") == 0.0


def test_metrics_share_the_official_signature():
    names = [
        "qa_f1_score",
        "qa_f1_zh_score",
        "rouge_score",
        "rouge_zh_score",
        "classification_score",
        "retrieval_score",
        "retrieval_zh_score",
        "count_score",
        "code_sim_score",
        "qa_f1_score_with_gold_ans",
        "qa_f1_zh_score_with_gold_ans",
        "rouge_zh_score_blacklist",
    ]
    for name in names:
        params = list(__import__("inspect").signature(getattr(M, name)).parameters)
        assert params == ["prediction", "ground_truth", "kwargs"], name


PAIRS = [
    ("the cat sat on the mat", "the cat lay on the mat"),
    ("a a a", "a"),
    ("x y. z", "z y"),
    ("The quick brown fox. It jumps over the lazy dog!", "a quick fox jumps; the dog sleeps."),
    ("def f(x):\n    return x + 1", "def f(y):\n    return y+1"),
    ("", "the cat"),
    ("same", "same"),
    ("完全 不同 的 句子", "完全 相同 的 句子"),
]


@pytest.mark.parametrize("prediction, truth", PAIRS)
def test_local_ports_equal_the_official_libraries(prediction, truth):
    rouge = pytest.importorskip("rouge")
    fuzz = pytest.importorskip("fuzzywuzzy.fuzz")
    from ahn.eval._rouge import rouge_l_f

    try:
        official = rouge.Rouge().get_scores([prediction], [truth], avg=True)["rouge-l"]["f"]
    except Exception:
        official = 0.0
    try:
        port = rouge_l_f(prediction, truth)
    except ValueError:
        port = 0.0
    assert port == pytest.approx(official, abs=1e-9)
    assert M.fuzz_ratio_port(prediction, truth) == fuzz.ratio(prediction, truth)


def test_scorers_say_which_implementation_ran():
    names = M.scorers()
    assert set(names) == {"rouge", "fuzz"}
    assert all(isinstance(v, str) and v for v in names.values())
