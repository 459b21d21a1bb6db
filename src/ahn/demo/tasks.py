"""The demo's long-range task: a few key -> value facts stated early, asked about at the end.

A sequence of `length` words reads like

    <bos> the cold wind ... # fox red ... the river ... # owl blue ... ? owl blue ? fox red

- Filler words follow a fixed sparse bigram grammar (`GRAMMAR_SEED`): predictable from the
  previous word alone, so the sliding window models them as well as full attention does.
- `num_facts` (1..4) facts `# key value` sit at random places in the first part of the text.
- The text ends with one query `? key value` per fact, in random order. Predicting `value`
  after `? key` needs the fact, which lies at least `min_distance` tokens back: beyond any
  demo window `<= min_distance`, so sinks + window cannot see it while full attention can.

This is a small key -> value table written early and read late, with distinctive keys (a
compressed memory can hold a handful of such facts; it cannot hold hundreds of random needles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
FACT, QUERY = "#", "?"
KEYS = (
    "cat", "dog", "fox", "owl", "bee", "elk", "yak", "ant",
    "bat", "cow", "eel", "hen", "pig", "ram", "emu", "gnu",
)  # fmt: skip
VALUES = (
    "red", "blue", "green", "gold", "pink", "gray", "teal", "jade",
    "navy", "rose", "ruby", "sand", "plum", "mint", "rust", "snow",
)  # fmt: skip
FILLER = (
    "the", "a", "old", "new", "cold", "warm", "wind", "river", "stone", "tree", "house",
    "road", "light", "rain", "field", "hill", "man", "child", "bird", "boat", "sat", "ran",
    "saw", "made", "near", "under", "over", "with", "and", "then", "slowly", "again",
)  # fmt: skip
VOCAB: tuple[str, ...] = SPECIALS + (FACT, QUERY) + KEYS + VALUES + FILLER
TOKEN_ID: dict[str, int] = {word: i for i, word in enumerate(VOCAB)}
GRAMMAR_SEED = 1234
SUCCESSORS = 4


@dataclass(frozen=True)
class TaskConfig:
    """Shape of the generated sequences.

    Args:
        length: tokens per sequence, `<bos>` included.
        max_facts: facts per sequence are drawn uniformly from `1..max_facts`.
        min_distance: every fact ends at least this many tokens before the first final query.
        lead: filler tokens after `<bos>` before the first possible fact, so that sinks up to
            `lead + 1` tokens never hold a fact.
        repeats: each fact is stated `1..repeats` times (drawn per fact), in random order.
        extra_queries: queries scattered after the facts at any distance (training only: they
            give the base many more, and easier, retrieval examples; evaluation uses 0).
    """

    length: int = 192
    max_facts: int = 1
    min_distance: int = 48
    lead: int = 8
    repeats: int = 3
    extra_queries: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.max_facts <= len(KEYS):
            raise ValueError(f"max_facts={self.max_facts} must be in 1..{len(KEYS)}")
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats} must be >= 1")
        if self.extra_queries < 0:
            raise ValueError(f"extra_queries={self.extra_queries} must be >= 0")
        if self.min_distance < 1:
            raise ValueError(f"min_distance={self.min_distance} must be >= 1")
        need = 1 + self.lead + 3 * self.max_facts * (self.repeats + 1) + self.min_distance
        if self.length < need:
            raise ValueError(
                f"length={self.length} is too short for max_facts={self.max_facts}, "
                f"repeats={self.repeats}, min_distance={self.min_distance} and lead={self.lead}; "
                f"use length >= {need}"
            )


@dataclass
class Batch:
    """Token ids and where the answers are.

    Attributes:
        input_ids: `[B, T]` token ids.
        answer_mask: `[B, T]` True at positions whose *next* token is a queried value, i.e.
            the logits there must predict the answer.
        fact_distance: `[B, T]` distance from such a position back to its fact's value token
            (0 elsewhere).
    """

    input_ids: torch.Tensor
    answer_mask: torch.Tensor
    fact_distance: torch.Tensor


def bigram_table() -> np.ndarray:
    """The filler grammar: `[F, SUCCESSORS]` indices into `FILLER` and their probabilities."""
    rng = np.random.default_rng(GRAMMAR_SEED)
    nexts = np.stack([rng.choice(len(FILLER), SUCCESSORS, replace=False) for _ in FILLER])
    probs = rng.dirichlet(np.ones(SUCCESSORS), size=len(FILLER))
    return nexts, probs


_NEXTS, _PROBS = bigram_table()


def _filler(rng: np.random.Generator, n: int, first: int) -> list[int]:
    words, word = [], first
    for _ in range(n):
        words.append(word)
        word = int(_NEXTS[word, rng.choice(SUCCESSORS, p=_PROBS[word])])
    return words


def sample(rng: np.random.Generator, task: TaskConfig) -> tuple[list[str], list[int], list[int]]:
    """One sequence.

    Returns:
        words: `task.length` words.
        answer_positions: positions `p` where `words[p + 1]` is a queried value.
        distances: for each answer position, `p` minus the position of the value in the latest
            statement of its fact.
    """
    k = int(rng.integers(1, task.max_facts + 1))
    keys = rng.choice(len(KEYS), k, replace=False)
    values = rng.integers(0, len(VALUES), k)
    facts = rng.permutation(np.repeat(np.arange(k), rng.integers(1, task.repeats + 1, k)))
    query_start = task.length - 3 * k
    first = 1 + task.lead
    fact_end = query_start - task.min_distance  # statements occupy [first, fact_end)
    n = len(facts)
    slots = np.sort(rng.choice(fact_end - first - 3 * n + 1, n, replace=False))
    statements = [(first + int(s) + 3 * j, int(facts[j])) for j, s in enumerate(slots)]
    fill = [FILLER[i] for i in _filler(rng, task.length, int(rng.integers(len(FILLER))))]
    words = ["<bos>"] + fill[: task.length - 1]
    for start, i in statements:
        words[start : start + 3] = [FACT, KEYS[keys[i]], VALUES[values[i]]]
    queries = [(query_start + 3 * j, int(i)) for j, i in enumerate(rng.permutation(k))]
    queries += _extra_queries(rng, task.extra_queries, statements, query_start)
    answer_positions, distances = [], []
    for q, i in sorted(queries):
        words[q : q + 3] = [QUERY, KEYS[keys[i]], VALUES[values[i]]]
        latest = max(start for start, j in statements if j == i and start < q)
        answer_positions.append(q + 1)
        distances.append(q + 1 - (latest + 2))
    return words, answer_positions, distances


def _extra_queries(rng, n: int, statements: list[tuple[int, int]], end: int):
    """Up to `n` (position, fact) pairs in the free space between the first statement and
    `end`, each about a fact stated before it."""
    taken = {p for s, _ in statements for p in range(s, s + 3)}
    queries = []
    for q in rng.integers(statements[0][0] + 3, end - 2, size=n):
        span = range(int(q), int(q) + 3)
        if taken.isdisjoint(span):
            taken.update(span)
            known = sorted({i for s, i in statements if s + 3 <= q})
            queries.append((int(q), int(rng.choice(known))))
    return queries


def make_batch(batch_size: int, task: TaskConfig, seed: int) -> Batch:
    """`batch_size` sequences, a pure function of `(task, seed)`."""
    rng = np.random.default_rng(seed)
    ids = torch.zeros(batch_size, task.length, dtype=torch.long)
    mask = torch.zeros(batch_size, task.length, dtype=torch.bool)
    dist = torch.zeros(batch_size, task.length, dtype=torch.long)
    for b in range(batch_size):
        words, positions, distances = sample(rng, task)
        ids[b] = torch.tensor([TOKEN_ID[w] for w in words])
        mask[b, positions] = True
        dist[b, positions] = torch.tensor(distances)
    return Batch(ids, mask, dist)
