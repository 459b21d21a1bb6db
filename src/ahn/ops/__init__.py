"""Memory kernels: pure tensor functions, layout `[B, T, H, D]`, state `[B, H, K, V]` in fp32.

Names and keywords follow `fla.ops` and `mamba_ssm`, so these are drop-in replacements; on CUDA
they dispatch to those packages when installed, on CPU they run the torch code here.
"""

from ahn.ops.delta_rule import (
    chunk_delta_rule,
    fused_recurrent_delta_rule,
    naive_recurrent_delta_rule,
)
from ahn.ops.gated_delta_rule import (
    chunk_gated_delta_rule,
    delta_rule_step,
    fused_recurrent_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)
from ahn.ops.mamba2 import mamba_chunk_scan_combined, naive_recurrent_mamba2
from ahn.ops.utils import l2norm

__all__ = [
    "chunk_delta_rule",
    "chunk_gated_delta_rule",
    "delta_rule_step",
    "fused_recurrent_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "l2norm",
    "mamba_chunk_scan_combined",
    "naive_recurrent_delta_rule",
    "naive_recurrent_gated_delta_rule",
    "naive_recurrent_mamba2",
]
