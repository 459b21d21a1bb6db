"""`ahn.compile`: the compiled memory pieces agree with eager on the three code paths (outputs,
states, gradients), compile once rather than per token or length, and fall back to eager with
one line when no compiler is there."""

import pytest
import torch
import torch._dynamo
from tiny_models import decode_logits, make_ahn_model
from torch._dynamo.utils import counters

import ahn

TOL = dict(atol=5e-5, rtol=1e-4)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def three_paths(model, ids):
    """(parallel logits, chunked prefill + decode logits, the cache's memory states)."""
    with torch.no_grad():
        parallel = model(ids, use_cache=False).logits
        stepped, cache = decode_logits(model, ids, split=30, chunk=16)
    states = [layer.state for layer in cache.layers]
    return parallel, stepped, states


@pytest.mark.parametrize("memory", ahn.MEMORY_TYPES)
def test_compiled_paths_equal_eager(memory, ids):
    model = make_ahn_model(memory=memory, window=8, sinks=2, salient=3)
    eager = three_paths(model, ids)
    assert ahn.compile(model) is model and ahn.is_compiled(model)
    compiled = three_paths(model, ids)
    torch.testing.assert_close(compiled[0], eager[0], **TOL)
    torch.testing.assert_close(compiled[1], eager[1], **TOL)
    torch.testing.assert_close(compiled[0], compiled[1], **TOL)  # SPEC §3 holds compiled too
    for got, want in zip(compiled[2], eager[2], strict=True):
        torch.testing.assert_close(got, want, **TOL)


def ahn_grads(model, ids):
    model.zero_grad(set_to_none=True)
    model(ids, use_cache=False).logits.square().mean().backward()
    return {n: p.grad.clone() for n, p in ahn.trainable_parameters(model) if p.grad is not None}


@pytest.mark.parametrize("memory", ["gated_deltanet", "mamba2"])
def test_compiled_gradients_equal_eager(memory, ids):
    model = make_ahn_model(memory=memory, window=8, sinks=2)
    eager = ahn_grads(model, ids)
    compiled = ahn_grads(ahn.compile(model), ids)
    assert eager.keys() == compiled.keys() and len(eager) > 10
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], atol=1e-5, rtol=1e-4, msg=name)


def test_no_recompilation_per_token_or_length():
    """A prefill, 50 decode steps and a second prompt of another length: every compilation
    happens during the first prompt and its first decode steps."""
    model = ahn.compile(make_ahn_model(window=8, sinks=2))
    gen = torch.Generator().manual_seed(0)
    prompt = lambda n: torch.randint(0, model.config.vocab_size, (1, n), generator=gen)
    with torch.no_grad():
        out = model(prompt(40), use_cache=True)
        for _ in range(3):
            out = model(out.logits[:, -1:].argmax(-1), cache=out.cache, use_cache=True)
        first = counters["stats"]["unique_graphs"]
        assert first > 0  # something was compiled
        for _ in range(47):
            out = model(out.logits[:, -1:].argmax(-1), cache=out.cache, use_cache=True)
        out = model(prompt(57), use_cache=True)
        for _ in range(3):
            out = model(out.logits[:, -1:].argmax(-1), cache=out.cache, use_cache=True)
    assert counters["stats"]["unique_graphs"] == first


def test_compile_is_idempotent():
    model = ahn.compile(make_ahn_model())
    memory = model.model.layers[0].ahn.fn
    pieces = {name: memory.__dict__[name] for name in ("step", "readout", "gates")}
    assert ahn.compile(model) is model
    assert all(memory.__dict__[name] is fn for name, fn in pieces.items())


def test_without_a_compiler_it_says_so_and_stays_eager(ids, capsys):
    model = make_ahn_model()
    want = model(ids, use_cache=False).logits
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/g++",)}):  # hides g++
        assert ahn.compile(model) is model
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no C++ compiler" in err and "eager" in err
    assert not ahn.is_compiled(model)
    assert "step" not in model.model.layers[0].ahn.fn.__dict__
    torch.testing.assert_close(model(ids, use_cache=False).logits, want)


def test_compile_refuses_a_model_that_is_not_augmented():
    from tiny_models import make_model

    with pytest.raises(ValueError, match="not augmented"):
        ahn.compile(make_model())
