"""Artificial Hippocampus Networks: constant-size long-term memory for transformers causal LMs."""

from ahn.checkpoint import load, save
from ahn.config import MEMORY_TYPES, MODES, AHNConfig
from ahn.integration.augment import (
    augment,
    mode,
    new_cache,
    set_mode,
    trainable_parameters,
    window,
)
from ahn.integration.cache import AHNCache, cache_bytes

__all__ = [
    "AHNCache",
    "AHNConfig",
    "MEMORY_TYPES",
    "MODES",
    "augment",
    "cache_bytes",
    "load",
    "mode",
    "new_cache",
    "save",
    "set_mode",
    "trainable_parameters",
    "window",
]
__version__ = "0.1.0"
