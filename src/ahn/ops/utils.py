"""Shared helpers of the memory kernels: input validation, dtype handling, fast-path lookup."""

from __future__ import annotations

import functools
import importlib
import inspect

import torch
import torch.nn.functional as F

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L2-normalise the last dimension as fla does: `x / sqrt(sum(x^2) + eps)`."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`l2norm` computed in float32, returned in `x`'s dtype."""
    return cast(l2norm(fp32(x), eps), x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension, computed in float32, returned in `x`'s dtype."""
    return cast(F.rms_norm(fp32(x), (x.shape[-1],), eps=eps) * fp32(weight), x.dtype)


def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in dtype, without a dispatch when it already is (decoding is bound by op count)."""
    return x if x.dtype == dtype else x.to(dtype)


def fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, without a dispatch when it already is."""
    return cast(x, torch.float32)


def check_tensor(name: str, x: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    """Raise `ValueError` unless `x` is a floating tensor of rank `len(shape)` matching `shape`.

    Entries of `shape` that are `None` are not checked.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} has dtype {x.dtype}; valid: float32, bfloat16, float16")
    if x.dim() != len(shape) or any(
        s is not None and s != d for s, d in zip(shape, x.shape, strict=True)
    ):
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {want}")


def check_state(name: str, state: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    """Raise `ValueError` unless `state` is None or a float32 tensor of exactly `shape`."""
    if state is None:
        return
    check_tensor(name, state, shape)
    if state.dtype != torch.float32:
        raise ValueError(f"{name} must be float32 (states are kept in fp32), got {state.dtype}")


def check_chunk_size(chunk_size: int) -> None:
    """Raise `ValueError` unless `chunk_size` is a positive int."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def check_delta_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor | None,
    initial_state: torch.Tensor | None,
) -> None:
    """Validate the inputs of a (gated) delta rule.

    Shapes: q, k `[B, T, H, K]`, v `[B, T, H, V]`, g and beta `[B, T, H]`,
    initial_state `[B, H, K, V]` float32.
    """
    check_tensor("q", q, (None, None, None, None))
    B, T, H, K = q.shape
    check_tensor("k", k, (B, T, H, K))
    check_tensor("v", v, (B, T, H, None))
    if g is not None:
        check_tensor("g", g, (B, T, H))
    if beta is not None:
        check_tensor("beta", beta, (B, T, H))
    check_state("initial_state", initial_state, (B, H, K, v.shape[-1]))


def fast_path(module: str, name: str, *tensors: torch.Tensor | None):
    """The function `module.name` when every given tensor is on CUDA and the module imports.

    Returns None on CPU (never dispatched there) or when the optional package is missing.
    """
    if not all(t is None or t.is_cuda for t in tensors):
        return None
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def dispatch(module: str, on: tuple[str, ...], local: tuple[str, ...] = ()):
    """Decorator of a kernel with fla's / mamba_ssm's signature: when the tensors named `on` are
    on CUDA and `module` imports, `module.<the kernel's name>` runs instead, given every argument
    by keyword; otherwise the torch code does (always on CPU). Arguments named in `local` are
    ours, not the package's: when one is set (truthy), the torch code runs."""

    def decorate(fn):
        signature = inspect.signature(fn)
        positions = [list(signature.parameters).index(name) for name in on]

        @functools.wraps(fn)
        def kernel(*args, **kwargs):
            tensors = [
                args[i] if i < len(args) else kwargs.get(n)
                for i, n in zip(positions, on, strict=True)
            ]
            fast = fast_path(module, fn.__name__, *tensors)
            if fast is None:
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if any(bound.arguments.pop(name) for name in local):
                return fn(*args, **kwargs)
            return fast(**bound.arguments)

        kernel.fast_module, kernel.local_arguments = module, local
        return kernel

    return decorate


def decay_mask(gc: torch.Tensor, strict: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """`exp(gc_t - gc_j)` where `j < t` (strict) or `j <= t`, else 0: `[..., C]` -> `[..., C, C]`
    (written to `out` when given).

    gc is a cumulative log-decay inside a chunk; differences are taken before `exp`, so nothing
    overflows however strong the decay.
    """
    E = torch.sub(gc[..., :, None], gc[..., None, :], out=out)
    return E.masked_fill_(_dropped(gc.shape[-1], strict, gc.device), float("-inf")).exp_()


@functools.lru_cache(maxsize=16)
def _dropped(C: int, strict: bool, device: torch.device) -> torch.Tensor:
    """`[C, C]` bool, True where `decay_mask` is 0: j > t, or j >= t when strict."""
    return torch.ones(C, C, dtype=torch.bool, device=device).triu(1 if not strict else 0)


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """`[B, T, H, ...]` -> `[N, B * H, C, ...]`, zero-padded at the end to `N * C` tokens.

    One copy (two when T is not a multiple of the chunk size).
    """
    B, T, H = x.shape[:3]
    N = -(-T // chunk_size)
    if N * chunk_size != T:
        x = torch.cat([x, x.new_zeros(B, N * chunk_size - T, *x.shape[2:])], dim=1)
    x = x.unflatten(1, (N, chunk_size)).movedim(3, 0).movedim(2, 0)  # [N, H, B, C, ...]
    return x.transpose(1, 2).contiguous().flatten(1, 2)


def from_chunks(x: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """Inverse of `to_chunks`: `[N, B * H, C, ...]` -> `[B, T, H, ...]` (contiguous), unpadded."""
    N, BH, C = x.shape[:3]
    x = x.unflatten(1, (B, BH // B)).permute(1, 0, 3, 2, *range(4, x.dim() + 1))  # [B,N,C,H,.]
    return x.reshape(B, N * C, *x.shape[3:])[:, :T].contiguous()
