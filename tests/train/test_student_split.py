"""The trainer's student forward in two calls (memory still empty / the rest) equals one call:
the same hidden states and the same AHN gradients, for every memory kind."""

import pytest
import torch
from train_helpers import tiny_qwen2

import ahn
from ahn.train import TrainConfig
from ahn.train.evaluate import hidden_states
from ahn.train.loop import student_hidden
from ahn.train.loss import distill_sums, loss_positions


def _augmented(memory: str):
    model = ahn.augment(tiny_qwen2(vocab_size=64), ahn.AHNConfig(memory=memory))
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero o_proj: every AHN weight gets a gradient
        for _, param in ahn.trainable_parameters(model):
            param.add_(0.1 * torch.randn_like(param))
    return model


def _loss_and_grads(model, input_ids, sinks, window, split: bool):
    model.zero_grad(set_to_none=True)
    with ahn.window(model, window=window, sinks=sinks):
        with torch.no_grad():
            teacher = hidden_states(model, input_ids, "full")
        config = TrainConfig(output="unused", gradient_checkpointing=not split)
        student = student_hidden(model, input_ids, sinks + window, config)
        targets = torch.ones_like(input_ids, dtype=torch.bool)
        positions = loss_positions(targets, sinks, window)
        loss = distill_sums(model.lm_head, student, teacher, input_ids, positions, 32)[0]
        with ahn.mode(model, "ahn"):
            loss.backward()
    # (parameters no path uses, like the GatedDeltaNet's checkpoint-layout `D`, get none)
    grads = {n: p.grad.clone() for n, p in ahn.trainable_parameters(model) if p.grad is not None}
    return student.detach(), loss.detach(), grads


@pytest.mark.parametrize("memory", ["gated_deltanet", "deltanet", "mamba2"])
@pytest.mark.parametrize(("sinks", "window"), [(4, 24), (0, 40)])
def test_split_student_equals_one_call(memory, sinks, window):
    model = _augmented(memory)
    input_ids = torch.randint(0, 64, (2, 97), generator=torch.Generator().manual_seed(0))
    h_one, loss_one, grads_one = _loss_and_grads(model, input_ids, sinks, window, split=False)
    h_two, loss_two, grads_two = _loss_and_grads(model, input_ids, sinks, window, split=True)
    torch.testing.assert_close(h_two, h_one, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_two, loss_one, rtol=1e-5, atol=1e-7)
    assert grads_one.keys() == grads_two.keys() and len(grads_one) >= 8
    for name, grad in grads_one.items():
        assert grad.abs().max() > 0, name  # the comparison below would be empty
        torch.testing.assert_close(grads_two[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_split_leaves_the_lossless_prefix_out_of_the_backward():
    model = _augmented("gated_deltanet")
    input_ids = torch.randint(0, 64, (1, 80), generator=torch.Generator().manual_seed(0))
    with ahn.window(model, window=24, sinks=4):
        student = student_hidden(model, input_ids, 28, TrainConfig(output="unused"))
    first, second = (fn for fn, _ in student.grad_fn.next_functions)
    assert first is None and second is not None  # rows [0, 28) need no gradient
