"""Self-distillation training of AHNs (SPEC §5): `train(TrainConfig(...))` or `ahn train ...`.

Names load on first use, so `ahn train --help` imports neither torch nor transformers.
"""

import importlib

_EXPORTS = {
    "TrainConfig": "ahn.train.config",
    "DataError": "ahn.train.data",
    "Sample": "ahn.train.data",
    "evaluate_kl": "ahn.train.evaluate",
    "train": "ahn.train.loop",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ahn.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
