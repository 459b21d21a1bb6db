import math
import sys

import pytest
import torch

from ahn.cli import build_parser
from ahn.cli.train import config_from_args
from ahn.train import checkpoint as ckpt
from ahn.train.config import TrainConfig
from ahn.train.logger import TrainLogger
from ahn.train.loss import distill_sums, loss_positions
from ahn.train.schedule import get_lr
from ahn.train.windows import SINK_CHOICES, draw_window


@pytest.mark.parametrize("seq_len", [40, 100, 257, 4096, 30_000])
def test_window_draws_follow_the_recipe(seq_len):
    draws = [draw_window(42, step, seq_len) for step in range(200)]
    assert draws == [draw_window(42, step, seq_len) for step in range(200)]
    totals = {s + w for s, w in draws}
    assert all(seq_len / 8 < t < seq_len and t & (t - 1) == 0 for t in totals)
    assert draw_window(42, 0, 100_000)[0] + draw_window(42, 0, 100_000)[1] == 8192
    assert all(s in SINK_CHOICES and s <= (s + w) / 2 for s, w in draws)
    if seq_len >= 4096:
        assert len(totals) > 1 and len({s for s, _ in draws}) > 1


def test_window_draws_depend_on_seed_and_step():
    draws = {draw_window(seed, step, 10_000) for seed in range(3) for step in range(20)}
    assert len(draws) > 5


def test_lr_warms_up_then_decays_by_cosine():
    lrs = [get_lr(step, 1e-3, warmup_steps=10, total_steps=100) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))
    assert 0 < lrs[-1] < 1e-5
    assert lrs[55] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"loss": "mse"}, "loss"),
        ({"dtype": "float16"}, "dtype"),
        ({"train_window": "grow"}, "train_window"),
        ({"warmup": 2.5}, "warmup"),
        ({"memory": "lstm"}, "memory"),
        ({"min_len": 99, "seq_len": 64}, "min_len"),
        ({"train_window": "fixed", "window": 60, "sinks": 4, "seq_len": 64}, "no position"),
        ({"batch_size": True}, "batch_size"),
    ],
)
def test_bad_config_values_are_named(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(output=str(tmp_path), **kwargs)


def test_warmup_is_a_fraction_or_a_step_count(tmp_path):
    assert TrainConfig(output=str(tmp_path), steps=200).warmup_steps == 20
    assert TrainConfig(output=str(tmp_path), steps=200, warmup=7).warmup_steps == 7


def parse(argv):
    return build_parser("train").parse_args(["train", *argv])


def test_cli_flags_mirror_the_config(tmp_path):
    args = parse(
        [
            "--base",
            "b",
            "--data",
            "x.jsonl",
            "y.txt",
            "--output",
            "o",
            "--seq-len",
            "128",
            "--loss",
            "kl+ce",
            "--layers",
            "0",
            "1",
            "--gradient-checkpointing",
            "--warmup",
            "5",
        ]
    )
    config = config_from_args(args)
    assert config.data == ["x.jsonl", "y.txt"] and config.layers == [0, 1]
    assert (config.seq_len, config.loss, config.gradient_checkpointing) == (128, "kl+ce", True)
    defaults = config_from_args(parse(["--base", "b", "--data", "x", "--output", "o"]))
    assert defaults == TrainConfig(output="o", base="b", data=["x"])
    assert (defaults.lr, defaults.warmup, defaults.weight_decay) == (1e-4, 0.1, 0.1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "x", "--output", "o"], "--base"),
        (["--base", "b", "--data", "x", "--output", "o", "--loss", "mse"], "--loss"),
        (["--base", "b", "--data", "x", "--output", "o", "--steps", "many"], "--steps"),
    ],
)
def test_bad_flags_are_rejected(capsys, argv, message):
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


