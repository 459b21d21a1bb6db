"""`AHNConfig`: one definition of an AHN setup, shared by the API, the CLI and the json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ahn.registry import MEMORY_TYPES, rule

# The salient store's scores (ahn.integration.store.SCORES, named here without importing torch).
SCORE_NAMES = ("novelty", "surprise", "write_gate", "value_norm")

# Where the base sees the keys it attends (SPEC §2c): "original" (every key at its own RoPE
# position, the paper) or "bounded" (sinks and stored keys within S + G + W of the query).
POSITIONS = ("original", "bounded")

# Which heads share one choice of stored tokens (SPEC §2b): each KV head its own ("head"), the
# KV heads of a layer ("layer"), or all layers, by the first store layer's score ("global").
SHARES = ("head", "layer", "global")

# The json file `ahn.save` writes beside the weights (`ahn.checkpoint`); named here so that
# modules below the checkpoint (`ahn.bases`) can recognise an AHN directory.
CONFIG_NAME = "ahn_config.json"

__all__ = ["MEMORY_TYPES", "MODES", "POSITIONS", "SCORE_NAMES", "SHARES", "AHNConfig"]

# "store": the ablation sinks + salient store + window, the memory's read left out (the memory
# still runs: the store's scores come from it)
MODES = ("full", "sliding", "ahn", "store")


@dataclass
class AHNConfig:
    """How a base model is augmented.

    Args:
        memory: the recurrent rule compressing evicted tokens, one of `MEMORY_TYPES`.
        window: recent tokens kept losslessly (the current token included), sinks excluded.
        sinks: first tokens of the sequence kept losslessly for ever (attention sinks).
        layers: indices of the decoder layers that get window + memory; the others keep full
            attention. `None` means every layer.
        prefill_chunk: prompt tokens processed per forward call when a cache is in use, so that
            prefill memory is bounded by `sinks + window + prefill_chunk`.
        salient: evicted tokens kept exactly per layer and KV head beside the memory (the
            salient store, SPEC §2b), on average over the heads when `salient_heads` is set;
            0 (the default) is the AHN of the paper.
        salient_score: how the store ranks evicted tokens, one of `SCORE_NAMES`.
        salient_heads: the head profile, one weight >= 0 per (decoder layer, KV head): the
            store's total, `salient` times the windowed (layer, KV head) pairs, is shared in
            proportion (`ahn profile-heads` measures one). None: `salient` for every head.
        salient_share: which heads share one choice of tokens, one of `SHARES`.
        positions: where the base sees sinks and stored keys, one of `POSITIONS` (SPEC §2c):
            "bounded" (the default, measured better inside and past the base's context: see
            docs/positions.md) sees them within `sinks + salient + window` of the query, the
            window at its true distances; "original" keeps their RoPE positions (the paper's;
            past the base's context they sit at distances it never saw). An AHN saved without
            this field (official checkpoints, AHNs saved before it existed) loads with
            "original".
    """

    memory: str = "gated_deltanet"
    window: int = 32640
    sinks: int = 128
    layers: list[int] | None = None
    prefill_chunk: int = 4096
    norm_eps: float = 1e-5
    salient: int = 0
    salient_score: str = "novelty"
    salient_heads: list[list[float]] | None = None
    salient_share: str = "head"
    positions: str = "bounded"

    def __post_init__(self) -> None:
        rule(self.memory)  # a clear error for an unknown rule
        _check_int("window", self.window, minimum=1)
        _check_int("sinks", self.sinks, minimum=0)
        _check_int("salient", self.salient, minimum=0)
        if self.salient_score not in SCORE_NAMES:
            raise ValueError(f"salient_score={self.salient_score!r} is not one of {SCORE_NAMES}")
        if self.salient_share not in SHARES:
            raise ValueError(f"salient_share={self.salient_share!r} is not one of {SHARES}")
        if self.salient_heads is not None:
            self.salient_heads = _check_profile(self.salient_heads)
        if self.positions not in POSITIONS:
            raise ValueError(f"positions={self.positions!r} is not one of {POSITIONS}")
        _check_int("prefill_chunk", self.prefill_chunk, minimum=1)
        if self.layers is not None:
            self.layers = list(self.layers)
            for index in self.layers:
                _check_int("layers[...]", index, minimum=0)
            if len(set(self.layers)) != len(self.layers):
                raise ValueError(f"layers={self.layers} has repeated indices")
            self.layers = sorted(self.layers)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AHNConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AHNConfig fields {unknown}; valid fields: {sorted(known)}")
        return cls(**{"positions": "original", **data})  # saved before SPEC §2c: the paper's

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, path: str | Path) -> AHNConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


def _check_profile(profile: object) -> list[list[float]]:
    """A head profile: rows of equal length, weights >= 0, not all zero."""
    rows = profile if isinstance(profile, (list, tuple)) else None
    ok = bool(rows) and all(isinstance(r, (list, tuple)) and r for r in rows)
    ok = ok and len({len(r) for r in rows}) == 1
    ok = ok and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for r in rows for w in r
    )
    if not ok or not any(w > 0 for r in rows for w in r):
        raise ValueError(
            f"salient_heads={profile!r} must be a list (one per decoder layer) of equal-length "
            "lists (one weight >= 0 per KV head), not all zero"
        )
    return [[float(w) for w in r] for r in rows]


def store_budgets(
    profile: list[list[float]] | None, salient: int, windowed: set[int], kv_heads: int, layers: int
) -> tuple[tuple[int, ...], ...]:
    """G_lh, the store entries of every (decoder layer, KV head): `salient` each without a
    profile; else the total `salient * len(windowed) * kv_heads` split in proportion to the
    profile's weights of the windowed layers (largest remainders, ties to the earlier head).
    Layers not windowed get 0."""
    if profile is not None and (len(profile) != layers or len(profile[0]) != kv_heads):
        raise ValueError(
            f"salient_heads has {len(profile)} x {len(profile[0])} weights, but the model has "
            f"{layers} layers x {kv_heads} KV heads"
        )
    if profile is None:
        return tuple(tuple([salient if i in windowed else 0] * kv_heads) for i in range(layers))
    heads = [(i, h) for i in sorted(windowed) for h in range(kv_heads)]
    weight = [profile[i][h] for i, h in heads]
    if not any(weight):
        raise ValueError("salient_heads gives every windowed layer weight 0")
    total = salient * len(heads)
    share = [total * w / sum(weight) for w in weight]
    G = {pair: int(x) for pair, x in zip(heads, share, strict=True)}
    left = total - sum(G.values())
    by_remainder = sorted(range(len(heads)), key=lambda n: (-(share[n] - int(share[n])), n))
    for n in by_remainder[:left]:
        G[heads[n]] += 1
    return tuple(tuple(G.get((i, h), 0) for h in range(kv_heads)) for i in range(layers))


def load_profile(path: str | Path) -> list[list[float]]:
    """A head profile from a `profile-heads` json or an AHN directory that has one."""
    path = Path(path)
    file = path / CONFIG_NAME if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{path}: no head profile (a profile-heads json or an AHN directory)")
    data = json.loads(file.read_text())
    profile = data.get("config", data).get("salient_heads")
    if profile is None:
        raise ValueError(f"{file} has no salient_heads (make one with ahn profile-heads)")
    return _check_profile(profile)
