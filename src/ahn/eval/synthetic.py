"""Synthetic long-context tasks generated offline with the model's own tokenizer.

Passkey retrieval (the classic prompt), RULER's needle-in-a-haystack family, variable tracking
and key-value retrieval are text tasks; `copy` works on token ids only, for tiny models without
a real tokenizer. Every sample is deterministic for (seed, task, length, depth, index), its
prompt has at most `length - max_new_tokens` tokens, and its answers are in the prompt.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from ahn.eval import haystack as hs
from ahn.eval.metrics import ruler_postprocess, string_match_all, string_match_part
from ahn.eval.sample import Sample, chat_prompt

__all__ = ["Sample", "generate"]

NIAH_TEMPLATE = (
    "Some special magic {kind} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {kind} afterwards.\n{context}\n"
    "What are all the special magic {kind} for {query} mentioned in the provided text?"
)
NIAH_ANSWER = " The special magic {kind} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {kind} for {key} is: {value}."
PASSKEY_TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
    "them. I will quiz you about the important information there."
)
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
    "{context}\nQuestion: Find all variables that are assigned the value {value} in the text "
    "above."
)
VT_ANSWER = (
    " Answer: According to the chain(s) of variable assignment in the text above, "
    "{n} variables are assigned the value {value}, they are: "
)
KV_TEMPLATE = (
    "Extract the value corresponding to the specified key in the JSON object below.\n\n"
    'JSON data:\n{context}\n\nKey: "{key}"\n'
)
KV_ANSWER = "The value associated with the specified key is: "


@dataclass(frozen=True)
class TextTask:
    """A text task: `draft(rng, depth, haystack, kind, taken)` returns `(build, answers)`, where
    `build(n)` gives the (question, answer prefix) with `n` units of the `Haystack`."""

    draft: Callable
    metric: str = "string_match_all"
    max_new_tokens: int = 128
    haystack: str = "noise"  # "noise", "essay" (a user text file) or "needle"
    kind: str = "numbers"  # value kind of the needles of NIAH tasks


def _noise(rng: random.Random, essay: list[str] | None, kind: str, taken: set[str]):
    return hs.Haystack(lambda n: [hs.NOISE] * n, "\n")


def _essay(rng: random.Random, essay: list[str] | None, kind: str, taken: set[str]):
    if not essay:
        raise ValueError("this task needs an essay haystack: pass haystack_text (a long text)")
    return hs.Haystack(lambda n: [essay[i % len(essay)] for i in range(n)], " ")


def _needle(rng: random.Random, essay: list[str] | None, kind: str, taken: set[str]):
    """Distractor needles: the haystack made of needles with keys not in `taken` (the keys
    of the task's own needles, filled in by its draft), RULER's "needle" haystack."""
    made: list[str] = []
    key_kind = "uuids" if kind == "uuids" else "words"

    def units(n: int) -> list[str]:
        while len(made) < n:
            key, value = hs.KINDS[key_kind](rng), hs.KINDS[kind](rng)
            if key in taken:
                continue
            made.append(NEEDLE.format(kind=kind, key=key, value=value))
        return made[:n]

    return hs.Haystack(units, "\n")


HAYSTACKS = {"noise": _noise, "essay": _essay, "needle": _needle}


def _niah(n_keys: int = 1, n_values: int = 1, n_queries: int = 1, key_kind: str = "words"):
    """RULER NIAH: `n_keys` keys (distractors beyond the queried ones), `n_values` values per
    queried key, `n_queries` keys asked for. The first needle sits at `depth`. With a single
    answer the question is in the singular, as RULER words it."""
    singular = n_values * n_queries == 1

    def draft(rng: random.Random, depth: float, hay: hs.Haystack, kind: str, taken: set[str]):
        keys = hs.distinct(key_kind, rng, max(n_keys, n_queries))
        taken.update(keys)
        values = [hs.distinct(kind, rng, n_values) for _ in keys]
        needles = [
            NEEDLE.format(kind=kind, key=k, value=v)
            for k, vs in zip(keys, values, strict=True)
            for v in vs
        ]
        depths = [depth] + [rng.random() for _ in needles[1:]]
        queried = keys[:n_queries]
        query = queried[0] if n_queries == 1 else ", ".join(queried[:-1]) + ", and " + queried[-1]
        answers = [v for vs in values[:n_queries] for v in vs]

        def build(n: int) -> tuple[str, str]:
            context = hay.text(n, needles, depths)
            if singular:
                question = _singular(NIAH_TEMPLATE).format(
                    kind=kind[:-1], context=context, query=query
                )
                return question, _singular(NIAH_ANSWER).format(kind=kind[:-1], query=query)
            question = NIAH_TEMPLATE.format(kind=kind, context=context, query=query)
            return question, NIAH_ANSWER.format(kind=kind, query=query)

        return build, answers

    return draft


def _singular(template: str) -> str:
    """RULER's rewording for one answer (its exact, blunt string replacements)."""
    for plural, one in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        template = template.replace(plural, one)
    return template


def _passkey(rng: random.Random, depth: float, hay: hs.Haystack, kind: str, taken: set[str]):
    """The classic prompt (Landmark Attention): task, filler, the key line, filler, question,
    one per line."""
    passkey = str(rng.randint(1, 50000))
    info = f"The pass key is {passkey}. Remember it. {passkey} is the pass key."

    def build(n: int) -> tuple[str, str]:
        filler, k = hay.units(n), round(depth * n)
        lines = [PASSKEY_TASK, " ".join(filler[:k]), info, " ".join(filler[k:])]
        return "\n".join(lines + ["What is the pass key?"]), " The pass key is"

    return build, [passkey]


def _variable_tracking(hops: int = 4):
    """RULER vt, one chain: VAR X0 = value, VAR X1 = VAR X0, ...; the first at `depth`."""

    def draft(rng: random.Random, depth: float, hay: hs.Haystack, kind: str, taken: set[str]):
        names: list[str] = []
        while len(names) < hops + 1:
            name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
            if name not in names:
                names.append(name)
        value = str(rng.randint(10000, 99999))
        chain = [f"VAR {names[0]} = {value}"]
        chain += [f"VAR {names[i]} = VAR {names[i - 1]} " for i in range(1, hops + 1)]
        depths = sorted([depth] + [rng.uniform(depth, 1.0) for _ in chain[1:]])

        def build(n: int) -> tuple[str, str]:
            context = hay.text(n, chain, depths)
            question = VT_TEMPLATE.format(context=context, value=value)
            return question, VT_ANSWER.format(value=value, n=len(names))

        return build, names

    return draft


def _kv_retrieval(rng: random.Random, depth: float, hay: hs.Haystack, kind: str, taken: set[str]):
    """LongChat / InfiniteBench style: a JSON object of uuid pairs, one key asked for."""
    key, value = hs.uuid_value(rng), hs.uuid_value(rng)
    pairs: list[str] = []

    def build(n: int) -> tuple[str, str]:
        while len(pairs) < n:
            pairs.append(json.dumps(hs.uuid_value(rng)) + ": " + json.dumps(hs.uuid_value(rng)))
        items = hs.insert_at_depths(pairs[:n], [f"{json.dumps(key)}: {json.dumps(value)}"], [depth])
        return KV_TEMPLATE.format(context="{" + ", ".join(items) + "}", key=key), KV_ANSWER

    return build, [value]


TEXT_TASKS: dict[str, TextTask] = {
    "passkey": TextTask(_passkey, max_new_tokens=16),
    "niah_single_1": TextTask(_niah()),
    "niah_single_2": TextTask(_niah(), haystack="essay"),
    "niah_single_3": TextTask(_niah(), haystack="essay", kind="uuids"),
    "niah_multikey_1": TextTask(_niah(n_keys=4), haystack="essay"),
    "niah_multikey_2": TextTask(_niah(), haystack="needle"),
    "niah_multikey_3": TextTask(_niah(key_kind="uuids"), haystack="needle", kind="uuids"),
    "niah_multivalue": TextTask(_niah(n_values=4), haystack="essay"),
    "niah_multiquery": TextTask(_niah(n_keys=4, n_queries=4), haystack="essay"),
    "niah_noise_multikey": TextTask(_niah(n_keys=4)),
    "niah_noise_multivalue": TextTask(_niah(n_values=4)),
    "niah_noise_multiquery": TextTask(_niah(n_keys=4, n_queries=4)),
    "vt": TextTask(_variable_tracking(), max_new_tokens=30),
    "kv_retrieval": TextTask(_kv_retrieval, max_new_tokens=64),
}
TOKEN_TASKS = ("copy",)
TASKS = tuple(TEXT_TASKS) + TOKEN_TASKS
# Task groups usable wherever task names are: RULER's NIAH + vt (the essay ones need a text),
# and the variants that need no text.
GROUPS = {
    "ruler": (
        "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
        "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt",
    ),
    "ruler_noise": (
        "niah_single_1", "niah_multikey_2", "niah_multikey_3", "niah_noise_multikey",
        "niah_noise_multivalue", "niah_noise_multiquery", "vt",
    ),
}  # fmt: skip


def _count_tokens(tokenizer) -> Callable[[str], int]:
    return lambda text: len(tokenizer.encode(text))


def _chat_wrapper(tokenizer, chat: bool | None) -> Callable[[str, str], str]:
    if chat is None:
        chat = bool(getattr(tokenizer, "chat_template", None))
    if not chat:
        return lambda question, answer_prefix: question + answer_prefix
    return lambda question, answer_prefix: chat_prompt(tokenizer, question) + answer_prefix.lstrip()


def _essay_units(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [s.strip() + "." for s in text.replace("\n", " ").split(". ") if s.strip()]


def generate(
    task: str,
    tokenizer=None,
    length: int = 4096,
    depth: float = 0.5,
    index: int = 0,
    seed: int = 42,
    haystack_text: str | None = None,
    vocab_size: int | None = None,
    chat: bool | None = None,
) -> Sample:
    """One sample of `task` with a prompt of at most `length - max_new_tokens` tokens.

    Args:
        task: a name in `TASKS`.
        tokenizer: a transformers tokenizer (text tasks; its `encode` counts tokens).
        length: the token budget of prompt + answer (RULER's max_seq_length).
        depth: where the (first) needle goes, 0 = start of the haystack, 1 = end.
        index, seed: identify the sample; the same arguments give the same sample.
        haystack_text: a long text whose sentences form the "essay" haystack.
        vocab_size: ids are drawn below it (token tasks).
        chat: put the question in a user turn of the tokenizer's chat template and the answer
            prefix after it, as RULER does for chat models (`None`: when it has a template).
    Returns:
        a `Sample`.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is unknown; valid tasks: {', '.join(TASKS)}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth={depth} must be in [0, 1]")
    rng = hs.rng_for(seed, task, length, depth, index)
    if task == "copy":
        if vocab_size is None:
            raise ValueError("task 'copy' needs vocab_size")
        return _copy(rng, length, depth, index, vocab_size)
    if tokenizer is None:
        raise ValueError(f"task {task!r} needs a tokenizer")
    spec = TEXT_TASKS[task]
    taken: set[str] = set()
    hay = HAYSTACKS[spec.haystack](rng, _essay_units(haystack_text), spec.kind, taken)
    build, answers = spec.draft(rng, depth, hay, spec.kind, taken)
    target = length - spec.max_new_tokens
    wrap = _chat_wrapper(tokenizer, chat)
    prompt, n_units = hs.fit_to_length(lambda n: wrap(*build(n)), _count_tokens(tokenizer), target)
    return Sample(
        task=task,
        index=index,
        length=length,
        depth=depth,
        input_ids=list(tokenizer.encode(prompt)),
        answers=answers,
        max_new_tokens=spec.max_new_tokens,
        metric=spec.metric,
        prompt=prompt,
        meta={"haystack_units": n_units},
    )


def _copy(rng: random.Random, length: int, depth: float, index: int, vocab_size: int) -> Sample:
    """Induction / copy on ids: a random `key` segment sits at `depth` in random filler; the
    prompt ends with its first half and the answer is its second half."""
    half = 8
    if length < 4 * half:
        raise ValueError(f"length {length} is too short for 'copy' (minimum {4 * half})")
    key = [rng.randrange(vocab_size) for _ in range(2 * half)]
    filler = [rng.randrange(vocab_size) for _ in range(length - 4 * half)]
    at = round(depth * len(filler))
    ids = filler[:at] + key + filler[at:] + key[:half]
    return Sample(
        task="copy",
        index=index,
        length=length,
        depth=depth,
        input_ids=ids,
        answers=[],
        max_new_tokens=half,
        metric="token_accuracy",
        answer_ids=key[half:],
    )


def token_accuracy(output_ids: list[int], answer_ids: list[int]) -> float:
    """Share of answer positions where the generated id equals the expected one."""
    hits = sum(a == b for a, b in zip(output_ids, answer_ids, strict=False))
    return hits / len(answer_ids)


SCORERS = {
    "string_match_all": lambda text, sample: string_match_all([text], [sample.answers]) / 100,
    "string_match_part": lambda text, sample: string_match_part([text], [sample.answers]) / 100,
}


def score(sample: Sample, output_ids: list[int], tokenizer=None) -> tuple[float, str]:
    """Score of one generation in [0, 1] and the prediction text it was computed from.

    Text tasks decode with `tokenizer`, apply RULER's post-processing and its metric;
    token tasks compare ids.
    """
    if sample.metric == "token_accuracy":
        return token_accuracy(output_ids, sample.answer_ids), " ".join(map(str, output_ids))
    text = ruler_postprocess(tokenizer.decode(output_ids, skip_special_tokens=True))
    return SCORERS[sample.metric](text, sample), text
