"""`ahn generate`: stream an answer with constant-memory AHN generation."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from ahn import dtypes


def add_arguments(parser) -> None:
    parser.add_argument(
        "--base", required=True, help="base model directory, or a name of `ahn fetch-base`"
    )
    parser.add_argument("--ahn", help="AHN directory (ahn.save output or official checkpoint)")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text")
    prompt.add_argument("--prompt-file", help="file holding the prompt text")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--mode", choices=("full", "sliding", "ahn"), help="default: ahn with --ahn, else full"
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--dtype", choices=dtypes.CHOICES, default="auto")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import ahn
    from ahn.bases import resolve
    from ahn.integration.cache import cache_bytes

    base = resolve(args.base)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens={args.max_new_tokens} must be >= 1")
    if args.temperature < 0:
        raise ValueError(f"--temperature={args.temperature} must be >= 0")
    mode = args.mode or ("ahn" if args.ahn else "full")
    if mode != "full" and not args.ahn:
        raise ValueError(f"--mode {mode} needs --ahn DIR (the AHN to use)")
    text = Path(args.prompt_file).read_text() if args.prompt_file else args.prompt
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtypes.resolve(args.dtype)).eval()
    if args.ahn:
        ahn.load(model, args.ahn)
        ahn.set_mode(model, mode)
    if args.chat:
        messages = [{"role": "user", "content": text}]
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
    else:
        ids = tokenizer(text, return_tensors="pt").input_ids
    state = {}
    for piece in stream_generate(
        model, tokenizer, ids, args.max_new_tokens, args.temperature, state
    ):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    cache = state["cache"]
    print(
        f"[ahn] mode={mode} tokens seen={cache.get_seq_length()} "
        f"cache={cache_bytes(cache) / 2**20:.2f} MiB",
        file=sys.stderr,
    )
    return 0


def stream_generate(
    model, tokenizer, ids, max_new_tokens, temperature=0.0, state=None
) -> Iterator[str]:
    """Prefill `ids` [1, T] in chunks (progress bar on stderr), then yield decoded text pieces.

    `state["cache"]` holds the cache at the end.
    """
    import torch

    with torch.no_grad():
        yield from _stream(model, tokenizer, ids, max_new_tokens, temperature, state)


def _stream(model, tokenizer, ids, max_new_tokens, temperature, state):
    import torch
    from tqdm import tqdm

    from ahn.integration.augment import is_augmented, runtime_of

    state = {} if state is None else state
    chunk = runtime_of(model).config.prefill_chunk if is_augmented(model) else ids.shape[1]
    cache, logits = None, None
    with tqdm(
        total=ids.shape[1],
        desc="prefill",
        unit="tok",
        file=sys.stderr,
        disable=ids.shape[1] <= chunk,
    ) as bar:
        for a in range(0, ids.shape[1], chunk):
            out = model(ids[:, a : a + chunk], cache=cache, use_cache=True, logits_to_keep=1)
            cache, logits = out.cache, out.logits[:, -1]
            bar.update(min(chunk, ids.shape[1] - a))
    eos = _eos_ids(model, tokenizer)
    generated, shown = [], ""
    for _ in range(max_new_tokens):
        token = _pick(logits, temperature)
        if token in eos:
            break
        generated.append(token)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        yield text[len(shown) :]
        shown = text
        out = model(torch.tensor([[token]], device=ids.device), cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1]
    state["cache"] = cache


def _pick(logits, temperature: float) -> int:
    import torch

    if temperature == 0:
        return int(logits.argmax(-1))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1))


def _eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id if model.generation_config else None
    eos = eos if eos is not None else tokenizer.eos_token_id
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}
