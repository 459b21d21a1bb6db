"""End-to-end training runs on tiny models (the slow part of tests/train: keep it small)."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import tiny_qwen2

import ahn
from ahn.cli import main
from ahn.train import TrainConfig, evaluate_kl, train
from ahn.train.checkpoint import latest_checkpoint

VOCAB = 64


def topic_sequences(count, length=128, head=24, seed=0):
    """Long-range structure: a sequence opens with `head` tokens of its own 6-token topic, then
    shared filler; the full model still sees the topic far away, a sliding window does not."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        topic = torch.randperm(VOCAB - 8, generator=g)[:6] + 8
        opening = topic[torch.randint(0, 6, (head,), generator=g)]
        filler = torch.randint(0, 8, (length - head,), generator=g)
        out.append(torch.cat([opening, filler]).tolist())
    return out


def sharp_base():
    """A base whose random weights give confident, context-dependent predictions."""
    torch.manual_seed(42)
    model = tiny_qwen2(vocab_size=VOCAB, hidden=32)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.mul_(10)  # std 0.02 -> 0.2
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    model = sharp_base()
    base_before = {n: p.clone() for n, p in model.named_parameters()}
    config = TrainConfig(
        output=str(output),
        steps=40,
        batch_size=4,
        seq_len=128,
        lr=3e-2,
        warmup=2,
        train_window="fixed",
        window=32,
        sinks=0,
        save_every=0,
    )
    records = []
    train(config, model=model, data=topic_sequences(160), callback=records.append)
    return model, base_before, config, records


def test_ahn_learns_what_the_window_forgets(trained):
    model, _, _, records = trained
    kls = [r["kl"] for r in records]
    assert sum(kls[-10:]) < 0.95 * sum(kls[:10])
    held_out = evaluate_kl(model, topic_sequences(8, seed=1), sinks=0, window=32)
    assert held_out["ahn"] < 0.9 * held_out["sliding"], held_out


def test_base_weights_are_bit_identical(trained):
    model, base_before, _, _ = trained
    trainable = {n for n, _ in ahn.trainable_parameters(model)}
    for name, param in model.named_parameters():
        if name not in trainable:
            assert torch.equal(param, base_before[name]), name
    assert trainable and all(".ahn." in n for n in trainable)


def test_result_is_ahn_tensors_only_and_loads(trained):
    model, _, config, records = trained
    output = config.output
    saved = load_file(f"{output}/ahn_model.safetensors")
    assert set(saved) == {n for n, _ in ahn.trainable_parameters(model)}
    loaded = ahn.load(sharp_base(), output)
    for name, param in ahn.trainable_parameters(loaded):
        assert torch.equal(param, dict(ahn.trainable_parameters(model))[name])
    saved_config = json.loads(open(f"{output}/ahn_config.json").read())["config"]
    assert saved_config == config.ahn_config().to_dict()
    log = [json.loads(line) for line in open(f"{output}/train_log.jsonl")]
    assert log == records and [r["step"] for r in log] == list(range(1, 41))
    for key in ("loss", "kl", "ce_teacher", "ce_student", "tokens_per_s", "lr"):
        assert key in log[0]


def small_run(output, **overrides):
    config = dict(output=str(output), steps=6, batch_size=2, seq_len=64, lr=1e-2, save_every=2)
    return TrainConfig(**(config | overrides))


def small_data():
    return topic_sequences(10, length=64, head=16)


def ahn_state(model):
    return {n: p.detach().clone() for n, p in ahn.trainable_parameters(model)}


class Killed(Exception):
    pass


def kill_at(step):
    def callback(record):
        if record["step"] == step:
            raise Killed

    return callback


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    straight = train(small_run(tmp_path / "a"), model=sharp_base(), data=small_data())
    with pytest.raises(Killed):
        train(small_run(tmp_path / "b"), model=sharp_base(), data=small_data(), callback=kill_at(5))
    (tmp_path / "b" / "checkpoint-6.tmp").mkdir()  # a save killed half-way
    assert latest_checkpoint(tmp_path / "b") == tmp_path / "b" / "checkpoint-4"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(
            small_run(tmp_path / "b", resume=True), model=sharp_base(), data=small_data()
        )
    assert not [w for w in caught if "resuming" in str(w.message)]
    for name, value in ahn_state(straight).items():
        assert torch.equal(ahn_state(resumed)[name], value), name
    lines = [(tmp_path / run / "train_log.jsonl").read_text().splitlines() for run in "ab"]
    untimed = [[without_timing(json.loads(x)) for x in run] for run in lines]
    assert len(untimed[0]) == 6 and untimed[0] == untimed[1]


def test_resuming_with_other_settings_warns(tmp_path):
    train(small_run(tmp_path, steps=2), model=sharp_base(), data=small_data())
    with pytest.warns(UserWarning, match="resuming with other seed"):
        train(
            small_run(tmp_path, steps=2, seed=7, resume=True), model=sharp_base(), data=small_data()
        )


