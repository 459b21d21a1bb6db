"""The one registry of memory rules: everything that names a rule derives from `RULES`.

Adding a rule: a module class in `ahn.memory` and one entry here (plus tests). Importing this
file loads no torch: the module class is imported when first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryRule:
    """A memory rule: our name, the official checkpoints' `_ahn_implementation`, the module
    class (`"module:Class"`) and its parameter count per layer from (hidden, heads H, head D)."""

    name: str
    official: str
    module: str
    parameters: Callable[[int, int, int], int]

    def module_class(self):
        module, cls = self.module.split(":")
        return getattr(importlib.import_module(module), cls)


RULES: dict[str, MemoryRule] = {
    rule.name: rule
    for rule in (
        MemoryRule(
            "gated_deltanet",
            "GatedDeltaNet",
            "ahn.memory.gated_deltanet:GatedDeltaNet",
            # b/a/g_proj [H, hidden]; A_log, D, dt_bias [H]; o_norm [D]; o_proj [H, D, D]
            lambda hidden, H, D: 3 * H * hidden + 3 * H + D + H * D * D,
        ),
        MemoryRule(
            "deltanet",
            "DeltaNet",
            "ahn.memory.deltanet:DeltaNet",
            # b_proj, g_proj [H, hidden]; o_norm [D]; o_proj [H, D, D]
            lambda hidden, H, D: 2 * H * hidden + D + H * D * D,
        ),
        MemoryRule(
            "mamba2",
            "Mamba2",
            "ahn.memory.mamba2:Mamba2",
            # dt_proj, g_proj weight + bias; A_log, dt_bias [H]; norm [H * D]; o_proj [H, D, D]
            lambda hidden, H, D: 2 * (H * hidden + H) + 2 * H + H * D + H * D * D,
        ),
    )
}
MEMORY_TYPES = tuple(RULES)
OFFICIAL_NAMES = {rule.official: rule.name for rule in RULES.values()}


def rule(name: str) -> MemoryRule:
    """The rule called `name`; a clear error naming the valid ones otherwise."""
    if name not in RULES:
        raise ValueError(f"memory={name!r} is not supported; use one of {MEMORY_TYPES}")
    return RULES[name]