def test_loss_positions_skip_the_lossless_prefix_and_padding():
    targets = torch.tensor([[True] * 6, [True] * 5 + [False]])
    assert loss_positions(targets, sinks=1, window=2).tolist() == [
        [False, False, False, True, True],
        [False, False, False, True, False],
    ]


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_chunked_sums_equal_the_full_vocabulary_computation(chunk):
    torch.manual_seed(42)
    head = torch.nn.Linear(8, 11, bias=False)
    h_s = torch.randn(2, 7, 8, requires_grad=True)
    h_t = torch.randn(2, 7, 8)
    input_ids = torch.randint(0, 11, (2, 7))
    positions = loss_positions(torch.ones(2, 7, dtype=torch.bool), sinks=1, window=1)
    sums = distill_sums(head, h_s, h_t, input_ids, positions, chunk=chunk)
    (sums[0] + 0.5 * sums[1]).backward()

    ref_s = h_s.detach().clone().requires_grad_()
    logp_s = head(ref_s[:, :-1]).log_softmax(-1)
    logp_t = head(h_t[:, :-1]).log_softmax(-1)
    kl = (logp_t.exp() * (logp_t - logp_s)).sum(-1)[positions].sum()
    labels = input_ids[:, 1:, None]
    ce_s = -logp_s.gather(-1, labels)[..., 0][positions].sum()
    ce_t = -logp_t.gather(-1, labels)[..., 0][positions].sum()
    (kl + 0.5 * ce_s).backward()
    torch.testing.assert_close(sums, torch.stack([kl, ce_s, ce_t]).detach())
    torch.testing.assert_close(h_s.grad, ref_s.grad)


def test_student_only_sums_leave_kl_out():
    head = torch.nn.Linear(4, 5)
    h = torch.randn(1, 5, 4)
    positions = loss_positions(torch.ones(1, 5, dtype=torch.bool), 0, 1)
    kl, ce_s, ce_t = distill_sums(
        head, h, None, torch.zeros(1, 5, dtype=torch.long), positions
    ).tolist()
    assert math.isnan(kl) and math.isnan(ce_t) and ce_s > 0


def test_optimizer_state_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(42)
    params = {"a": torch.nn.Parameter(torch.randn(3, 2)), "b": torch.nn.Parameter(torch.randn(2))}
    names = {p: n for n, p in params.items()}
    optimizer = torch.optim.AdamW(
        [{"params": [params["a"]]}, {"params": [params["b"]], "weight_decay": 0.0}]
    )
    (params["a"].sum() + params["b"].square().sum()).backward()
    optimizer.step()
    tensors, rest = ckpt.optimizer_tensors(optimizer, names)
    ckpt.write_optimizer(tmp_path, tensors)

    fresh = torch.optim.AdamW(
        [{"params": [params["a"]]}, {"params": [params["b"]], "weight_decay": 0.0}]
    )
    ckpt.load_optimizer(tmp_path, fresh, names, rest)
    for param in params.values():
        for key, value in optimizer.state[param].items():
            torch.testing.assert_close(fresh.state[param][key], value, rtol=0, atol=0)
    assert fresh.param_groups[1]["weight_decay"] == 0.0


def test_only_complete_checkpoints_are_found(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    for step in (2, 10):
        tmp = ckpt.staging_dir(tmp_path, step)
        ckpt.write_json(tmp / ckpt.STATE_FILE, {"step": step})
        ckpt.publish(tmp)
    ckpt.staging_dir(tmp_path, 30)  # a killed save: never published
    (tmp_path / "checkpoint-20").mkdir()  # not written by us: no state file
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    tmp = ckpt.staging_dir(tmp_path, 10)  # saving the same step again replaces it
    ckpt.write_json(tmp / ckpt.STATE_FILE, {"step": 10, "again": True})
    assert "again" in (ckpt.publish(tmp) / ckpt.STATE_FILE).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-10",
        "checkpoint-2",
        "checkpoint-20",
        "checkpoint-30.tmp",
    ]


def test_tensorboard_without_its_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with pytest.raises(ValueError, match="pip install tensorboard"):
        TrainLogger(tmp_path, total_steps=1, start_step=0, enabled=True, tensorboard=True)


def test_min_sinks_leaves_out_smaller_sink_counts():
    draws = [draw_window(42, step, 2048, min_sinks=32) for step in range(200)]
    assert min(s for s, _ in draws) == 32
    assert {s + w for s, w in draws} == {512, 1024}
    assert draw_window(42, 0, 40, min_sinks=32)[0] == 0  # total 32: no allowed count reaches 32
