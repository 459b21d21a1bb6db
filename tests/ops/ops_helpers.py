"""Helpers of the kernel tests: relative-RMS comparison, input makers, gradient runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rel_rms(ref: torch.Tensor, tri: torch.Tensor) -> float:
    """RMS of the difference divided by the RMS of the reference (fla's `get_err_ratio`)."""
    ref, tri = ref.detach().double(), tri.detach().double()
    return ((ref - tri).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def check_close(name: str, ref: torch.Tensor, tri: torch.Tensor, ratio: float) -> None:
    """Assert that `tri` matches `ref` in shape, finiteness and relative RMS error <= ratio."""
    assert ref.shape == tri.shape, f"{name}: shape {tuple(tri.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(tri).all(), f"{name}: non-finite values"
    err = rel_rms(ref, tri)
    assert err <= ratio, f"{name}: relative RMS error {err:.2e} > {ratio:.0e}"


def delta_inputs(B, T, H, K, V, dtype, h0, g_scale=1.0, seed=42):
    """Random (gated) delta rule inputs: dict of q, k, v, g, beta, initial_state."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen)
    return {
        "q": rand(B, T, H, K).to(dtype),
        "k": rand(B, T, H, K).to(dtype),
        "v": rand(B, T, H, V).to(dtype),
        "g": (g_scale * F.logsigmoid(rand(B, T, H) + 2)).to(dtype),
        "beta": torch.sigmoid(rand(B, T, H)).to(dtype),
        "initial_state": rand(B, H, K, V) if h0 else None,
    }


def outputs_and_grads(fn, inputs: dict, seed: int = 7, **kwargs) -> dict:
    """Run `fn(**inputs, output_final_state=True, **kwargs)` and backprop random cotangents.

    Returns a dict with `o`, `S` (final state) and `d<name>` for every input tensor.
    """
    leaves = {n: x.clone().requires_grad_() for n, x in inputs.items() if x is not None}
    args = {n: leaves.get(n) for n in inputs}
    o, S = fn(**args, output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=gen).to(o.dtype)
    dS = torch.randn(S.shape, generator=gen)
    ((o * do).float().sum() + (S * dS).sum()).backward()
    return {"o": o, "S": S} | {f"d{n}": x.grad for n, x in leaves.items()}
