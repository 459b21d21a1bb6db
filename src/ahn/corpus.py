"""Real long texts every machine has: the Python standard library's documentation and sources.

Documents are the pydoc topics (`pydoc_data.topics`: the language reference in English prose,
joined into long documents) and the standard library's own `.py` files. Each document belongs
to `train` or `heldout` by a hash of its name, so held-out documents are never trained on,
on any machine with the same Python minor version.

`build_training_data` writes the training mix of docs/smollm2.md: plain long text, plus chat
samples in which a fact stated early in a document is asked for at the end (its answer lies
beyond the window), phrased with templates of their own (not the evaluation's passkey).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ahn import atomic

HELDOUT_PERCENT = 10
SKIP_DIRS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "__pycache__",
    "lib2to3",
    "turtledemo",
    "encodings",
}  # encodings: code-page tables, not text


@dataclass(frozen=True)
class Document:
    name: str  # "topics:NNN" or "src:relative/path.py"
    text: str

    @property
    def split(self) -> str:
        return split_of(self.name)


def split_of(name: str) -> str:
    """`heldout` for about `HELDOUT_PERCENT`% of names (by sha256), else `train`."""
    bucket = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100
    return "heldout" if bucket < HELDOUT_PERCENT else "train"


@functools.lru_cache(maxsize=4)
def stdlib_documents(min_chars: int = 8000, topic_chars: int = 60000) -> tuple[Document, ...]:
    """The documents of this Python's standard library, in a fixed order.

    Args:
        min_chars: source files shorter than this are left out.
        topic_chars: pydoc topics are joined, in alphabetical order, into documents of about this
            many characters (a topic is never split).
    """
    from pydoc_data.topics import topics

    docs: list[Document] = []
    part: list[str] = []
    for name in sorted(topics):
        part.append(topics[name].strip())
        if sum(map(len, part)) >= topic_chars:
            docs.append(Document(f"topics:{len(docs):03d}", "\n\n".join(part)))
            part = []
    if part:
        docs.append(Document(f"topics:{len(docs):03d}", "\n\n".join(part)))
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_DIRS & set(rel.parts[:-1]) or path.stat().st_size < min_chars:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append(Document(f"src:{rel.as_posix()}", text))
    return tuple(docs)


def documents(split: str, min_chars: int = 8000) -> list[Document]:
    """The `train` or `heldout` documents."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split={split!r} must be 'train' or 'heldout'")
    return [d for d in stdlib_documents(min_chars) if d.split == split]


# ---------------------------------------------------------------- facts asked for at the end

FIRST_NAMES = (
    "Ada Boris Clara Dmitri Elena Farid Greta Hugo Ines Jonas Keiko Luis Mira Nils Omar".split()
)
PLACES = "garage cellar attic library workshop office studio greenhouse lab warehouse".split()
OBJECTS = "blue vase|old boot|red teapot|top drawer|piano bench|flower pot|coat pocket".split("|")
COLOURS = "amber crimson indigo olive silver teal violet ochre".split()

# (fact, question, answer) templates; fields are filled by `_fields`.
FACT_TEMPLATES = (
    ("The access code for the {place} door is {number}.",
     "What is the access code for the {place} door?",
     "The access code for the {place} door is {number}."),
    ("{name} keeps the spare key in the {object}.",
     "Where does {name} keep the spare key?",
     "{name} keeps the spare key in the {object}."),
    ("Note for later: the order number of {name}'s parcel is {number}.",
     "What is the order number of {name}'s parcel?",
     "The order number of {name}'s parcel is {number}."),
    ("The {place} was painted {colour} last spring.",
     "What colour was the {place} painted?",
     "The {place} was painted {colour}."),
    ("{name} was born in the year {year}.",
     "In which year was {name} born?",
     "{name} was born in {year}."),
)  # fmt: skip


def _fields(rng: random.Random) -> dict[str, str]:
    return {
        "name": rng.choice(FIRST_NAMES),
        "place": rng.choice(PLACES),
        "object": rng.choice(OBJECTS),
        "colour": rng.choice(COLOURS),
        "number": str(rng.randint(1000, 99999)),
        "year": str(rng.randint(1700, 2020)),
    }


PROMPT_HEAD = "Read this document."
TEMPLATE_ALLOWANCE = 32  # tokens of the chat template around the two turns


def fact_chat(doc: Document, tokenizer, n_tokens: int, min_back: int, rng) -> dict | None:
    """A chat sample of about `n_tokens` tokens: a slice of `doc` with one fact inserted at least
    `min_back` tokens before the question at its end. None if `doc` is too short."""
    made = fact_chat_and_fact(doc, tokenizer, n_tokens, min_back, rng)
    return None if made is None else made[0]


