"""`Runtime`: what an augmented model carries besides its parameters (`model._ahn_runtime`),
shared by `augment` and the hooks and wrappers it installs (all of which import it from here)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ahn.config import AHNConfig
from ahn.integration.cache import AHNCache, Choice, Lossless, ReadsLossless
from ahn.integration.positions import Rerotation


@dataclass
class Runtime(ReadsLossless):
    """What an augmented model carries besides its parameters (`model._ahn_runtime`)."""

    config: AHNConfig
    base_attention: str
    decoder: nn.Module
    windowed: set[int]
    lossless: Lossless  # the current sizes; a cache holding tokens keeps those it was read with
    mode: str = "ahn"
    compiled: bool = False  # `ahn.compile` compiled the memory pieces
    # [B] left padding of the latest forward call; kept after it so that gradient checkpointing
    # recomputes the layers with the same padding.
    pad: torch.Tensor | None = None
    pad_max: int = 0
    handles: list = field(default_factory=list)
    requires_grad: dict = field(default_factory=dict)  # base parameter name -> flag before
    far: Rerotation | None = None  # the base's RoPE turned back (positions "bounded")
    choice: Choice = field(default_factory=lambda: Choice())  # share "global": this call's scores

    def new_cache(self) -> AHNCache:
        layers = len(self.decoder.layers)
        return AHNCache(layers, self.windowed, self.lossless)
