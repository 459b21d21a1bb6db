"""`TrainConfig`: one definition of a training run, shared by the Python API, the CLI and the json
saved in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ahn import dtypes
from ahn.config import MEMORY_TYPES, POSITIONS, SCORE_NAMES, SHARES, AHNConfig, load_profile
from ahn.flags import COMPILE_HELP, opt

# --loss name -> (weight of KL(teacher || student), weight of the student's CE)
LOSS_WEIGHTS: dict[str, tuple[float, float]] = {
    "kl": (1.0, 0.0),
    "ce": (0.0, 1.0),
    "kl+ce": (1.0, 1.0),
}
TRAIN_DTYPES = ("auto", "float32", "bfloat16")  # of `ahn.dtypes`; auto: bf16 where it is fast
TRAIN_WINDOWS = ("random", "fixed")


@dataclass
class TrainConfig:
    """A self-distillation run (SPEC §5): the frozen base in "full" mode teaches its own "ahn" mode.

    Every field is also a flag of `ahn train` (`seq_len` -> `--seq-len`); `help` below is its text.
    """

    output: str = field(metadata=opt("directory for the trained AHN, checkpoints and the log"))
    base: str | None = field(default=None, metadata=opt("base model directory (transformers)"))
    data: list[str] = field(
        default_factory=list, metadata=opt(".jsonl ({text|messages|input_ids}) or .txt files")
    )
    memory: str = field(default="gated_deltanet", metadata=opt("AHN rule", choices=MEMORY_TYPES))
    window: int = field(default=32640, metadata=opt("inference window saved with the result"))
    sinks: int = field(default=128, metadata=opt("inference sinks saved with the result"))
    layers: list[int] | None = field(
        default=None, metadata=opt("decoder layers to augment (default: all)")
    )
    salient: int = field(
        default=0,
        metadata=opt("salient store: evicted tokens kept per layer and KV head (mean; 0: off)"),
    )
    salient_score: str = field(
        default="novelty", metadata=opt("how the store ranks evicted tokens", choices=SCORE_NAMES)
    )
    salient_heads: str | None = field(
        default=None,
        metadata=opt("the store's head profile: a profile-heads json or an AHN dir with one"),
    )
    salient_share: str = field(
        default="head", metadata=opt("which heads share a choice of tokens", choices=SHARES)
    )
    positions: str = field(
        default="bounded",
        metadata=opt("where sinks and store are seen (SPEC §2c)", choices=POSITIONS),
    )
    init_ahn: str | None = field(
        default=None,
        metadata=opt("start from this AHN's weights (ahn.save dir or Hub id; same memory rule)"),
    )
    train_window: str = field(
        default="random",
        metadata=opt(
            "lossless size per step: drawn (SPEC §5) or --window/--sinks", choices=TRAIN_WINDOWS
        ),
    )
    min_sinks: int = field(
        default=0, metadata=opt("random windows: draw no fewer sinks than this (when possible)")
    )
    seq_len: int = field(default=8192, metadata=opt("cutoff: tokens kept per sample"))
    min_len: int = field(default=0, metadata=opt("drop samples shorter than this (tokens)"))
    steps: int = field(default=1000, metadata=opt("optimizer steps"))
    batch_size: int = field(default=1, metadata=opt("samples per process per micro-batch"))
    grad_accum: int = field(default=1, metadata=opt("micro-batches per optimizer step"))
    lr: float = field(default=1e-4, metadata=opt("peak learning rate"))
    warmup: float = field(
        default=0.1, metadata=opt("linear warmup: a fraction of --steps if < 1, else steps")
    )
    weight_decay: float = field(default=0.1, metadata=opt("AdamW decay of matrices"))
    max_grad_norm: float = field(default=1.0, metadata=opt("gradient clipping (0: off)"))
    loss: str = field(default="kl", metadata=opt("training loss", choices=tuple(LOSS_WEIGHTS)))
    seed: int = field(default=42, metadata=opt("seed of the AHN init, data order, windows"))
    save_every: int = field(default=500, metadata=opt("checkpoint every N steps (0: never)"))
    resume: bool = field(default=False, metadata=opt("continue from the newest checkpoint"))
    dtype: str = field(default="float32", metadata=opt("base weights dtype", choices=TRAIN_DTYPES))
    gradient_checkpointing: bool = field(
        default=False, metadata=opt("recompute decoder layers in backward")
    )
    compile: bool = field(default=False, metadata=opt(COMPILE_HELP))
    fsdp: bool = field(
        default=False, metadata=opt("shard the base over the processes (FSDP2, per layer)")
    )
    skip_bad_lines: bool = field(
        default=False, metadata=opt("warn about malformed data lines instead of failing")
    )
    assistant_only: bool = field(
        default=False, metadata=opt("messages data: loss only on assistant tokens")
    )
    shuffle_buffer: int = field(default=10000, metadata=opt("samples in the shuffle buffer"))
    logit_chunk: int = field(
        default=1024, metadata=opt("positions per chunk of vocabulary-sized logits")
    )
    tensorboard: bool = field(default=False, metadata=opt("also log to OUTPUT/tensorboard"))
    device: str | None = field(default=None, metadata=opt("cpu, cuda, ... (default: auto)"))

    def __post_init__(self) -> None:
        self.data = [str(path) for path in self.data]
        for name in (
            "seq_len",
            "steps",
            "batch_size",
            "grad_accum",
            "shuffle_buffer",
            "logit_chunk",
        ):
            _check_number(name, getattr(self, name), minimum=1, kind=int)
        for name in ("min_len", "save_every", "seed", "min_sinks"):
            _check_number(name, getattr(self, name), minimum=0, kind=int)
        for name in ("warmup", "weight_decay", "max_grad_norm"):
            _check_number(name, getattr(self, name), minimum=0, kind=float)
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be > 0")
        _check_choice("loss", self.loss, tuple(LOSS_WEIGHTS))
        dtypes.check(self.dtype, TRAIN_DTYPES)
        _check_choice("train_window", self.train_window, TRAIN_WINDOWS)
        if self.warmup >= 1 and self.warmup != int(self.warmup):
            raise ValueError(f"warmup={self.warmup} must be a fraction < 1 or a whole step count")
        if self.min_len > self.seq_len:
            raise ValueError(f"min_len={self.min_len} must be <= seq_len={self.seq_len}")
        ahn_config = self.ahn_config()  # validates memory, window, sinks, layers
        if self.train_window == "fixed" and ahn_config.sinks + ahn_config.window >= self.seq_len:
            raise ValueError(
                f"--train-window fixed with sinks + window = {self.sinks + self.window} leaves no "
                f"position of a seq_len={self.seq_len} sequence outside the lossless window to "
                "distil on; lower --window/--sinks or raise --seq-len"
            )

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup) if self.warmup >= 1 else int(self.warmup * self.steps)

    @property
    def loss_weights(self) -> tuple[float, float]:
        return LOSS_WEIGHTS[self.loss]

    def ahn_config(self) -> AHNConfig:
        """The `AHNConfig` saved with the result (the inference window and sinks)."""
        return AHNConfig(
            memory=self.memory,
            window=self.window,
            sinks=self.sinks,
            layers=self.layers,
            salient=self.salient,
            salient_score=self.salient_score,
            salient_heads=None if self.salient_heads is None else load_profile(self.salient_heads),
            salient_share=self.salient_share,
            positions=self.positions,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_number(name: str, value: object, minimum: float, kind: type) -> None:
    valid = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        valid = valid and isinstance(value, int)
    if not valid or value < minimum:
        raise ValueError(f"{name}={value!r} must be {kind.__name__} >= {minimum}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; use one of {choices}")
