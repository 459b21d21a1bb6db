"""Delta rule (no decay): chunked and recurrent kernels against the per-token reference."""

from __future__ import annotations

import pytest
import torch
from ops_helpers import delta_inputs, outputs_and_grads

from ahn.ops import chunk_delta_rule, fused_recurrent_delta_rule, naive_recurrent_delta_rule

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}

CASES = [
    pytest.param(2, 1, 3, 40, torch.float32, True, id="B2-T1-H3-D40-fp32-h0"),
    pytest.param(1, 63, 1, 128, torch.bfloat16, True, id="B1-T63-H1-D128-bf16-h0"),
    pytest.param(2, 65, 3, 16, torch.float32, False, id="B2-T65-H3-D16-fp32"),
    pytest.param(1, 500, 3, 64, torch.float32, True, id="B1-T500-H3-D64-fp32-h0"),
]


@pytest.mark.parametrize("B, T, H, D, dtype, h0", CASES)
def test_matches_naive(assert_close, B, T, H, D, dtype, h0):
    inputs = delta_inputs(B, T, H, D, D, dtype, h0)
    del inputs["g"]
    ref = outputs_and_grads(naive_recurrent_delta_rule, inputs, use_qk_l2norm_in_kernel=True)
    kernels = [chunk_delta_rule] + [fused_recurrent_delta_rule] * (T <= 130)
    for kernel in kernels:
        tri = outputs_and_grads(kernel, inputs, use_qk_l2norm_in_kernel=True)
        assert tri["o"].dtype == dtype
        for name in ref:
            assert_close(f"{kernel.__name__}: {name}", ref[name], tri[name], TOL[dtype])


def test_recurrent_beta_defaults_to_one(assert_close):
    x = delta_inputs(1, 9, 2, 16, 16, torch.float32, h0=False)
    o, _ = fused_recurrent_delta_rule(x["q"], x["k"], x["v"], use_qk_l2norm_in_kernel=True)
    ref, _ = naive_recurrent_delta_rule(
        x["q"], x["k"], x["v"], torch.ones(1, 9, 2), use_qk_l2norm_in_kernel=True
    )
    assert_close("o", ref, o, 1e-5)


def test_write_norms_are_the_gated_kernels_without_decay(assert_close):
    from ahn.ops import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

    x = delta_inputs(1, 40, 2, 16, 16, torch.float32, h0=True)
    x_nog = {n: t for n, t in x.items() if n != "g"}
    kw = {"use_qk_l2norm_in_kernel": True, "output_write_norm": True}
    pairs = [
        (naive_recurrent_delta_rule, chunk_gated_delta_rule),
        (chunk_delta_rule, chunk_gated_delta_rule),
        (fused_recurrent_delta_rule, fused_recurrent_gated_delta_rule),
    ]
    for ours, gated in pairs:
        norms = ours(**x_nog, **kw)[-1]
        want = gated(**x_nog, g=torch.zeros_like(x["beta"]), **kw)[-1]
        assert_close(ours.__name__, want, norms, 1e-5)
