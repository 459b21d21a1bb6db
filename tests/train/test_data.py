import json

import pytest
import torch

from ahn.train.data import (
    DataError,
    DataPosition,
    Sample,
    SampleStream,
    Tokenizing,
    collate,
    file_source,
    memory_source,
    rank_micro_batches,
)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_all(paths, tokenizer=None, seq_len=64, **kwargs):
    tok = Tokenizing(tokenizer, kwargs.pop("assistant_only", False), kwargs.pop("vocab_size", None))
    return list(file_source([str(p) for p in paths], tok, seq_len, **kwargs)())


def test_text_records_are_tokenized(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "hello"}, {"text": "abc", "id": 3}])
    samples = read_all([path], tokenizer)
    assert [s.input_ids for s in samples] == [
        tokenizer("hello")["input_ids"],
        tokenizer("abc")["input_ids"],
    ]


def test_input_ids_need_no_tokenizer(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"input_ids": [1, 2, 3]}, [4, 5]])
    assert [s.input_ids for s in read_all([path])] == [[1, 2, 3], [4, 5]]


def test_messages_mark_only_assistant_tokens(tmp_path, tokenizer):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "ab"},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}])
    (sample,) = read_all([path], tokenizer, assistant_only=True)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(sample.input_ids) == text
    picked = [tokenizer.decode([i]) for i, keep in zip(sample.input_ids, sample.targets) if keep]
    assert "".join(picked) == "yo<|end|>ab<|end|>"
    (everything,) = read_all([path], tokenizer, assistant_only=False)
    assert everything.input_ids == sample.input_ids and everything.targets is None


def test_txt_files_stream_in_seq_len_pieces(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr("ahn.train.data.TXT_BLOCK_CHARS", 7)  # many blocks
    text = "".join(f"line {i}\n" for i in range(40))
    (tmp_path / "book.txt").write_text(text)
    samples = read_all([tmp_path], tokenizer, seq_len=50)
    assert [len(s) for s in samples] == [50] * (len(text) // 50) + [len(text) % 50]
    assert (
        sum((s.input_ids for s in samples), [])
        == tokenizer(text, add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "Expecting"),
        ('{"other": 1}', "one of the keys"),
        ('{"input_ids": [1, "a"]}', "list of integers"),
        ('{"input_ids": [1, 500]}', "vocab_size=100"),
        ('{"messages": [{"role": "user"}]}', "messages must be"),
        ('"just a string"', "JSON object"),
    ],
)
def test_bad_line_is_an_error_with_its_line_number(tmp_path, tokenizer, line, reason):
    path = tmp_path / "d.jsonl"
    path.write_text('{"input_ids": [1, 2]}\n\n' + line + "\n")
    with pytest.raises(DataError, match=rf"d\.jsonl:3: .*{reason}"):
        read_all([path], tokenizer, vocab_size=100)


def test_skip_bad_lines_warns_and_goes_on(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"input_ids": [1, 2]}\n{oops\n{"input_ids": [3, 4]}\n')
    with pytest.warns(UserWarning, match=r"d\.jsonl:2"):
        samples = read_all([path], skip_bad=True)
    assert [s.input_ids for s in samples] == [[1, 2], [3, 4]]


def test_text_without_tokenizer_and_bad_paths_are_errors(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    with pytest.raises(DataError, match="need a tokenizer"):
        read_all([path])
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_all([tmp_path / "missing.jsonl"])
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported type"):
        read_all([tmp_path / "d.csv"])


def stream(n=40, **kwargs):
    data = [[i] * (2 + i % 5) for i in range(n)]
    defaults = {"seq_len": 5, "seed": 42, "shuffle_buffer": 8}
    return SampleStream(memory_source(data, Tokenizing(None)), **(defaults | kwargs))


def firsts(samples):
    return [s.input_ids[0] for s in samples]


def test_order_is_a_shuffle_fixed_by_the_seed():
    one = firsts(stream().epoch(0))
    assert sorted(one) == list(range(40)) and one != list(range(40))
    assert firsts(stream().epoch(0)) == one
    assert firsts(stream(seed=7).epoch(0)) != one
    assert firsts(stream().epoch(1)) != one


def test_truncation_and_min_len():
    samples = list(stream(seq_len=4, min_len=5).epoch(0))
    assert all(len(s) == 4 for s in samples)
    assert sorted(firsts(samples)) == [i for i in range(40) if 2 + i % 5 >= 5]


def test_batches_resume_from_a_position_and_cross_epochs():
    batches = stream().global_batches(6, DataPosition())
    straight = [next(batches) for _ in range(10)]  # 60 samples: crosses into epoch 1
    assert straight[6][1] == DataPosition(epoch=1, consumed=2)
    resumed = stream().global_batches(6, straight[3][1])
    for batch, position in straight[4:]:
        again, again_position = next(resumed)
        assert firsts(again) == firsts(batch) and again_position == position


def test_one_shot_iterator_runs_out_with_a_clear_error():
    source = SampleStream(memory_source(iter([[1, 2], [3, 4]]), Tokenizing(None)), seq_len=8)
    batches = source.global_batches(3, DataPosition())
    with pytest.raises(ValueError, match="one-shot iterator"):
        next(batches)


def test_ranks_split_a_global_batch_into_micro_batches():
    batch = [Sample([i, i]) for i in range(12)]
    parts = [rank_micro_batches(batch, rank, world=2, grad_accum=3) for rank in range(2)]
    assert [[firsts(m) for m in p] for p in parts] == [
        [[0, 1], [2, 3], [4, 5]],
        [[6, 7], [8, 9], [10, 11]],
    ]


def test_collate_right_pads_and_masks():
    input_ids, targets = collate([Sample([5, 6, 7]), Sample([8, 9], [False, True])])
    assert input_ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert targets.tolist() == [[True, True, True], [False, True, False]]


def test_in_memory_data_takes_tensors_records_and_lists(tokenizer):
    data = [torch.tensor([3, 4, 5]), {"text": "ab"}, [7, 8]]
    samples = list(memory_source(data, Tokenizing(tokenizer))())
    assert [s.input_ids for s in samples] == [[3, 4, 5], tokenizer("ab")["input_ids"], [7, 8]]
    with pytest.raises(DataError, match=r"data\[1\]: .*one of the keys"):
        list(memory_source([[1, 2], {"bad": 1}], Tokenizing(None))())
