"""The one table of dtype names the CLI and the configs accept, and "auto"'s choice."""

from __future__ import annotations

import warnings

DTYPES = ("float32", "bfloat16", "float16")
CHOICES = ("auto", *DTYPES)


def check(name: str, allowed: tuple[str, ...] = CHOICES) -> str:
    if name not in allowed:
        raise ValueError(f"dtype={name!r} is not supported; use one of {allowed}")
    return name


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX-512 BF16 or AMX). Without it,
    PyTorch's bfloat16 matmul on CPU runs a slow fallback (measured 17 vs 123 GFLOP/s fp32 on
    an AVX2 EPYC): fp32 is then the fast path."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve(name: str, device: str = "cpu"):
    """The `torch.dtype` for `name`; "auto" is bfloat16 on CUDA and on CPUs with native bfloat16
    matmuls, else float32. An explicit bfloat16 on a CPU without it warns (it is slower)."""
    import torch

    check(name)
    kind = str(device).split(":")[0]
    if name == "auto":
        fast = kind == "cuda" or (kind == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if fast else torch.float32
    if name == "bfloat16" and kind == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "this CPU has no native bfloat16 matmul (AVX-512 BF16 / AMX): bfloat16 runs several "
            "times slower than float32 here; --dtype auto picks float32 on such CPUs",
            stacklevel=2,
        )
    return getattr(torch, name)
