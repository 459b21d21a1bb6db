"""Self-distillation training of AHNs (SPEC §5): `train(TrainConfig(...))` or `ahn train ...`."""

from ahn.train.config import TrainConfig
from ahn.train.data import DataError, Sample

__all__ = ["DataError", "Sample", "TrainConfig", "train", "evaluate_kl"]


def __getattr__(name: str):
    # The loop imports the transformers integration; loaded on first use only.
    if name == "train":
        from ahn.train.loop import train

        return train
    if name == "evaluate_kl":
        from ahn.train.evaluate import evaluate_kl

        return evaluate_kl
    raise AttributeError(f"module 'ahn.train' has no attribute {name!r}")
