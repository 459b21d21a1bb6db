"""Gated delta rule: chunked and recurrent kernels against the per-token reference."""

from __future__ import annotations

import pytest
import torch
from ops_helpers import delta_inputs, outputs_and_grads

import ahn.ops.gated_delta_rule.chunk as chunk_module
import ahn.ops.gated_delta_rule.chunk_fwd as chunk_fwd_module
from ahn.ops import (
    chunk_gated_delta_rule,
    fused_recurrent_gated_delta_rule,
    l2norm,
    naive_recurrent_gated_delta_rule,
)

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}

# (B, T, H, K, V, dtype, initial state, decay scale): each axis value, awkward combinations.
CASES = [
    pytest.param(1, 1, 1, 16, 16, torch.float32, True, 1.0, id="B1-T1-H1-D16-fp32-h0"),
    pytest.param(2, 1, 3, 40, 24, torch.bfloat16, False, 1.0, id="B2-T1-H3-K40V24-bf16"),
    pytest.param(2, 63, 3, 40, 40, torch.float32, False, 1.0, id="B2-T63-H3-D40-fp32"),
    pytest.param(1, 64, 3, 64, 64, torch.bfloat16, True, 1.0, id="B1-T64-H3-D64-bf16-h0"),
    pytest.param(2, 65, 1, 128, 128, torch.float32, True, 1.0, id="B2-T65-H1-D128-fp32-h0"),
    pytest.param(2, 65, 3, 16, 40, torch.bfloat16, True, 1.0, id="B2-T65-H3-K16V40-bf16-h0"),
    pytest.param(1, 500, 3, 64, 64, torch.float32, True, 1.0, id="B1-T500-H3-D64-fp32-h0"),
    pytest.param(1, 500, 1, 128, 128, torch.bfloat16, False, 1.0, id="B1-T500-H1-D128-bf16"),
    pytest.param(2, 130, 3, 40, 40, torch.float32, True, 30.0, id="B2-T130-H3-D40-strong-decay"),
]


@pytest.mark.parametrize("B, T, H, K, V, dtype, h0, g_scale", CASES)
def test_matches_naive(assert_close, B, T, H, K, V, dtype, h0, g_scale):
    inputs = delta_inputs(B, T, H, K, V, dtype, h0, g_scale)
    kw = {"use_qk_l2norm_in_kernel": True, "scale": 0.3 if T == 130 else None}
    ref = outputs_and_grads(naive_recurrent_gated_delta_rule, inputs, **kw)
    # the token loop of the recurrent form is as slow as the reference: short inputs only
    kernels = [chunk_gated_delta_rule] + [fused_recurrent_gated_delta_rule] * (T <= 130)
    for kernel in kernels:
        tri = outputs_and_grads(kernel, inputs, **kw)
        assert tri["o"].dtype == dtype and tri["S"].dtype == torch.float32
        for name in ref:
            assert_close(f"{kernel.__name__}: {name}", ref[name], tri[name], TOL[dtype])


@pytest.mark.parametrize("block_rows", [1, 1024], ids=lambda r: f"rows{r}")
@pytest.mark.parametrize("chunk_size", [5, 16, 171], ids=lambda c: f"chunk{c}")
def test_chunk_sizes(assert_close, monkeypatch, chunk_size, block_rows):
    # 35, 11 (the last one short) or 1 chunk; forward blocks of one chunk or of several (34 + 1,
    # 10 + 1); backward segments of STATE_EVERY = 8 chunks (4 x 8 + 3, 8 + 3, 1)
    monkeypatch.setattr(chunk_module, "CHUNK_SIZE", chunk_size)
    monkeypatch.setattr(chunk_fwd_module, "BLOCK_ROWS", block_rows)
    inputs = delta_inputs(2, 171, 3, 16, 24, torch.float32, h0=True)
    ref = outputs_and_grads(naive_recurrent_gated_delta_rule, inputs, use_qk_l2norm_in_kernel=True)
    tri = outputs_and_grads(chunk_gated_delta_rule, inputs, use_qk_l2norm_in_kernel=True)
    for name in ref:
        assert_close(name, ref[name], tri[name], 1e-4)
    with torch.no_grad():  # the inference path keeps no per-chunk states
        kw = {"output_final_state": True, "use_qk_l2norm_in_kernel": True}
        o, S = chunk_gated_delta_rule(**inputs, **kw)
    assert_close("o (no grad)", ref["o"], o, 1e-4)
    assert_close("S (no grad)", ref["S"], S, 1e-4)


def test_l2norm_in_kernel_equals_normalised_inputs(assert_close):
    inputs = delta_inputs(2, 70, 3, 32, 32, torch.float32, h0=True)
    ref = outputs_and_grads(
        lambda q, k, **kw: naive_recurrent_gated_delta_rule(l2norm(q), l2norm(k), **kw), inputs
    )
    tri = outputs_and_grads(chunk_gated_delta_rule, inputs, use_qk_l2norm_in_kernel=True)
    for name in ref:
        assert_close(name, ref[name], tri[name], 1e-4)


