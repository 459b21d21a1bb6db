"""`ahn profile-heads`: which (layer, KV head) pairs retrieve far facts, the profile that shares
the salient store's budget (SPEC §2b, `AHNConfig.salient_heads`).

Training-free "retrieval" profile (the retrieval score of Wu et al. 2024, arXiv 2404.15574,
measured by attention mass): the base with full attention reads fact chats of the training mix
(`ahn.corpus`, train split; never the evaluation's prompts). At every answer token that repeats
a token of the fact far back, each query head's attention on that token of the fact is its
credit. A query head's score is its mean credit; a KV head's weight is the largest score of the
query heads it serves (its cache serves them all).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

from ahn import atomic

PROBE = "ahn_probe"


def probe_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA, and the softmax weights [B, H, R, T] of the query rows `module._probe_rows` [R]
    kept in `module._probe_weights` (query [B, H, T, D], key [B, Hkv, T, D])."""
    out = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                 **kwargs)  # fmt: skip
    rows = getattr(module, "_probe_rows", None)
    if rows is not None:
        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        k = repeat_kv(key, query.shape[1] // key.shape[1]).float()
        logits = query[:, :, rows].float() @ k.transpose(-1, -2) * scaling  # [B, H, R, T]
        later = torch.arange(key.shape[-2], device=rows.device)[None, :] > rows[:, None]
        module._probe_weights = logits.masked_fill(later, -torch.inf).softmax(-1)
    return out


def chat_rows(tokenizer, chat: dict, fact: str) -> tuple[torch.Tensor, list[int], list[list[int]]]:
    """The chat's ids [T], the query rows predicting answer tokens, and for each row the
    positions of the fact's tokens equal to the token it predicts (maybe none)."""
    text = tokenizer.apply_chat_template(chat["messages"], tokenize=False)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, spans = enc["input_ids"], enc["offset_mapping"]
    f0 = text.index(fact)  # the fact sits in the prompt, before any answer repeating it
    answer = chat["messages"][-1]["content"]
    a0 = text.rindex(answer)
    fact_at = [p for p, (a, _) in enumerate(spans) if f0 <= a < f0 + len(fact)]
    answer_at = [p for p, (a, _) in enumerate(spans) if a0 <= a < a0 + len(answer)]
    rows = [t - 1 for t in answer_at]
    sources = [[p for p in fact_at if ids[p] == ids[t]] for t in answer_at]
    return torch.tensor(ids), rows, sources


@torch.no_grad()
def retrieval_profile(model, tokenizer, chats: list[tuple[dict, str]]) -> torch.Tensor:
    """[layers, query heads] mean attention of answer tokens on the fact tokens they repeat."""
    attns = [layer.self_attn for layer in model.model.layers]
    AttentionInterface.register(PROBE, probe_attention)
    before = model.config._attn_implementation
    model.config._attn_implementation = PROBE
    credit, count = 0.0, 0
    try:
        for chat, fact in chats:
            ids, rows, sources = chat_rows(tokenizer, chat, fact)
            keep = [i for i, s in enumerate(sources) if s]
            if not keep:
                continue
            for attn in attns:
                attn._probe_rows = torch.tensor([rows[i] for i in keep], device=model.device)
            model(ids[None].to(model.device), use_cache=False)
            mass = torch.stack(
                [
                    torch.stack(
                        [a._probe_weights[0, :, r, sources[i]].sum(-1) for r, i in enumerate(keep)]
                    ).sum(0)  # fmt: skip
                    for a in attns
                ]
            )  # [layers, H]
            credit, count = credit + mass, count + len(keep)
    finally:
        model.config._attn_implementation = before
        for attn in attns:
            attn.__dict__.pop("_probe_rows", None)
            attn.__dict__.pop("_probe_weights", None)
    if not count:
        raise ValueError("no answer token repeats a token of its fact: no profile to measure")
    return credit.cpu() / count


GATED = "ahn_gated"


def gated_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """DuoAttention's mix per KV head: `a` full attention + `1 - a` sinks + window
    (`module._gate` [Hkv] in [0, 1], `module._lossless` (sinks, window))."""
    full, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                     **kwargs)  # fmt: skip  # [B, T, H, D]
    sinks, window = module._lossless
    T = query.shape[-2]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    band = (j <= i) & ((i - j < window) | (j < sinks))  # [T, T]
    stream = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=band, scale=scaling, enable_gqa=True
    ).transpose(1, 2)
    gate = module._gate.repeat_interleave(query.shape[1] // key.shape[1])[:, None]  # [H, 1]
    return gate * full + (1 - gate) * stream, None


def learned_profile(
    model, tokenizer, chats, sinks: int, window: int, steps: int, lr: float = 0.02,
    penalty: float = 0.05, seed: int = 0,
) -> torch.Tensor:  # fmt: skip
    """DuoAttention's gates (arXiv 2410.10819), the base frozen: one gate a in [0, 1] per
    (layer, KV head) mixes full attention and sinks + window; trained on the chats' answer
    positions to keep the last hidden states of full attention (relative squared distance)
    with `penalty * mean(a)` pushing heads to the window. Returns [layers, Hkv]."""
    attns = [layer.self_attn for layer in model.model.layers]
    kv = model.config.num_key_value_heads
    gates = torch.nn.Parameter(torch.ones(len(attns), kv))
    optimizer = torch.optim.Adam([gates], lr=lr)
    for p in model.parameters():
        p.requires_grad_(False)
    AttentionInterface.register(GATED, gated_attention)
    before = model.config._attn_implementation
    rng = random.Random(seed)
    try:
        for step in range(steps):
            chat, fact = chats[rng.randrange(len(chats))]
            ids, rows, sources = chat_rows(tokenizer, chat, fact)
            rows = torch.tensor(rows)
            with torch.no_grad():
                model.config._attn_implementation = before
                want = model.model(ids[None]).last_hidden_state[0, rows]  # [R, hidden]
            model.config._attn_implementation = GATED
            for i, attn in enumerate(attns):
                attn._gate, attn._lossless = gates[i], (sinks, window)
            got = model.model(ids[None]).last_hidden_state[0, rows]
            distance = ((got - want) ** 2).sum(-1).mean() / (want**2).sum(-1).mean()
            loss = distance + penalty * gates.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                gates.clamp_(0.0, 1.0)
            if step % 10 == 0 or step == steps - 1:
                print(f"[ahn] gates step {step}: distance {distance.item():.4f}, "
                      f"mean gate {gates.mean().item():.3f}")  # fmt: skip
    finally:
        model.config._attn_implementation = before
        for attn in attns:
            for name in ("_gate", "_lossless"):
                attn.__dict__.pop(name, None)
    return gates.detach()


def kv_profile(per_query_head: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[layers, H] -> [layers, Hkv]: the largest score of the query heads sharing a KV head."""
    L, H = per_query_head.shape
    return per_query_head.view(L, kv_heads, H // kv_heads).amax(-1)


def training_chats(tokenizer, n: int, seq_len: int, min_back: int, seed: int):
    """`n` (chat, fact) pairs of `seq_len / 2 .. seq_len` tokens from the training documents."""
    from ahn.corpus import documents, fact_chat_and_fact

    rng, docs, made = random.Random(seed), documents("train"), []
    while len(made) < n:
        got = fact_chat_and_fact(rng.choice(docs), tokenizer, rng.randint(seq_len // 2, seq_len),
                                 min_back, rng)  # fmt: skip
        if got is not None:
            made.append(got)
    return made


def top_heads(profile: torch.Tensor, n: int | None) -> torch.Tensor:
    """The profile with every weight but the `n` largest set to 0 (None: all kept): the budget
    goes to those heads only, and layers left without one run without a store."""
    if n is None or n >= profile.numel():
        return profile
    keep = profile.flatten().topk(n).indices
    mask = torch.zeros(profile.numel(), dtype=torch.bool)
    mask[keep] = True
    return profile * mask.view_as(profile)


def plot(profile: list[list[float]], out: Path, title: str) -> Path:
    """The profile as a picture: layers down, KV heads across (the `plots` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4 + 0.5 * len(profile[0]), 0.18 * len(profile) + 1.5))
    image = ax.imshow(profile, aspect="auto", cmap="viridis")
    ax.set(xlabel="KV head", ylabel="layer", xticks=range(len(profile[0])))
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def add_arguments(parser) -> None:
    parser.add_argument("--base", required=True, help="base model directory or name")
    parser.add_argument("--output", required=True, help="the profile's json")
    parser.add_argument("--chats", type=int, default=32, help="fact chats of the training mix")
    parser.add_argument("--seq-len", type=int, default=2048, help="longest chat (tokens)")
    parser.add_argument("--min-back", type=int, default=512, help="fact at least N tokens back")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--kind",
        default="retrieval",
        choices=("retrieval", "learned"),
        help="attention on the fact (training-free) or DuoAttention's gates",
    )
    parser.add_argument("--steps", type=int, default=100, help="learned: gate training steps")
    parser.add_argument("--window", type=int, default=480, help="learned: the gates' window")
    parser.add_argument("--sinks", type=int, default=32, help="learned: the gates' sinks")
    parser.add_argument("--top", type=int, help="budget only to the N highest-scoring KV heads")
    parser.add_argument("--plot", help="also draw the profile into this png (plots extra)")


