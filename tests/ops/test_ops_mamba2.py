"""Mamba2 scan: the chunked form against the per-token reference."""

from __future__ import annotations

import pytest
import torch
from ops_helpers import rel_rms

from ahn.ops import mamba_chunk_scan_combined, naive_recurrent_mamba2

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}


def mamba2_inputs(b, T, H, P, G, N, dtype, h0, D_shape, seed=42):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen)
    return {
        "x": rand(b, T, H, P).to(dtype),
        "dt": rand(b, T, H).to(dtype),
        "A": -torch.exp(rand(H)).to(dtype),
        "B": rand(b, T, G, N).to(dtype),
        "C": rand(b, T, G, N).to(dtype),
        "D": None if D_shape is None else rand(*D_shape).to(dtype),
        "dt_bias": rand(H).to(dtype),
        "initial_states": rand(b, H, P, N) if h0 else None,
    }


def run(fn, inputs, *args, **kwargs):
    leaves = {n: x.clone().requires_grad_() for n, x in inputs.items() if x is not None}
    y, S = fn(**{n: leaves.get(n) for n in inputs}, return_final_states=True, **kwargs)
    gen = torch.Generator().manual_seed(7)
    dy, dS = torch.randn(y.shape, generator=gen).to(y.dtype), torch.randn(S.shape, generator=gen)
    ((y * dy).float().sum() + (S * dS).sum()).backward()
    return {"y": y, "S": S} | {f"d{n}": x.grad for n, x in leaves.items()}


# (b, T, H, P, G, N, chunk, dtype, initial state, D shape)
CASES = [
    pytest.param(1, 1, 1, 16, 1, 16, 64, torch.float32, True, (1,), id="T1-H1-P16-fp32-h0"),
    pytest.param(2, 63, 3, 40, 1, 16, 64, torch.float32, False, None, id="T63-H3G1-P40-noD"),
    pytest.param(1, 64, 3, 64, 3, 32, 16, torch.bfloat16, True, (3, 64), id="T64-H3G3-bf16-Dhp"),
    pytest.param(2, 65, 4, 128, 2, 64, 64, torch.float32, True, (4,), id="T65-H4G2-P128-h0"),
    pytest.param(1, 500, 3, 64, 1, 128, 128, torch.float32, True, (3,), id="T500-H3-N128-h0"),
    pytest.param(2, 500, 1, 16, 1, 16, 256, torch.bfloat16, False, (1,), id="T500-H1-bf16-c256"),
]


@pytest.mark.parametrize("b, T, H, P, G, N, chunk, dtype, h0, D_shape", CASES)
def test_matches_naive(assert_close, b, T, H, P, G, N, chunk, dtype, h0, D_shape):
    inputs = mamba2_inputs(b, T, H, P, G, N, dtype, h0, D_shape)
    ref = run(naive_recurrent_mamba2, inputs, dt_softplus=True)
    tri = run(mamba_chunk_scan_combined, inputs, chunk_size=chunk, dt_softplus=True)
    assert tri["y"].dtype == dtype and tri["S"].dtype == torch.float32
    for name in ref:
        assert_close(name, ref[name], tri[name], TOL[dtype])


def test_gate_and_dt_limit(assert_close):
    x = mamba2_inputs(2, 70, 2, 16, 1, 8, torch.float32, h0=False, D_shape=(2,))
    z = torch.randn(2, 70, 2, 16)
    kw = {"z": z, "dt_softplus": True, "dt_limit": (0.01, 0.5)}
    ref = naive_recurrent_mamba2(**x, **kw)
    y = mamba_chunk_scan_combined(**x, chunk_size=32, **kw)
    assert_close("y", ref, y, 1e-5)
    for unused in ("z", "dt_limit"):
        plain = naive_recurrent_mamba2(**x, **{n: v for n, v in kw.items() if n != unused})
        assert rel_rms(plain, ref) > 0.01, f"{unused} must change the output"


def test_split_sequence_carries_state(assert_close):
    x = mamba2_inputs(1, 90, 2, 16, 1, 8, torch.float32, h0=True, D_shape=(2,))
    y, S = mamba_chunk_scan_combined(**x, chunk_size=32, return_final_states=True)
    per_token = ("x", "dt", "B", "C")
    first = x | {n: x[n][:, :50] for n in per_token}
    y1, S1 = mamba_chunk_scan_combined(**first, chunk_size=32, return_final_states=True)
    rest = x | {n: x[n][:, 50:] for n in per_token} | {"initial_states": S1}
    y2, S2 = mamba_chunk_scan_combined(**rest, chunk_size=32, return_final_states=True)
    assert_close("y", y, torch.cat([y1, y2], dim=1), 1e-5)
    assert_close("S", S, S2, 1e-5)


def test_returns_only_y_by_default(assert_close):
    x = mamba2_inputs(1, 5, 1, 8, 1, 4, torch.float32, h0=False, D_shape=None)
    y = mamba_chunk_scan_combined(**x, chunk_size=4)
    assert isinstance(y, torch.Tensor)
    assert_close("y", naive_recurrent_mamba2(**x), y, 1e-5)
