"""`ahn.compile(model)`: the memory's per-op-bound pieces through `torch.compile`.

A memory module's decode call (the new token's gate projection and the step with the token it
evicts), step, gates and readout are a few dozen small fp32 ops per layer and token; eager
PyTorch runs each as its own kernel. Inductor fuses them (C++/OpenMP on CPU with the machine's
compiler, Triton on CUDA): at SmolLM2's shape the decode call alone took 163 instead of 288 us,
though whole decoded tokens of the 30-layer model gained less than the machine's noise
(docs/benchmarks.md). Left eager: the gate projection on its own (one matmul; compiled, the
call overhead exceeded what fusion saves) and the chunk kernels (written around reused `out=`
buffers, which the compiler does not take: compiled as they are they ran 1.7x slower). Eager
stays the default and the reference; tests hold the compiled pieces equal to it.

The pieces are compiled once per function, not per layer (the 30 layers of a model share one
graph), with the token dimension dynamic: a prompt of another length, a chunk of another size
or the next decoded token reuses what was compiled (`tests/integration/test_compile.py` counts).
"""

from __future__ import annotations

import importlib.util
import sys

import torch
from torch import nn

from ahn.integration.augment import runtime_of

# The MemoryModule methods compiled -> `dynamic`: the token dimension of gates and readout varies
# call to call; the decode step always sees one token and rarely another batch size
# (`dynamic=None`: specialised code, made dynamic at the first recompilation).
PIECES = {"gates": True, "readout": True, "step": None, "decode": None}


def compile(model: nn.Module, backend: str = "inductor") -> nn.Module:  # noqa: A001
    """Compile the memory pieces of an augmented `model` in place and return it; calling it
    again does nothing. Without a compiler for the model's device it says so in one line on
    stderr and the model stays eager (the same results, slower).

    Compilation happens at the first call of each piece (seconds; inductor keeps what it built
    on disk, so a later process mostly reuses it).
    """
    rt = runtime_of(model)
    if rt.compiled:
        return model
    device = next(model.parameters()).device
    missing = missing_compiler(device) if backend == "inductor" else None
    if missing:
        print(f"ahn.compile: {missing}; running eager (same results, slower)", file=sys.stderr)
        return model
    for layer in rt.decoder.layers:
        memory = getattr(getattr(layer, "ahn", None), "fn", None)
        if memory is None:
            continue
        for name, dynamic in PIECES.items():
            piece = getattr(type(memory), name).__get__(memory)  # the class's, never compiled
            setattr(memory, name, torch.compile(piece, dynamic=dynamic, backend=backend))
    rt.compiled = True
    return model


def is_compiled(model: nn.Module) -> bool:
    return runtime_of(model).compiled


def missing_compiler(device: torch.device) -> str | None:
    """Why inductor cannot compile for `device`, or None when it can."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "inductor needs Triton on CUDA (pip install triton)"
        return None
    if device.type != "cpu":
        return f"torch.compile is not set up here for device {device.type!r}"
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception:  # inductor's own search failed: no usable C++ compiler on PATH / CXX
        return "no C++ compiler found for inductor on CPU (install g++, or set CXX)"
    return None
