"""Synthetic task generators: deterministic, within the token budget, answers in the prompt."""

import pytest

from ahn.eval import haystack as hs
from ahn.eval import synthetic

ESSAY = " ".join(f"Essay sentence number {i} talks about topic {i % 7}." for i in range(400))


@pytest.mark.parametrize("task", synthetic.TEXT_TASKS)
def test_text_task_deterministic_in_budget_answers_in_prompt(tokenizer, task):
    kwargs = dict(length=900, depth=0.4, index=3, seed=42, haystack_text=ESSAY)
    sample = synthetic.generate(task, tokenizer, **kwargs)
    again = synthetic.generate(task, tokenizer, **kwargs)
    other = synthetic.generate(task, tokenizer, **{**kwargs, "index": 4})
    assert sample.input_ids == again.input_ids and sample.answers == again.answers
    assert sample.input_ids != other.input_ids
    budget = 900 - sample.max_new_tokens
    assert 0.8 * budget <= len(sample.input_ids) <= budget
    assert sample.answers and all(answer in sample.prompt for answer in sample.answers)
    assert sample.input_ids == tokenizer.encode(sample.prompt)


def test_needle_moves_with_depth(tokenizer):
    early = synthetic.generate("passkey", tokenizer, length=1500, depth=0.0)
    late = synthetic.generate("passkey", tokenizer, length=1500, depth=1.0)
    info = "The pass key is"
    assert early.prompt.index(info) < 300 < 1200 < late.prompt.index(info)


def test_needle_haystack_distractors_never_reuse_the_query_key(tokenizer):
    sample = synthetic.generate("niah_multikey_2", tokenizer, length=3000, depth=0.5)
    assert sample.prompt.startswith("A special magic number is hidden")  # singular wording
    query = sample.prompt.rsplit("magic number for ", 1)[1].split(" mentioned")[0]
    assert sample.prompt.count(f"for {query} is:") == 1
    assert sample.prompt.count("One of the special magic numbers") > 20


def test_multiquery_and_variable_tracking_answers(tokenizer):
    multi = synthetic.generate("niah_noise_multiquery", tokenizer, length=1200, depth=0.2)
    assert len(multi.answers) == 4 and ", and " in multi.prompt.splitlines()[-1]
    vt = synthetic.generate("vt", tokenizer, length=1200, depth=0.3)
    assert len(vt.answers) == 5
    first = vt.prompt.index(f"VAR {vt.answers[0]} = ")
    assert all(first < vt.prompt.index(f"VAR {name} = VAR") for name in vt.answers[1:])


def test_chat_template_wraps_the_question_not_the_answer_prefix(chat_tokenizer):
    wrapped = synthetic.generate("passkey", chat_tokenizer, length=800)
    assert wrapped.prompt.startswith("<|user|>There is an important info")
    assert wrapped.prompt.endswith("What is the pass key?<|assistant|>The pass key is")
    plain = synthetic.generate("passkey", chat_tokenizer, length=800, chat=False)
    assert plain.prompt.endswith("What is the pass key? The pass key is")
    assert wrapped.answers == plain.answers


def test_copy_task_on_ids():
    sample = synthetic.generate("copy", length=300, depth=0.25, vocab_size=50)
    assert len(sample.input_ids) == 300 - sample.max_new_tokens
    key = sample.input_ids[-8:] + sample.answer_ids
    start = round(0.25 * (300 - 32))
    assert sample.input_ids[start : start + 16] == key
    assert synthetic.generate("copy", length=300, depth=0.25, vocab_size=50) == sample


def test_scoring_exact_partial_and_tokens(tokenizer):
    sample = synthetic.generate("niah_noise_multivalue", tokenizer, length=1000, depth=0.5)
    full = " " + ", ".join(sample.answers) + "."
    assert synthetic.score(sample, tokenizer.encode(full), tokenizer) == (1.0, full.strip())
    half = " " + " ".join(sample.answers[:2])
    assert synthetic.score(sample, tokenizer.encode(half), tokenizer)[0] == 0.5
    copy = synthetic.generate("copy", length=100, vocab_size=20)
    assert synthetic.score(copy, copy.answer_ids[:4] + [99] * 4)[0] == 0.5


def test_insert_at_depths_keeps_order_of_ties():
    out = hs.insert_at_depths(["a", "b", "c", "d"], ["X", "Y", "Z"], [0.5, 0.5, 0.0])
    assert out == ["Z", "a", "b", "X", "Y", "c", "d"]


def test_fit_to_length_finds_the_largest_fit():
    text, n = hs.fit_to_length(lambda n: "ab" * n + "!", len, 100)
    assert (n, len(text)) == (49, 99)


def test_bad_inputs(tokenizer):
    with pytest.raises(ValueError, match="task"):
        synthetic.generate("nope", tokenizer)
    with pytest.raises(ValueError, match="depth"):
        synthetic.generate("passkey", tokenizer, depth=1.5)
    with pytest.raises(ValueError, match="too short"):
        synthetic.generate("passkey", tokenizer, length=100)
    with pytest.raises(ValueError, match="essay"):
        synthetic.generate("niah_single_2", tokenizer, length=1000)
    with pytest.raises(ValueError, match="vocab_size"):
        synthetic.generate("copy", length=100)
