"""The one-token decode step of each memory == its general recurrence + readout."""

import pytest
import torch

from ahn.memory import DeltaNet, GatedDeltaNet
from ahn.memory.base import MemoryModule


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kv_heads", [1, 3], ids=["gqa", "mha"])
@pytest.mark.parametrize("state", [True, False], ids=["state", "no-state"])
@pytest.mark.parametrize("cls", [GatedDeltaNet, DeltaNet], ids=lambda c: c.__name__)
def test_step_equals_recur_and_readout(cls, state, kv_heads, dtype):
    B, H, D, hidden = 2, 3, 16, 24
    gen = torch.Generator().manual_seed(0)
    memory = cls(hidden, H, D)
    with torch.no_grad():
        for p in memory.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(dtype)
    q, k, v = rand(B, H, 1, D), rand(B, kv_heads, 1, D), rand(B, kv_heads, 1, D)
    z, gate = rand(B, 1, H, memory.num_gates), rand(B, 1, H)
    S = torch.randn(B, H, D, D, generator=gen) if state else None
    with torch.no_grad():
        out, S1 = memory.step(q, k, v, z, S, gate)
        ref, S1_ref = MemoryModule.step(memory, q, k, v, z, S, gate)
    tol = {} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    assert out.shape == (B, 1, H, D) and out.dtype == dtype
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(S1, S1_ref)
