"""`EvalConfig`: what `ahn eval` evaluates; every field is also its flag (`ahn.flags`).
Imports no torch, so `ahn eval --help` stays instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ahn.config import MODES, POSITIONS, SHARES
from ahn.eval import benchmarks, synthetic
from ahn.eval.flops import parse_length
from ahn.flags import opt

# What a user would run instead past the base's context (full attention), and the sliding
# window's reference there (`ahn.eval.methods`)
BASELINES = ("truncated", "yarn", "dynamic", "rebased")
METHODS = MODES + BASELINES


def _unknown_task(task: str) -> str:
    """One short line: close matches among every valid name, then the kinds of names."""
    import difflib

    every = [*synthetic.TASKS, *synthetic.GROUPS, "nll"]
    every += [
        f"{b}:{d}" for b in benchmarks.BENCHMARKS for d in benchmarks.BENCHMARKS[b].datasets()
    ]
    close = difflib.get_close_matches(task, every, n=3)
    guess = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return (
        f"task {task!r} is unknown; {guess}valid: {', '.join(synthetic.TASKS)}, "
        f"{', '.join(synthetic.GROUPS)}, nll, or <benchmark>:<dataset> / <benchmark>:all with "
        f"benchmark one of {', '.join(benchmarks.BENCHMARKS)}"
    )


def csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def csv_lengths(text: str) -> list[int]:
    return [parse_length(n) for n in csv(text)]


def csv_floats(text: str) -> list[float]:
    try:
        return [float(d) for d in csv(text)]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers") from None


CHAT = {"auto": None, "on": True, "off": False}


def chat_choice(text: str) -> bool | None:
    if text not in CHAT:
        raise ValueError(f"--chat {text!r}: use one of {sorted(CHAT)}")
    return CHAT[text]


@dataclass
class EvalConfig:
    """What to evaluate.

    Args:
        tasks: names from `synthetic.TASKS` or groups of `synthetic.GROUPS`, "nll" (language
            modelling on `data`), "<benchmark>:<dataset>" with a benchmark of
            `benchmarks.BENCHMARKS` (files in `data`), or "<benchmark>:all" (every dataset of
            the benchmark whose file is in the folder `data`).
        lengths: token budgets (synthetic), piece lengths (nll), truncation lengths (benchmarks).
        methods: subset of `methods.METHODS` (default full, sliding, ahn; "store" is the
            ablation without the memory's read; truncated / yarn / dynamic: full attention
            over the last context's tokens or with transformers' RoPE scaling).
        depths: needle depths of the synthetic tasks (0 = start, 1 = end).
        samples: prompts per (synthetic task, length, depth).
        limit: at most this many items per nll length / benchmark dataset (None: all of them,
            as lm-eval without `--limit`).
        window, sinks: override the model's lossless sizes for "sliding" and "ahn".
        salient: override the salient store's entries per KV head for "ahn" (0: off).
        positions: override where "sliding" / "ahn" see sinks and store (`POSITIONS`).
        salient_heads: override the store's head profile (a `profile-heads` json or an AHN
            directory with one; "uniform": none); salient_share: its choice sharing (`SHARES`).
        data: documents for "nll" (.jsonl/.txt/dir), benchmark files, or the essay haystack
            text file of the synthetic tasks that need one.
        max_new_tokens: override every task's generation length.
        nll_bucket: positions per NLL bucket (default length // 32).
        chat: wrap prompts in the tokenizer's chat template (`None`: when it has one).
    """

    tasks: list[str] = field(
        metadata=opt(
            "comma-separated: synthetic tasks (passkey, niah_*, vt, kv_retrieval, copy), the "
            "groups ruler / ruler_noise, nll, or <benchmark>:<dataset> / <benchmark>:all "
            "with benchmark longbench, longbench_e, lveval, infinitebench",
            flag="task",
            parse=csv,
        )
    )
    lengths: list[int] = field(
        default_factory=lambda: [4096], metadata=opt("e.g. 4k,16k,32768", parse=csv_lengths)
    )
    methods: list[str] = field(
        default_factory=lambda: ["full", "sliding", "ahn"],
        metadata=opt(
            "subset of full,sliding,ahn,store,truncated,yarn,dynamic,rebased (store: the salient "
            "store without the memory's read; truncated: full attention over the base's context; "
            "yarn / dynamic: full attention with transformers' RoPE scaling; rebased (nll): "
            "sliding with every target read inside the base's context)",
            parse=csv,
        ),  # fmt: skip
    )
    depths: list[float] = field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
        metadata=opt("needle depths", parse=csv_floats),
    )
    samples: int = field(default=1, metadata=opt("synthetic prompts per length and depth"))
    limit: int | None = field(
        default=None, metadata=opt("at most N items per nll length / benchmark dataset (all)")
    )
    seed: int = field(default=42, metadata=opt("seed of the synthetic prompts"))
    window: int | None = field(default=None, metadata=opt("override the lossless window"))
    sinks: int | None = field(default=None, metadata=opt("override the number of sinks"))
    salient: int | None = field(
        default=None, metadata=opt("override the store's entries per KV head (the mean; 0: off)")
    )
    positions: str | None = field(
        default=None,
        metadata=opt("override where sinks and store are seen", choices=POSITIONS),
    )
    salient_heads: str | None = field(
        default=None,
        metadata=opt("override the store's head profile: a profile-heads json, or 'uniform'"),
    )
    salient_share: str | None = field(
        default=None, metadata=opt("override which heads share a choice of tokens", choices=SHARES)
    )
    data: str | None = field(
        default=None, metadata=opt("documents (nll), benchmark files, or essay haystack")
    )
    max_new_tokens: int | None = field(default=None, metadata=opt("override the generation length"))
    nll_bucket: int | None = field(default=None, metadata=opt("positions per NLL bucket"))
    text_key: str = field(default="text", metadata=opt("the text field of --data jsonl"))
    chat: bool | None = field(
        default=None,
        metadata=opt(
            "chat template: auto (if the tokenizer has one), on, off",
            parse=chat_choice,
            metavar="{auto,on,off}",
        ),
    )

    def __post_init__(self) -> None:
        if self.data and not Path(self.data).exists():
            raise FileNotFoundError(f"data={self.data}: no such file or directory")
        expanded = [
            name
            for task in self.tasks
            for member in synthetic.GROUPS.get(task, (task,))
            for name in benchmarks.expand(member, self.data)
        ]
        self.tasks = list(dict.fromkeys(expanded))
        for task in self.tasks:
            if task not in synthetic.TASKS and task != "nll" and not benchmarks.is_benchmark(task):
                raise ValueError(_unknown_task(task))
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods={self.methods} must be a non-empty subset of {METHODS}")
        if "rebased" in self.methods and self.tasks != ["nll"]:
            raise ValueError(f"method 'rebased' reads NLL only: tasks={self.tasks} must be ['nll']")
        if not self.lengths or any(not isinstance(n, int) or n < 1 for n in self.lengths):
            raise ValueError(f"lengths={self.lengths} must be positive integers")
        if any(not 0.0 <= d <= 1.0 for d in self.depths) or not self.depths:
            raise ValueError(f"depths={self.depths} must be in [0, 1]")
        if self.samples < 1:
            raise ValueError(f"samples={self.samples} must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be >= 1 (or None: every item)")
        if ("nll" in self.tasks or any(map(benchmarks.is_benchmark, self.tasks))) and not self.data:
            raise ValueError("tasks 'nll' and benchmarks need data=PATH")
