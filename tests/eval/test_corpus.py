"""`ahn.corpus`: the standard library as real long text, a stable held-out split, fact chats
whose fact lies far enough back, and the training mix."""

import json
import random

import pytest

from ahn import corpus


def test_split_is_stable_and_disjoint():
    docs = corpus.stdlib_documents()
    names = [d.name for d in docs]
    assert len(names) == len(set(names)) > 100
    train, held = corpus.documents("train"), corpus.documents("heldout")
    assert {d.name for d in train}.isdisjoint({d.name for d in held})
    assert len(train) + len(held) == len(docs) and 0 < len(held) < len(docs) / 4
    assert corpus.split_of("src:typing.py") == corpus.split_of("src:typing.py")
    assert all(not d.name.startswith("src:encodings/") for d in docs)
    with pytest.raises(ValueError, match="heldout"):
        corpus.documents("validation")


def test_fact_chat_puts_the_fact_far_enough_back(chat_tokenizer):
    doc = corpus.documents("train")[0]
    rng = random.Random(0)
    for _ in range(5):
        sample = corpus.fact_chat(doc, chat_tokenizer, 900, 400, rng)
        user, answer = (m["content"] for m in sample["messages"])
        question = user.rsplit("\n\n", 1)[1]
        fact_line = next(line for line in user.splitlines() if _is_fact(line))
        back = len(chat_tokenizer(user[user.index(fact_line) + len(fact_line) :])["input_ids"])
        assert back >= 400 - 8  # decode/re-encode may merge a few characters
        assert question.endswith("?") and answer.endswith(".")
        assert len(chat_tokenizer(user)["input_ids"]) <= 900


def _is_fact(line: str) -> bool:
    starts = [t[0].split("{")[0] for t in corpus.FACT_TEMPLATES if not t[0].startswith("{")]
    return (
        any(line.startswith(s) for s in starts)
        or " keeps the spare key in " in line
        or (" was born in the year " in line)
    )


def test_training_mix_writes_plain_pieces_and_chats(chat_tokenizer, tmp_path):
    out = tmp_path / "mix.jsonl"
    docs = corpus.documents("train")[:6]
    counts = corpus.build_training_data(chat_tokenizer, out, seq_len=4096, chats=5, docs=docs)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert counts["chats"] == 5 == sum("messages" in r for r in records)
    assert counts["plain"] == sum("text" in r for r in records) > 10
    longest = max(len(chat_tokenizer(r["text"])["input_ids"]) for r in records if "text" in r)
    assert longest <= 4096 + 8  # decode/re-encode may shift a few tokens


def test_training_mix_can_take_fewer_plain_pieces(chat_tokenizer, tmp_path):
    docs = corpus.documents("train")[:6]
    every = corpus.build_training_data(chat_tokenizer, tmp_path / "a.jsonl", 4096, 2, docs=docs)
    some = corpus.build_training_data(
        chat_tokenizer, tmp_path / "b.jsonl", 4096, 2, docs=docs, plain_pieces=3
    )
    records = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert every["plain"] > 3 == some["plain"] == sum("text" in r for r in records)
