"""Self-distillation training of AHNs (SPEC §5): `train(TrainConfig(...))` or `ahn train ...`."""

from ahn.train.config import TrainConfig
from ahn.train.data import DataError, Sample
from ahn.train.evaluate import evaluate_kl
from ahn.train.loop import train

__all__ = ["DataError", "Sample", "TrainConfig", "evaluate_kl", "train"]
