"""Token-by-token gated delta rule: the decode path (cheap at T = 1, no chunk padding)."""

from __future__ import annotations

import torch

from ahn.ops.utils import check_delta_inputs, dispatch, fp32, l2norm


def recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    use_qk_l2norm_in_kernel: bool,
    output_write_norm: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Validated inputs in, `(o, final_state)` out, plus the write norms `||u_t||` `[B, T, H]`
    when `output_write_norm`; `g=None` means no decay (the delta rule).

    Runs in fp32 with batched matmuls over `B * H`; differentiable by autograd.
    """
    B, T, H, K = q.shape
    V, dtype = v.shape[-1], v.dtype
    if T == 1:
        args = (initial_state, output_final_state, use_qk_l2norm_in_kernel, output_write_norm)
        return _one_step(q, k, v, g, beta, scale, *args)
    q, k, v, beta = (x.float().transpose(1, 2) for x in (q, k, v, beta))  # [B, H, T, ...]
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    q, k, v = (x.reshape(B * H, T, -1) for x in (q, k, v))
    beta = beta.reshape(B * H, T, 1, 1)
    decay = q.new_ones(B * H, T, 1, 1) if g is None else g.float().transpose(1, 2).exp()
    decay = decay.reshape(B * H, T, 1, 1)
    S = q.new_zeros(B * H, K, V) if initial_state is None else initial_state.reshape(B * H, K, V)
    o, u = [], []
    # unbind, not x[:, t]: the backward of each index would zero-fill a full-size gradient
    steps = (x.unbind(1) for x in (q[:, :, None], k[:, :, None], v[:, :, None], beta, decay))
    for q_t, k_t, v_t, beta_t, decay_t in zip(*steps, strict=True):  # [BH, 1, K or V]
        S = S * decay_t
        v_new = beta_t * (v_t - k_t @ S)  # [BH, 1, V]
        S = S + k_t.transpose(1, 2) @ v_new
        o.append(q_t @ S)
        u.append(v_new)
    o = (scale * torch.cat(o, dim=1)).reshape(B, H, T, V).transpose(1, 2).to(dtype)
    out = o, (S.reshape(B, H, K, V) if output_final_state else None)
    if not output_write_norm:
        return out
    norms = torch.linalg.vector_norm(torch.cat(u, dim=1).detach(), dim=-1)  # [BH, T]
    return *out, norms.reshape(B, H, T).transpose(1, 2)


def delta_rule_step(q, k, v, beta, decay, state):
    """One token of the (gated) delta rule, the one T = 1 step of the library (the kernels and
    the memory modules' decode step use it): rows of N = B*H heads, all float32.

    q, k: `[N, 1, K]` (normalised by the caller); v: `[N, 1, V]`; beta: `[N]`; decay: `[N]`
    (`exp(g)`) or None (plain delta rule); state: `[N, K, V]` or None (zeros).
    Returns the unscaled read `S^T q` `[N, 1, V]`, the new state `[N, K, V]` and the written
    value `u = beta (v - decay S^T k)` `[N, 1, V]`.
    """
    N, _, K = k.shape
    S = k.new_zeros(N, K, v.shape[-1]) if state is None else state
    if decay is not None:
        S = S * decay.reshape(N, 1, 1)
    v_new = torch.baddbmm(v, k, S, alpha=-1)  # v - k^T S
    u = v_new.mul_(beta.reshape(N, 1, 1))
    S = torch.baddbmm(S, k.mT, u)
    return torch.bmm(q, S), S, u


def _one_step(q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm,
              write_norm):  # fmt: skip
    """The T = 1 case in as few ops as possible (decoding calls it once per layer and token):
    `[B*H, 1, D]` rows against the `[B*H, K, V]` state, q and k normalised in one pass."""
    dtype = v.dtype
    B, _, H, K = k.shape
    V = v.shape[-1]
    qk = fp32(torch.stack([q[:, 0], k[:, 0]], dim=2)).flatten(0, 1)  # [B*H, 2, K]
    if use_qk_l2norm:
        qk = l2norm(qk)
    q, k = qk.split(1, dim=1)  # [B*H, 1, K]
    state = None if initial_state is None else initial_state.reshape(B * H, K, V)
    decay = None if g is None else fp32(g).exp()
    r, S, u = delta_rule_step(q, k, fp32(v).reshape(B * H, 1, V), fp32(beta), decay, state)
    o = r.mul_(scale).view(B, 1, H, V)
    S = S.view(B, H, K, V) if output_final_state else None
    o = o if o.dtype == dtype else o.to(dtype)
    if not write_norm:
        return o, S
    return o, S, torch.linalg.vector_norm(u.detach(), dim=-1).view(B, 1, H)


@dispatch("fla.ops.gated_delta_rule", on=("q", "k", "v"), local=("output_write_norm",))
def fused_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    output_write_norm: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Gated delta rule token by token (fla's `fused_recurrent_gated_delta_rule`).

    Per head, with state S `[K, V]`:
        S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - exp(g_t) S_{t-1}^T k_t)^T
        o_t = scale * S_t^T q_t

    Args:
        q, k: `[B, T, H, K]`.
        v: `[B, T, H, V]`.
        g: `[B, T, H]` log-decay (<= 0).
        beta: `[B, T, H]`, default ones.
        scale: query scale, default `K ** -0.5`.
        initial_state: `[B, H, K, V]` float32, default zeros.
        output_final_state: also return the state after the last token.
        use_qk_l2norm_in_kernel: L2-normalise q and k per head inside (gradients included).
        output_write_norm: also return `||u_t||` `[B, T, H]` (see `chunk_gated_delta_rule`).

    Returns:
        o `[B, T, H, V]` in the dtype of v, the final state `[B, H, K, V]` float32 or None, and
        the write norms when asked. On CUDA with `fla` installed (and no write norms asked),
        fla's kernel computes it.
    """
    beta = torch.ones_like(q[..., 0]) if beta is None else beta
    check_delta_inputs(q, k, v, g, beta, initial_state)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    args = (initial_state, output_final_state, use_qk_l2norm_in_kernel, output_write_norm)
    return recurrent_gated_delta_rule(q, k, v, g, beta, scale, *args)
