"""Pieces shared by the memory modules: the per-head output projection and initialisers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ahn.ops import delta_rule_step
from ahn.ops.utils import cast, fp32, l2norm


class GroupLinear(nn.Module):
    """Block-diagonal linear map, one `[D, D]` block per head: `out_h = in_h @ weight[h]`.

    Zero-initialised so that a freshly added memory contributes exactly nothing.
    """

    def __init__(self, num_heads: int, head_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.zeros(num_heads, head_dim, head_dim, device=device, dtype=dtype)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, T, H, D] -> [B, T, H, D]
        return torch.matmul(x.transpose(1, 2), cast(self.weight, x.dtype)).transpose(1, 2)


def init_A_log(num_heads: int, low: float, high: float, device=None) -> torch.Tensor:
    """Mamba-style `A_log = log(A)`, `A ~ U(low, high)`."""
    A = torch.empty(num_heads, dtype=torch.float32, device=device).uniform_(low, high)
    return torch.log(A)


def init_dt_bias(num_heads: int, device=None, dt_min=1e-3, dt_max=0.1, floor=1e-4) -> torch.Tensor:
    """Mamba-style `dt_bias = softplus^-1(dt)`, `dt` log-uniform in `[dt_min, dt_max]`."""
    u = torch.rand(num_heads, dtype=torch.float32, device=device)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class MemoryModule(nn.Module):
    """Interface of a memory rule: per-token projections, a recurrence over evicted tokens, a
    readout.

    Subclasses define `num_gates`, `input_projections` (the `nn.Linear`s applied to the layer
    input, in order: the `num_gates` write gates then the output gate), `gates`, `recur` and
    `readout`. Write gates equal to zero must leave the state unchanged: the integration zeroes
    them for tokens that must not be absorbed (padding, attention sinks).
    """

    num_gates: int

    def input_projections(self) -> list[nn.Linear]:
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All per-token projections in one matmul.

        x: [B, T, hidden] -> (write-gate logits [B, T, H, num_gates], output gate [B, T, H]),
        float32. `gates` turns the logits into write gates when the token leaves the window.
        """
        linears = self.input_projections()
        params = [p for lin in linears for p in (lin.weight, lin.bias) if p is not None]
        weight_t, bias = cached(self, "_fused_projection", params, lambda: _stack_linears(linears))
        if weight_t.dtype != x.dtype:
            weight_t, bias = weight_t.to(x.dtype), None if bias is None else bias.to(x.dtype)
        x2 = x.reshape(-1, x.shape[-1])  # [B*T, hidden]
        z = torch.mm(x2, weight_t) if bias is None else torch.addmm(bias, x2, weight_t)
        z = fp32(z).view(*x.shape[:-1], -1, len(linears))  # [B, T, H, num_gates + 1]
        return z[..., :-1], z[..., -1]

    def gates(self, z: torch.Tensor) -> torch.Tensor:
        """Write-gate logits [B, T, H, num_gates] -> write gates [B, T, H, num_gates]."""
        raise NotImplementedError

    def recur(self, q, k, v, gates, initial_state, surprise=False):
        """Absorb `k, v` ([B, T, H, D]) in order; read with `q` after each step.

        Returns `(r [B, T, H, D], final_state [B, H, D, D] float32)`, and with `surprise` also
        each token's surprise `[B, T, H]` float32 (no gradient): how much of its value the
        state before it could not predict, weighted by its write strength (SPEC §2b).
        """
        raise NotImplementedError

    def readout(self, r: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """r: [B, T, H, D] read of the state, gate: [B, T, H] raw output gate -> [B, T, H, D]."""
        raise NotImplementedError

    def step(self, q, k, v, z, state, gate, surprise=False):
        """One decode step: absorb one evicted token per row, read with one query.

        q: [B, H, 1, D]; k, v: [B, Hkv, 1, D] (H a multiple of Hkv); z: [B, 1, H, num_gates]
        write-gate logits of the evicted token; state: [B, H, D, D] float32 or None; gate:
        [B, 1, H] raw output gate. Returns `(out [B, 1, H, D], state)` (and the surprise
        `[B, 1, H]` when asked); the same function as `recur` + `readout`, which subclasses
        may compute in fewer ops.
        """
        groups = q.shape[1] // k.shape[1]
        k, v = (x.repeat_interleave(groups, dim=1).transpose(1, 2) for x in (k, v))
        r, state, *s = self.recur(q.transpose(1, 2), k, v, self.gates(z), state, surprise)
        return self.readout(r, gate), state, *s

    def decode(self, x, q, k, v, z, state):
        """`project` of the new token's input and `step` with the token it evicts, in one call
        (decoding with a full window, where `ahn.compile` makes it one graph).

        x: [B, 1, hidden]; the rest as `step`. Returns `(out [B, 1, H, D], state, the new
        token's write-gate logits [B, 1, H, num_gates])`.
        """
        z_new, gate = self.project(x)
        out, state = self.step(q, k, v, z, state, gate)
        return out, state, z_new


class HeadNormReadout:
    """DeltaNet / GatedDeltaNet readout: per-head RMSNorm of the read, times `o_norm.weight`,
    times a SiLU output gate (one scalar per head), then the per-head `o_proj`.

    The gate commutes with `o_proj` and `o_norm.weight` folds into it (`diag(w) W_h`), so the
    readout is one per-row scale (the norm and the gate together) and one matmul.
    """

    def readout(self, r, gate):
        W = cached(self, "_folded_o_proj", (self.o_norm.weight, self.o_proj.weight), self._fold)
        r32, D = fp32(r), r.shape[-1]
        # silu(gate) / RMS(r) per row [B, T, H, 1]: one pass over r (prefill is bandwidth-bound)
        ms = torch.linalg.vector_norm(r32, dim=-1, keepdim=True).square() / D
        s = torch.rsqrt(ms + self.norm_eps) * F.silu(gate).unsqueeze(-1)
        o = cast(r32 * s, r.dtype)
        return torch.matmul(o.transpose(1, 2), cast(W, r.dtype)).transpose(1, 2)  # [B, T, H, D]

    def _fold(self) -> torch.Tensor:
        return self.o_norm.weight[:, None] * self.o_proj.weight  # [H, D, D]

    def delta_step(self, q, k, v, beta, decay, state, gate, surprise=False):
        """`step` of a (gated) delta-rule memory in few ops (decoding runs it once per layer
        and token, where the op count sets the time): beta, decay `[B, 1, H]` (decay `exp(g)`,
        None for the delta rule); the other arguments and the result as in
        `MemoryModule.step`, the surprise being the norm of the written value."""
        (B, H, _, D), Hkv, dtype = q.shape, k.shape[1], v.dtype
        N = B * H
        # [B, Hkv, H / Hkv, 3, D]: each query head with its group's key and value, one copy
        kv = torch.cat([k, v], dim=2)[:, :, None].expand(B, Hkv, H // Hkv, 2, D)
        qkv = fp32(torch.cat([q.reshape(B, Hkv, H // Hkv, 1, D), kv], dim=3)).view(N, 3, D)
        qk = l2norm(qkv[:, :2])
        S = None if state is None else state.view(N, D, D)
        # r [N, 1, D]: the read without the query scale D^-1/2
        r, S, u = delta_rule_step(qk[:, :1], qk[:, 1:], qkv[:, 2:], beta, decay, S)
        W = cached(self, "_folded_o_proj", (self.o_norm.weight, self.o_proj.weight), self._fold)
        if dtype == torch.float32:  # RMSNorm(r / sqrt(D), eps) == RMSNorm(r, eps * D)
            o = F.rms_norm(r, (D,), eps=self.norm_eps * D)
        else:  # the read rounded to the model's dtype first, as `recur` + `readout` do
            o = F.rms_norm(fp32(cast(r.mul_(D**-0.5), dtype)), (D,), eps=self.norm_eps)
        o = cast(o * F.silu(gate).view(N, 1, 1), dtype)  # the gate before o_proj, as `readout`
        o = torch.bmm(o.view(B, H, D).transpose(0, 1), cast(W, dtype))  # [H, B, D]
        out = o.transpose(0, 1).unsqueeze(1), S.view(B, H, D, D)  # [B, 1, H, D]
        if not surprise:
            return out
        return *out, torch.linalg.vector_norm(u.detach(), dim=-1).view(B, 1, H)


def cached(module: nn.Module, name: str, params, build):
    """`build()`, computed once per version of `params` when no gradient flows through them.

    Decoding calls a memory module once per token and layer, where re-deriving the same
    tensors from the parameters (a concatenation, an exponential) costs more than using them.
    With gradients enabled for `params` it is rebuilt at every call (autograd sees it).
    """
    if torch.compiler.is_compiling() or (
        torch.is_grad_enabled() and any(p.requires_grad for p in params)
    ):
        return build()  # a compiled graph fuses the build into its own code
    key = [(p.data_ptr(), p._version, p.dtype, p.device) for p in params]
    hit = module.__dict__.get(name)
    if hit is None or hit[0] != key:
        hit = module.__dict__[name] = (key, build())
    return hit[1]


def _stack_linears(linears: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weights `[hidden, H * n]` (transposed) and biases `[H * n]` of n per-head linear
    maps, interleaved per head: column `h * n + j` is head h of map j."""
    weight = torch.stack([lin.weight for lin in linears], dim=1).flatten(0, 1).t()
    bias = None
    if linears[0].bias is not None:
        bias = torch.stack([lin.bias for lin in linears], dim=1).flatten()
    return weight, bias


# Below this many tokens the recurrent form is cheaper than the chunked one.
RECURRENT_MAX_T = 64


def delta_rule(chunk_kernel, recurrent_kernel, q, k, v, beta, initial_state, surprise, **decay):
    """Run a delta-rule kernel (recurrent for short inputs, chunked otherwise) with in-kernel
    q/k L2 normalisation; returns `(r [B, T, H, D], final_state [B, H, D, D])`, and with
    `surprise` the norms of the written values `[B, T, H]`."""
    kernel = recurrent_kernel if q.shape[1] <= RECURRENT_MAX_T else chunk_kernel
    return kernel(
        q=q,
        k=k,
        v=v,
        beta=cast(beta, q.dtype),
        initial_state=initial_state,
        output_final_state=True,
        use_qk_l2norm_in_kernel=True,
        output_write_norm=surprise,
        **decay,
    )
