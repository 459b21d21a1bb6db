"""Artificial Hippocampus Networks: constant-size long-term memory for transformers causal LMs.

Names are imported on first use (PEP 562), so `import ahn` and `ahn --help` stay light: torch
and transformers load only when a function that needs them is touched.
"""

from __future__ import annotations

import importlib

# public name -> the module defining it
_EXPORTS = {
    "AHNConfig": "ahn.config",
    "MEMORY_TYPES": "ahn.config",
    "MODES": "ahn.config",
    "compile": "ahn.compiled",
    "is_compiled": "ahn.compiled",
    "export_official": "ahn.checkpoint",
    "load": "ahn.checkpoint",
    "save": "ahn.checkpoint",
    "augment": "ahn.integration.augment",
    "is_augmented": "ahn.integration.augment",
    "mode": "ahn.integration.augment",
    "new_cache": "ahn.integration.augment",
    "set_mode": "ahn.integration.augment",
    "set_window": "ahn.integration.augment",
    "set_store": "ahn.integration.augment",
    "trainable_parameters": "ahn.integration.augment",
    "unaugment": "ahn.integration.augment",
    "window": "ahn.integration.augment",
    "AHNCache": "ahn.integration.cache",
    "cache_bytes": "ahn.integration.cache",
    "fetch_base": "ahn.bases",
    "load_memory": "ahn.memfile",
    "read": "ahn.memfile",
    "save_memory": "ahn.memfile",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ahn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