def run(args) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ahn.bases import resolve_base

    for flag in ("chats", "seq_len", "min_back", "top"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')}={getattr(args, flag)} must be >= 1")
    base = resolve_base(args.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    chats = training_chats(tokenizer, args.chats, args.seq_len, args.min_back, args.seed)
    if args.kind == "retrieval":
        per_head = retrieval_profile(model, tokenizer, chats)
        scores = kv_profile(per_head, model.config.num_key_value_heads)
    else:
        scores = per_head = learned_profile(model, tokenizer, chats, args.sinks, args.window,
                                            args.steps, seed=args.seed)  # fmt: skip
    profile = top_heads(scores, args.top)
    rounded = lambda x: [[round(float(w), 5) for w in row] for row in x]  # noqa: E731
    record = {
        "salient_heads": rounded(profile),
        "kind": args.kind,
        "top": args.top,
        "scores": rounded(scores),
        "query_heads": rounded(per_head),
        "chats": args.chats, "seq_len": args.seq_len, "min_back": args.min_back,
        "seed": args.seed, "base": str(args.base),
    }  # fmt: skip
    atomic.write_text(args.output, json.dumps(record, indent=1) + "\n")
    top = sorted(((w, i, h) for i, r in enumerate(record["salient_heads"])
                  for h, w in enumerate(r)), reverse=True)[:8]  # fmt: skip
    print(f"[ahn] {args.output}: top (layer, KV head): "
          + ", ".join(f"({i}, {h}) {w:.3f}" for w, i, h in top))  # fmt: skip
    if args.plot:
        print(f"[ahn] {plot(record['salient_heads'], Path(args.plot), f'{args.kind} profile')}")
    return 0
