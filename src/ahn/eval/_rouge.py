"""ROUGE-L F exactly as the `rouge` package (pltrdy, 1.0.1) computes it, which LongBench and
LV-Eval call through `Rouge().get_scores([pred], [ref], avg=True)["rouge-l"]["f"]`.

Quirks kept on purpose: sentences are split on "." (empty pieces dropped *before* whitespace
is squeezed, so a whitespace-only piece becomes the word ""), words are split on single spaces,
and the union LCS is a *set of words* (not of positions), as is the word count of each side.
The package reconstructs the LCS recursively and raises RecursionError on very long inputs
(which the benchmarks' bare `except` turns into 0.0); this port is iterative and scores them.
"""

from __future__ import annotations


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
