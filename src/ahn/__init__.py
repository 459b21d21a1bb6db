"""Artificial Hippocampus Networks: constant-size long-term memory for transformers causal LMs."""

from ahn.config import MEMORY_TYPES, MODES, AHNConfig

__all__ = ["AHNConfig", "MEMORY_TYPES", "MODES"]
__version__ = "0.1.0"