def without_timing(record):
    return {k: v for k, v in record.items() if k not in ("seconds", "tokens_per_s")}


def counted_base(calls):
    model = sharp_base()
    model.model.layers[1].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    return model


def test_gradient_checkpointing_gives_the_same_weights(tmp_path):
    calls_plain, calls_checkpointed = [], []
    config = small_run(tmp_path / "a", steps=2)
    plain = train(config, model=counted_base(calls_plain), data=small_data())
    config = small_run(tmp_path / "b", steps=2, gradient_checkpointing=True)
    checkpointed = train(config, model=counted_base(calls_checkpointed), data=small_data())
    # plain: teacher + the student's two calls; checkpointed: teacher, student, recompute
    assert (len(calls_plain), len(calls_checkpointed)) == (6, 6)
    for name, value in ahn_state(plain).items():
        torch.testing.assert_close(ahn_state(checkpointed)[name], value, rtol=1e-5, atol=1e-7)


def test_compiled_training_gives_the_same_weights(tmp_path):
    config = small_run(tmp_path / "a", steps=2)
    plain = train(config, model=tiny_qwen2(), data=small_data())
    config = small_run(tmp_path / "b", steps=2, compile=True)
    compiled = train(config, model=tiny_qwen2(), data=small_data())
    assert ahn.is_compiled(compiled) and not ahn.is_compiled(plain)
    for name, value in ahn_state(plain).items():
        torch.testing.assert_close(ahn_state(compiled)[name], value, rtol=1e-5, atol=1e-6)


def test_bfloat16_base_trains_float32_ahn(tmp_path, base_dir):
    config = small_run(tmp_path, steps=2, base=str(base_dir), dtype="bfloat16")
    model = train(config, data=[[1 + i % 50] * 64 for i in range(4)])
    assert all(p.dtype == torch.float32 for _, p in ahn.trainable_parameters(model))
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert all(torch.isfinite(p).all() for _, p in ahn.trainable_parameters(model))


def test_cli_reports_bad_data_with_its_line(tmp_path, base_dir, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n{"text": 3}\n')
    argv = ["train", "--base", str(base_dir), "--data", str(data), "--output", str(tmp_path / "o")]
    assert main([*argv, "--seq-len", "64"]) == 2
    assert "d.jsonl:2: text must be a string" in capsys.readouterr().err
    assert main([*argv, "--seq-len", "64", "--train-window", "fixed", "--window", "64"]) == 2
    assert "--train-window fixed" in capsys.readouterr().err


def test_messages_train_only_on_assistant_replies(tmp_path, base_dir):
    chat = [{"role": "user", "content": "x" * 30}, {"role": "assistant", "content": "y" * 20}]
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": chat}) + "\n")
    records = []
    config = small_run(
        tmp_path / "o",
        steps=1,
        batch_size=1,
        base=str(base_dir),
        data=[str(data)],
        assistant_only=True,
        train_window="fixed",
        window=8,
        sinks=0,
    )
    train(config, callback=records.append)
    # <|user|> x*30 <|end|> <|assistant|> y*20 <|end|>: 54 tokens; targets: the 20 y and <|end|>
    assert (records[0]["tokens"], records[0]["loss_tokens"]) == (54, 21)


def test_init_ahn_starts_from_a_saved_ahn(tmp_path):
    from ahn.train.distributed import DistEnv
    from ahn.train.loop import prepare_model

    donor = sharp_base()
    ahn.augment(donor, ahn.AHNConfig(window=32, sinks=0))
    for _, p in ahn.trainable_parameters(donor):
        p.data.normal_(0.0, 0.1)
    ahn.save(donor, tmp_path / "donor")
    config = small_run(tmp_path / "run", init_ahn=str(tmp_path / "donor"))
    model, _ = prepare_model(config, DistEnv(device=torch.device("cpu")), sharp_base(), None)
    for name, value in ahn_state(donor).items():
        assert torch.equal(ahn_state(model)[name], value), name


def test_cli_trains_with_a_salient_store_and_says_where_it_saved(tmp_path, base_dir, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"text": "abc def ghi " * (20 + i)}) + "\n" for i in range(4))
    )
    out = tmp_path / "o"
    argv = ["train", "--base", str(base_dir), "--data", str(data), "--output", str(out),
            "--window", "16", "--sinks", "2", "--salient", "4", "--train-window", "fixed",
            "--seq-len", "96", "--steps", "2", "--dtype", "float32", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert f"saved the trained AHN to {out}" in capsys.readouterr().err
    config = json.loads((out / "ahn_config.json").read_text())["config"]
    assert (config["salient"], config["salient_score"]) == (4, "novelty")
