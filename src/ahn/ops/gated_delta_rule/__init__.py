from ahn.ops.gated_delta_rule.chunk import chunk_gated_delta_rule
from ahn.ops.gated_delta_rule.fused_recurrent import (
    delta_rule_step,
    fused_recurrent_gated_delta_rule,
)
from ahn.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

__all__ = [
    "delta_rule_step",
    "chunk_gated_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "naive_recurrent_gated_delta_rule",
]
