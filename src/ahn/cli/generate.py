"""`ahn generate`: stream an answer with transformers' `model.generate` (constant memory in
the "ahn" and "sliding" modes). The model loading and decoding flags here are shared with
`ahn read` / `ahn ask`."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ahn import dtypes
from ahn.config import MODES, POSITIONS
from ahn.flags import COMPILE_HELP


def add_model_arguments(parser, modes: tuple[str, ...] = MODES) -> None:
    """--base / --ahn / [--mode (one of `modes`) / --salient] / --dtype / --device / --compile:
    how every inference command (generate, read, ask, eval) loads a model; no `modes`, no
    --mode / --salient (eval has its own method and lossless-size flags)."""
    parser.add_argument(
        "--base", required=True, help="base model directory, Hub id, or a name of `ahn fetch-base`"
    )
    parser.add_argument("--ahn", help="AHN directory or Hub id (ahn.save output or official)")
    if modes:
        parser.add_argument(
            "--mode",
            choices=modes,
            help=f"default: ahn{' with --ahn, else full' if 'full' in modes else ''} (store: ahn "
            "without the memory's read)",
        )
        parser.add_argument(
            "--salient",
            type=int,
            help="salient store: evicted tokens kept per layer and KV head (the mean) in mode ahn "
            "(default: the AHN's own; 0: off)",
        )
        parser.add_argument("--positions", choices=POSITIONS, help=POSITIONS_HELP)
    parser.add_argument(
        "--dtype", choices=dtypes.CHOICES, default="auto", help="auto: bf16 where it is fast"
    )
    parser.add_argument("--device", help="torch device: cpu, cuda, cuda:1 (default: cuda if any)")
    parser.add_argument("--compile", action="store_true", help=COMPILE_HELP)


POSITIONS_HELP = (
    "where sinks and store are seen: bounded (within sinks + store + window of the query; "
    "reads past the base's context) or original (default: the AHN's own)"
)


def device_of(name: str | None):
    """The torch device of a --device value (None: cuda when available, else cpu)."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: this torch sees no CUDA device; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"--device {name!r}: there are {count} CUDA devices (cuda:0..{count - 1})")
    return device


def add_decoding_arguments(parser) -> None:
    """Decoding flags, applied on top of the model directory's generation_config.json."""
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help=f"default: {CHAT_NEW_TOKENS} with --chat (an answer; a small model that misses its "
        f"end-of-turn token then stops), else {TEXT_NEW_TOKENS}",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, help="nucleus sampling (with --temperature > 0)")
    parser.add_argument("--top-k", type=int, help="top-k sampling (with --temperature > 0)")
    parser.add_argument("--repetition-penalty", type=float, help="> 1 penalises repeats")
    parser.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=0)


# Default generation lengths: a chat answer, a continuation of text.
CHAT_NEW_TOKENS, TEXT_NEW_TOKENS = 96, 256


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", help="prompt text (after --prompt-file's, when both)")
    parser.add_argument(
        "--prompt-file", help="file holding the prompt text (a document; --prompt: the question)"
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    add_decoding_arguments(parser)


def load_base(base: str, dtype: str, device: str | None):
    """(model in eval mode on its device, tokenizer) of --base / --dtype / --device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ahn.bases import resolve_base

    device = device_of(device)
    path = resolve_base(base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    chosen = dtypes.resolve(dtype, device.type)
    if dtype == "auto":
        print(f"[ahn] --dtype auto: {str(chosen).removeprefix('torch.')} on {device}",
              file=sys.stderr)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(path, dtype=chosen).to(device).eval()
    return model, tokenizer


def load_model(args):
    """(model, tokenizer, mode) from --base / --ahn / --mode / --dtype / --device."""
    import ahn

    mode = args.mode or ("ahn" if args.ahn else "full")
    if mode != "full" and not args.ahn:
        raise ValueError(f"--mode {mode} needs --ahn DIR (the AHN to use)")
    for flag in ("salient", "positions"):
        if getattr(args, flag) is not None and not args.ahn:
            raise ValueError(f"--{flag} {getattr(args, flag)} needs --ahn DIR (the AHN it sets)")
    if args.ahn:
        from ahn.checkpoint import ahn_directory

        args.ahn = str(ahn_directory(args.ahn))  # a wrong --ahn fails before the base loads
    model, tokenizer = load_base(args.base, args.dtype, args.device)
    if args.ahn:
        ahn.load(model, args.ahn)
        ahn.set_mode(model, mode)
        ahn.set_window(model, salient=args.salient, positions=args.positions)
        if args.compile:
            ahn.compile(model)
    elif args.compile:
        print("[ahn] --compile: nothing to compile without --ahn (mode full runs the base as "
              "transformers has it)", file=sys.stderr)  # fmt: skip
    return model, tokenizer, mode


def generation_config(model, args):
    """The model's GenerationConfig with the decoding flags applied (checked first)."""
    import copy

    if args.max_new_tokens is None:
        args.max_new_tokens = CHAT_NEW_TOKENS if getattr(args, "chat", False) else TEXT_NEW_TOKENS
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens={args.max_new_tokens} must be >= 1")
    if args.temperature < 0:
        raise ValueError(f"--temperature={args.temperature} must be >= 0 (0 = greedy)")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p={args.top_p} must be in (0, 1]")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k={args.top_k} must be >= 1")
    if args.repetition_penalty is not None and args.repetition_penalty <= 0:
        raise ValueError(f"--repetition-penalty={args.repetition_penalty} must be > 0")
    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens = args.max_new_tokens
    config.do_sample = args.temperature > 0
    sampling = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    for key, value in sampling.items():
        setattr(config, key, value if config.do_sample else None)
    if args.repetition_penalty is not None:
        config.repetition_penalty = args.repetition_penalty
    config.stop_strings = args.stop or None
    config.return_dict_in_generate = True
    return config


def prompt_ids(tokenizer, text: str, chat: bool):
    """[1, T] ids of `text`, wrapped in the tokenizer's chat template when `chat`."""
    from ahn.eval.sample import chat_prompt

    if not chat:
        return tokenizer(text, return_tensors="pt").input_ids
    return tokenizer(chat_prompt(tokenizer, text), add_special_tokens=False,
                     return_tensors="pt").input_ids  # fmt: skip


def stream(model, tokenizer, ids, config, cache=None):
    """`model.generate` with a text streamer on stdout; returns (new token ids [1, N], the cache
    at the end, `Timing` of the call).

    `cache`: the cache to continue (a memory from `ahn.read` / `ahn.load_memory`, whose tokens
    `ids` follows), or None for a new one."""
    import torch

    device = next(model.parameters()).device
    ids = ids.to(device)
    streamer = _timed_streamer()(tokenizer, skip_prompt=True, skip_special_tokens=True)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            generation_config=config,
            cache=cache,
            streamer=streamer,
            tokenizer=tokenizer,
        )
    end = time.perf_counter()
    new = out.sequences[:, ids.shape[1] :]
    first = streamer.first or end
    return new, out.cache, Timing(first - start, end - first, new.shape[1])