@pytest.mark.parametrize("split", [1, 64, 100], ids=lambda s: f"split{s}")
def test_split_sequence_carries_state(assert_close, split):
    x = delta_inputs(2, 150, 3, 32, 32, torch.float32, h0=True)
    kw = {"use_qk_l2norm_in_kernel": True, "output_final_state": True}
    o, S = chunk_gated_delta_rule(**x, **kw)
    first = {n: t[:, :split] for n, t in x.items() if n != "initial_state"}
    rest = {n: t[:, split:] for n, t in x.items() if n != "initial_state"}
    o1, S1 = chunk_gated_delta_rule(**first, initial_state=x["initial_state"], **kw)
    o2, S2 = chunk_gated_delta_rule(**rest, initial_state=S1, **kw)
    assert_close("o", o, torch.cat([o1, o2], dim=1), 1e-5)
    assert_close("S", S, S2, 1e-5)


def test_split_sequence_gradients(assert_close):
    inputs = delta_inputs(1, 150, 3, 32, 32, torch.float32, h0=True)

    def two_calls(q, k, v, g, beta, initial_state, **kw):
        first = chunk_gated_delta_rule(q[:, :70], k[:, :70], v[:, :70], g[:, :70], beta[:, :70],
                                       initial_state=initial_state, **kw)  # fmt: skip
        o2, S = chunk_gated_delta_rule(q[:, 70:], k[:, 70:], v[:, 70:], g[:, 70:], beta[:, 70:],
                                       initial_state=first[1], **kw)  # fmt: skip
        return torch.cat([first[0], o2], dim=1), S

    ref = outputs_and_grads(chunk_gated_delta_rule, inputs, use_qk_l2norm_in_kernel=True)
    tri = outputs_and_grads(two_calls, inputs, use_qk_l2norm_in_kernel=True)
    for name in ref:
        assert_close(name, ref[name], tri[name], 1e-5)


def test_decode_after_prefill_equals_one_call(assert_close):
    x = delta_inputs(1, 80, 3, 32, 32, torch.float32, h0=False)
    kw = {"use_qk_l2norm_in_kernel": True, "output_final_state": True}
    o, S = chunk_gated_delta_rule(**x, **kw)
    prefill = {n: x[n][:, :70] for n in ("q", "k", "v", "g", "beta")}
    o_pre, state = chunk_gated_delta_rule(**prefill, **kw)
    outs = []
    for t in range(70, 80):
        step = {n: x[n][:, t : t + 1] for n in ("q", "k", "v", "g", "beta")}
        o_t, state = fused_recurrent_gated_delta_rule(**step, initial_state=state, **kw)
        outs.append(o_t)
    assert_close("o", o, torch.cat([o_pre, *outs], dim=1), 1e-5)
    assert_close("S", S, state, 1e-5)


def test_default_scale_and_no_final_state():
    x = delta_inputs(1, 20, 2, 16, 16, torch.float32, h0=False)
    o, S = chunk_gated_delta_rule(**x)
    o_ref, _ = chunk_gated_delta_rule(**x, scale=16**-0.5)
    assert S is None
    torch.testing.assert_close(o, o_ref)


def _written_values(q, k, v, g, beta, initial_state):
    """`||beta_t (v_t - exp(g_t) S_{t-1}^T k_t)||` [B, T, H] by its definition, in float64."""
    k = l2norm(k.double())
    S = initial_state.double().clone()
    norms = []
    for t in range(k.shape[1]):
        S = S * g[:, t].double().exp()[..., None, None]
        u = beta[:, t, :, None].double() * (
            v[:, t].double() - torch.einsum("bhkv,bhk->bhv", S, k[:, t])
        )
        S = S + torch.einsum("bhk,bhv->bhkv", k[:, t], u)
        norms.append(u.norm(dim=-1))
    return torch.stack(norms, dim=1)


@pytest.mark.parametrize("T", [1, 5, 63, 171])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_write_norms_of_every_kernel(assert_close, T, grad, monkeypatch):
    """`output_write_norm`: the salient store's surprise, from every kernel, equal to the
    definition; the other outputs unchanged, and no gradient through the norms."""
    monkeypatch.setattr(chunk_module, "CHUNK_SIZE", 16)  # several chunks and blocks at T = 171
    monkeypatch.setattr(chunk_fwd_module, "BLOCK_ROWS", 96)
    x = delta_inputs(2, T, 3, 16, 24, torch.float32, h0=True)
    want = _written_values(**x)
    kw = {"use_qk_l2norm_in_kernel": True, "output_final_state": True}
    for kernel in (naive_recurrent_gated_delta_rule, fused_recurrent_gated_delta_rule,
                   chunk_gated_delta_rule):  # fmt: skip
        inputs = {n: t.clone().requires_grad_(grad) for n, t in x.items()}
        o, S, norms = kernel(**inputs, **kw, output_write_norm=True)
        o_ref, S_ref = kernel(**inputs, **kw)
        assert not norms.requires_grad and norms.shape == (2, T, 3)
        assert_close(f"{kernel.__name__}: norms", want.float(), norms, 1e-5)
        assert torch.equal(o, o_ref) and torch.equal(S, S_ref)
