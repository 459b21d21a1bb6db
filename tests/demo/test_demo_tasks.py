import numpy as np
import pytest
import torch

from ahn.demo.base import build_tokenizer
from ahn.demo.tasks import (
    FACT,
    KEYS,
    QUERY,
    TOKEN_ID,
    VALUES,
    VOCAB,
    TaskConfig,
    make_batch,
    sample,
)


def test_facts_are_queried_beyond_min_distance():
    task = TaskConfig(length=96, max_facts=3, min_distance=24, lead=4)
    rng = np.random.default_rng(42)
    for _ in range(50):
        words, positions, distances = sample(rng, task)
        assert len(words) == task.length and words[0] == "<bos>"
        assert FACT not in words[: 1 + task.lead]
        for p, d in zip(positions, distances):
            assert words[p - 1] == QUERY and words[p] in KEYS and words[p + 1] in VALUES
            fact = p - d
            assert words[fact - 2 : fact + 1] == [FACT, words[p], words[p + 1]]
            assert d >= task.min_distance


def test_extra_queries_ask_only_about_earlier_facts():
    task = TaskConfig(extra_queries=6)
    rng = np.random.default_rng(42)
    for _ in range(50):
        words, positions, distances = sample(rng, task)
        assert words.count(QUERY) == len(positions) > words.count(FACT)
        assert all(0 < d < p for p, d in zip(positions, distances))


def test_batch_is_a_function_of_the_seed_and_matches_the_tokenizer():
    task = TaskConfig(length=64, max_facts=2, min_distance=16, lead=2)
    a, b = make_batch(4, task, seed=7), make_batch(4, task, seed=7)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.answer_mask, b.answer_mask)
    assert not torch.equal(a.input_ids, make_batch(4, task, seed=8).input_ids)
    tokenizer = build_tokenizer()
    assert tokenizer.convert_ids_to_tokens(list(range(5, len(VOCAB)))) == [
        "Ġ" + w for w in VOCAB[5:]
    ]
    text = tokenizer.decode(a.input_ids[0])
    assert text.split() == [VOCAB[i] for i in a.input_ids[0]]
    assert tokenizer(text)["input_ids"] == a.input_ids[0].tolist()
    answers = a.input_ids[:, 1:][a.answer_mask[:, :-1]]
    assert all(VOCAB[i] in VALUES for i in answers.tolist())
    assert TOKEN_ID["<bos>"] == tokenizer.bos_token_id


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"max_facts": 0}, "max_facts=0"),
        ({"min_distance": 0}, "min_distance=0"),
        ({"extra_queries": -1}, "extra_queries=-1"),
        ({"length": 40}, "length=40"),
        ({"repeats": 0}, "repeats=0"),
    ],
)
def test_task_config_rejects(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        TaskConfig(**kwargs)