def fact_chat_and_fact(doc: Document, tokenizer, n_tokens: int, min_back: int, rng):
    """`fact_chat` and the fact's sentence in it: (chat, fact) or None."""
    ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
    fields = _fields(rng)
    fact, question, answer = (t.format(**fields) for t in rng.choice(FACT_TEMPLATES))
    words = f"{PROMPT_HEAD}\n{fact}\n\n\n{question}{answer}"
    budget = n_tokens - len(tokenizer(words)["input_ids"]) - TEMPLATE_ALLOWANCE
    if len(ids) < budget or budget <= min_back:
        return None
    start = rng.randint(0, len(ids) - budget)
    piece = ids[start : start + budget]
    at = rng.randint(0, budget - min_back)  # the fact's place in the slice
    before, after = tokenizer.decode(piece[:at]), tokenizer.decode(piece[at:])
    context = f"{before}\n{fact}\n{after}"
    prompt = f"{PROMPT_HEAD}\n\n{context}\n\n{question}"
    chat = {"messages": [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": answer}]}  # fmt: skip
    return chat, fact


def text_pieces(doc: Document, tokenizer, n_tokens: int) -> list[dict]:
    """`doc` cut into consecutive `{"text"}` pieces of `n_tokens` tokens (a shorter tail is kept
    when it has at least half of them)."""
    ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
    pieces = [ids[a : a + n_tokens] for a in range(0, len(ids), n_tokens)]
    return [{"text": tokenizer.decode(p)} for p in pieces if len(p) >= n_tokens // 2]


def build_training_data(
    tokenizer,
    output: str | Path,
    seq_len: int = 2048,
    chats: int = 400,
    min_back: int = 512,
    seed: int = 0,
    docs: list[Document] | None = None,
    plain_pieces: int | None = None,
) -> dict:
    """Write `output` (jsonl): the plain `seq_len`-token pieces of the training documents (all, or
    `plain_pieces` of them drawn at random) and `chats` fact chats of `seq_len / 2 .. seq_len`
    tokens, shuffled (`docs`: other documents than the training split). Returns counts."""
    rng = random.Random(seed)
    docs = documents("train") if docs is None else docs
    plain = [p for d in docs for p in text_pieces(d, tokenizer, seq_len)]
    if plain_pieces is not None:
        plain = rng.sample(plain, min(plain_pieces, len(plain)))
    qa: list[dict] = []
    while len(qa) < chats:
        sample = fact_chat(rng.choice(docs), tokenizer, rng.randint(seq_len // 2, seq_len),
                           min_back, rng)  # fmt: skip
        if sample is not None:
            qa.append(sample)
    records = plain + qa
    rng.shuffle(records)
    atomic.write_text(output, "".join(json.dumps(r) + "\n" for r in records))
    return {"documents": len(docs), "plain": len(plain), "chats": len(qa), "output": str(output)}


def write_documents(split: str, output: str | Path) -> int:
    """The documents of `split` as `{"name", "text"}` json lines (for `ahn eval --data`)."""
    docs = documents(split)
    atomic.write_text(output, "".join(json.dumps({"name": d.name, "text": d.text}) + "\n"
                                      for d in docs))  # fmt: skip
    return len(docs)


def add_arguments(parser) -> None:
    parser.add_argument("--output", required=True, help="jsonl file to write")
    parser.add_argument(
        "--split",
        choices=("train-mix", "heldout", "train"),
        default="train-mix",
        help="train-mix: the training data (plain pieces + fact chats, needs --base); "
        "heldout / train: the documents of that split, one per line",
    )
    parser.add_argument("--base", help="base (for its tokenizer): a name or a dir")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per training sample")
    parser.add_argument("--chats", type=int, default=1000, help="fact chats to mix in")
    parser.add_argument("--min-back", type=int, default=512, help="fact at least N tokens back")
    parser.add_argument(
        "--plain", type=int, default=None, help="plain text pieces to mix in (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from transformers import AutoTokenizer

    from ahn.bases import resolve_base

    if args.split != "train-mix":
        print(json.dumps({"documents": write_documents(args.split, args.output)}))
        return 0
    if args.base is None:
        raise ValueError("--split train-mix tokenizes: give --base (a name or a directory)")
    for name in ("seq_len", "chats", "min_back", "plain"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if args.min_back >= args.seq_len // 2 - 64:
        raise ValueError(f"--min-back={args.min_back} must be < seq-len / 2 - 64")
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(args.base))
    counts = build_training_data(
        tokenizer,
        args.output,
        args.seq_len,
        args.chats,
        args.min_back,
        args.seed,
        plain_pieces=args.plain,
    )
    print(json.dumps(counts))
    return 0
