"""Validation, layout helpers and dispatch of `ahn.ops`."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from ops_helpers import delta_inputs

from ahn.ops import (
    chunk_delta_rule,
    chunk_gated_delta_rule,
    fused_recurrent_delta_rule,
    fused_recurrent_gated_delta_rule,
    mamba_chunk_scan_combined,
    naive_recurrent_gated_delta_rule,
)
from ahn.ops.gated_delta_rule.chunk_fwd import heads_view, split_chunks
from ahn.ops.utils import from_chunks, to_chunks

GOOD = delta_inputs(2, 10, 3, 8, 8, torch.float32, h0=True)
BAD_DELTA = [
    pytest.param("q", torch.randn(2, 10, 3), "q", id="q-rank3"),
    pytest.param("k", torch.randn(2, 10, 3, 4), "k", id="k-head-dim"),
    pytest.param("v", torch.randn(2, 9, 3, 8), "v", id="v-length"),
    pytest.param("g", torch.randn(2, 10, 4), "g", id="g-heads"),
    pytest.param("beta", torch.randn(2, 10, 3, 1), "beta", id="beta-rank4"),
    pytest.param("q", torch.ones(2, 10, 3, 8, dtype=torch.long), "q", id="q-int"),
    pytest.param("initial_state", torch.randn(2, 3, 8, 8).double(), "initial_state", id="h0-fp64"),
    pytest.param("initial_state", torch.randn(2, 3, 8, 8).half(), "initial_state", id="h0-fp16"),
    pytest.param("initial_state", torch.randn(2, 3, 8, 7), "initial_state", id="h0-shape"),
]


@pytest.mark.parametrize(
    "kernel",
    [chunk_gated_delta_rule, fused_recurrent_gated_delta_rule, naive_recurrent_gated_delta_rule],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("name, value, match", BAD_DELTA)
def test_bad_delta_inputs(kernel, name, value, match):
    with pytest.raises(ValueError, match=match):
        kernel(**(GOOD | {name: value}))


def test_bad_delta_rule_beta():
    x = {n: GOOD[n] for n in ("q", "k", "v")}
    with pytest.raises(ValueError, match="beta"):
        chunk_delta_rule(**x, beta=torch.rand(2, 10, 2))


M2 = {
    "x": torch.randn(1, 6, 4, 8),
    "dt": torch.rand(1, 6, 4),
    "A": -torch.rand(4),
    "B": torch.randn(1, 6, 2, 5),
    "C": torch.randn(1, 6, 2, 5),
    "chunk_size": 4,
}
BAD_MAMBA2 = [
    pytest.param("chunk_size", 0, "chunk_size", id="chunk-0"),
    pytest.param("chunk_size", -4, "chunk_size", id="chunk-negative"),
    pytest.param("chunk_size", 2.5, "chunk_size", id="chunk-float"),
    pytest.param("x", torch.randn(6, 4, 8), "x", id="x-rank3"),
    pytest.param("dt", torch.rand(1, 6, 3), "dt", id="dt-heads"),
    pytest.param("A", torch.rand(4, 1), "A", id="A-rank2"),
    pytest.param("B", torch.randn(1, 6, 3, 5), "groups", id="B-groups-not-dividing"),
    pytest.param("C", torch.randn(1, 6, 2, 4), "C", id="C-state-dim"),
    pytest.param("D", torch.randn(3), "D", id="D-heads"),
    pytest.param("dt_bias", torch.randn(5), "dt_bias", id="dt_bias-heads"),
    pytest.param("initial_states", torch.randn(1, 4, 5, 8), "initial_states", id="h0-transposed"),
    pytest.param("initial_states", torch.randn(1, 4, 8, 5).bfloat16(), "initial", id="h0-bf16"),
]


@pytest.mark.parametrize("name, value, match", BAD_MAMBA2)
def test_bad_mamba2_inputs(name, value, match):
    with pytest.raises(ValueError, match=match):
        mamba_chunk_scan_combined(**(M2 | {name: value}))


def test_cpu_never_dispatches_to_fla(monkeypatch):
    def boom(**kwargs):
        raise AssertionError("fla must not be called on CPU")

    fake = types.ModuleType("fla.ops.gated_delta_rule")
    fake.chunk_gated_delta_rule = boom
    monkeypatch.setitem(sys.modules, "fla.ops.gated_delta_rule", fake)
    o, _ = chunk_gated_delta_rule(**GOOD)
    assert o.shape == (2, 10, 3, 8)


@pytest.mark.parametrize("B, H", [(1, 3), (2, 1), (2, 3)])
def test_heads_view_and_chunk_split(B, H):
    x = torch.randn(B, 70, H, 5)
    xm = heads_view(x)
    assert torch.equal(xm, x.transpose(1, 2).reshape(B * H, 70, 5))
    assert (xm.data_ptr() == x.data_ptr()) == (B == 1 or H == 1)  # a view where one exists
    chunks = split_chunks(xm, 32)
    assert [c.shape[1] for c in chunks] == [32, 32, 32]
    assert torch.equal(torch.cat(chunks, dim=1)[:, :70], xm)
    assert not chunks[-1][:, 6:].any()  # zero padding past the end


@pytest.mark.parametrize("T, C", [(1, 1), (63, 64), (64, 16), (130, 64)])
def test_chunk_layout_round_trip(T, C):
    x = torch.randn(2, T, 3, 5)
    chunks = to_chunks(x, C)
    assert chunks.shape == (-(-T // C), 6, C, 5)
    assert torch.equal(from_chunks(chunks, 2, T), x)


@pytest.mark.parametrize(
    "kernel, inputs",
    [
        (chunk_gated_delta_rule, GOOD),
        (fused_recurrent_gated_delta_rule, GOOD),
        (chunk_delta_rule, {k: v for k, v in GOOD.items() if k != "g"}),
        (fused_recurrent_delta_rule, {k: v for k, v in GOOD.items() if k != "g"}),
        (mamba_chunk_scan_combined, None),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_fast_path_gets_every_argument_by_keyword(kernel, inputs, monkeypatch):
    """Where the fast kernel runs (CUDA + fla / mamba_ssm), it is called by the same name with
    every argument of our signature by keyword: simulated here by pretending it is available."""
    import inspect

    from ahn.ops import utils

    inputs = M2 if inputs is None else inputs
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return "fast"

    monkeypatch.setattr(utils, "fast_path", lambda module, name, *t: fake)
    assert kernel(**inputs) == "fast"
    ours = set(kernel.local_arguments)
    assert set(seen) == set(inspect.signature(kernel).parameters) - ours
    assert all(seen[name] is value for name, value in inputs.items())
    assert kernel.fast_module.split(".")[0] in ("fla", "mamba_ssm")
    for name in ours:  # an argument of ours only: the torch code answers, not the package
        assert kernel(**inputs, **{name: True}) != "fast"
