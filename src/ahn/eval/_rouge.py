"""ROUGE-L F exactly as the `rouge` package (pltrdy, 1.0.1) computes it, which LongBench and
LV-Eval call through `Rouge().get_scores([pred], [ref], avg=True)["rouge-l"]["f"]`; and
ROUGE-Lsum as Google's `rouge_score` computes it (InfiniteBench's summarisation).

Quirks kept on purpose: sentences are split on "." (empty pieces dropped *before* whitespace
is squeezed, so a whitespace-only piece becomes the word ""), words are split on single spaces,
and the union LCS is a *set of words* (not of positions), as is the word count of each side.
The package reconstructs the LCS recursively and raises RecursionError on very long inputs
(which the benchmarks' bare `except` turns into 0.0); this port is iterative and scores them.
"""

from __future__ import annotations

import re
from collections import Counter


def _sentences(text: str) -> list[str]:
    return [" ".join(piece.split()) for piece in text.split(".") if len(piece) > 0]


def _words(sentences: list[str]) -> list[str]:
    return [word for sentence in sentences for word in sentence.split(" ")]


def _lcs_words(x: list[str], y: list[str]) -> set[str]:
    """Words of the LCS of `x` and `y`, backtracked with the package's tie-breaking."""
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            if x[i - 1] == y[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    words, i, j = set(), len(x), len(y)
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            words.add(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return words


def rouge_l_f(hypothesis: str, reference: str) -> float:
    """ROUGE-L (summary level) F of one hypothesis against one reference.

    Raises:
        ValueError: when either side has no sentence (the package raises too; callers map it
            to 0.0 as the official metric code does).
    """
    hyp, ref = _sentences(hypothesis), _sentences(reference)
    if not hyp or not ref:
        raise ValueError("ROUGE needs at least one sentence on each side")
    m = len(set(_words(ref)))
    n = len(set(_words(hyp)))
    union: set[str] = set()
    for ref_sentence in ref:
        ref_words = ref_sentence.split(" ")
        for hyp_sentence in hyp:
            union |= _lcs_words(ref_words, hyp_sentence.split(" "))
    r_lcs, p_lcs = len(union) / m, len(union) / n
    return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))


def _google_tokens(text: str) -> list[str]:
    """`rouge_score`'s default tokenizer (no stemming): lower case, alphanumeric runs."""
    return [t for t in re.split(r"\s+", re.sub(r"[^a-z0-9]+", " ", text.lower())) if t]


def _lcs_indices(ref: list[str], can: list[str]) -> list[int]:
    """Indices into `ref` of one LCS with `can`, backtracked as `rouge_score` does."""
    table = [[0] * (len(can) + 1) for _ in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        for j in range(1, len(can) + 1):
            if ref[i - 1] == can[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    out, i, j = [], len(ref), len(can)
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            out.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return out


def rouge_lsum_f(prediction: str, target: str) -> float:
    """ROUGE-Lsum F as Google's `rouge_score` (behind HF `evaluate.load("rouge")`) computes
    it: sentences are the non-empty lines, summary-level union LCS, each token counted at
    most as often as it occurs on both sides."""
    refs = [_google_tokens(s) for s in target.split("\n") if s]
    cans = [_google_tokens(s) for s in prediction.split("\n") if s]
    m, n = sum(map(len, refs)), sum(map(len, cans))
    if not m or not n:
        return 0.0
    left_r = Counter(t for s in refs for t in s)
    left_c = Counter(t for s in cans for t in s)
    hits = 0
    for ref in refs:
        union = sorted(set().union(*(_lcs_indices(ref, can) for can in cans)))
        for token in (ref[i] for i in union):
            if left_c[token] > 0 and left_r[token] > 0:
                hits += 1
                left_c[token] -= 1
                left_r[token] -= 1
    precision, recall = hits / n, hits / m
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