@dataclass
class Timing:
    """Seconds of one generation: until its first new token (what remains of the prompt, then
    one step), then decoding the other `tokens - 1`; `prefill`: reading the prompt before."""

    first_token: float
    decode: float
    tokens: int
    prefill: float = 0.0

    def line(self) -> str:
        rate = (self.tokens - 1) / self.decode if self.tokens > 1 and self.decode > 0 else 0.0
        prefill = f"prefill {self.prefill:.2f} s, " if self.prefill else ""
        return (
            f"{prefill}first token after {self.prefill + self.first_token:.2f} s, "
            f"{self.tokens} new tokens, decode {rate:.1f} tokens/s"
        )


def _timed_streamer():
    """The TextStreamer subclass (made on first use: transformers loads only then)."""
    from transformers import TextStreamer

    class TimedStreamer(TextStreamer):
        """A TextStreamer that notes when the first new token arrives."""

        first = None

        def put(self, value):
            if self.first is None and not (self.skip_prompt and self.next_tokens_are_prompt):
                self.first = time.perf_counter()
            super().put(value)

    return TimedStreamer


def prefill(model, ids, mode: str):
    """Read all but the last prompt token with a progress bar (the generation then starts from
    one token): (cache, the ids to pass to generate, seconds). In mode full the cache is a
    transformers `DynamicCache` and generate gets every id (it skips the cached ones)."""
    import torch
    from tqdm import tqdm
    from transformers import DynamicCache

    import ahn

    start = time.perf_counter()
    if ids.shape[1] < 2:
        return None, ids, 0.0
    if mode != "full":
        cache = ahn.read(model, ids[:, :-1], progress=True)
        return cache, ids[:, -1:], time.perf_counter() - start
    device = next(model.parameters()).device
    T, chunk, cache = ids.shape[1] - 1, FULL_PREFILL_CHUNK, DynamicCache(config=model.config)
    bar = tqdm(total=T, desc="read", unit="tok", file=sys.stderr, delay=1.0)
    with torch.no_grad(), bar:
        for a in range(0, T, chunk):
            piece = ids[:, a : min(T, a + chunk)].to(device)
            model(piece, cache=cache, use_cache=True, logits_to_keep=1)
            bar.update(piece.shape[1])
    return cache, ids, time.perf_counter() - start


# Prompt tokens per forward call of mode full's prefill (its progress bar's step).
FULL_PREFILL_CHUNK = 1024


def report(mode: str, cache, timing: Timing) -> str:
    from ahn.integration.cache import cache_bytes

    return (
        f"[ahn] mode={mode} tokens seen={cache.get_seq_length()} "
        f"cache={cache_bytes(cache) / 2**20:.2f} MiB; {timing.line()}"
    )


def prompt_text(args) -> str:
    """--prompt-file's text, then --prompt's after a blank line (a document, then a question
    about it); one of them alone as it is."""
    parts = []
    if args.prompt_file is not None:
        parts.append((f"--prompt-file {args.prompt_file}", Path(args.prompt_file).read_text()))
    if args.prompt is not None:
        parts.append(("--prompt", args.prompt))
    if not parts:
        raise ValueError("give --prompt TEXT, --prompt-file FILE, or both (document, question)")
    for source, text in parts:
        if not text.strip():
            raise ValueError(f"{source} is empty: give the text to continue")
    if len(parts) == 1:
        return parts[0][1]
    return parts[0][1].rstrip() + "\n\n" + parts[1][1].strip()


def run(args) -> int:
    import torch

    text = prompt_text(args)
    model, tokenizer, mode = load_model(args)
    config = generation_config(model, args)
    torch.manual_seed(args.seed)
    ids = prompt_ids(tokenizer, text, args.chat)
    cache, ids, prefill_s = prefill(model, ids, mode)
    new, cache, timing = stream(model, tokenizer, ids, config, cache)
    timing.prefill = prefill_s
    print(report(mode, cache, timing), file=sys.stderr)
    return 0
