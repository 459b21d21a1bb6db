"""Memory modules: own their parameters, delegate the recurrence to `ahn.ops`."""

from torch import nn

from ahn.memory.base import GroupLinear, MemoryModule
from ahn.memory.deltanet import DeltaNet
from ahn.memory.gated_deltanet import GatedDeltaNet
from ahn.memory.mamba2 import Mamba2


class AHN(nn.Module):
    """The container added to a decoder layer as `layer.ahn`; `fn` is the memory rule, so the
    parameter names match the official checkpoints (`model.layers.{i}.ahn.fn.*`)."""

    def __init__(self, fn: MemoryModule) -> None:
        super().__init__()
        self.fn = fn


__all__ = [
    "AHN",
    "DeltaNet",
    "GatedDeltaNet",
    "GroupLinear",
    "Mamba2",
    "MemoryModule",
]
