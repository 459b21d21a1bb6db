"""Metric functions of LongBench, LV-Eval and RULER, under their official names.

Every LongBench / LV-Eval metric has the official signature
`fn(prediction, ground_truth, **kwargs) -> float` and the official semantics, quirks included
(see each docstring). ROUGE-L and `fuzz.ratio` come from the official scorers' libraries
(`rouge`, `fuzzywuzzy`, in the `eval` extra) when installed; otherwise from local ports (a port
of `rouge` in `ahn.eval._rouge`, difflib's `SequenceMatcher` as fuzzywuzzy uses it without
python-Levenshtein), tested equal to them. `scorers()` says which ran (results.json keeps it).
Chinese word segmentation uses `jieba` (imported when first needed).
"""

from __future__ import annotations

import functools
import importlib
import re
import string
import warnings
from collections import Counter
from difflib import SequenceMatcher

from ahn.eval._rouge import rouge_l_f

ZH_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟"
    "〰〾〿–—‘’‛“”„‟…‧﹏."
)
# LV-Eval's keyword blacklists: words that do not count as recalled answer keywords.
ABANDON_WORDS_EN = frozenset(
    "and to of in her was with for it from is that his he by she they or at because be on are "
    "their what as had were about being this who but have has when which does".split()
)
ABANDON_WORDS_ZH = frozenset(
    "的 和 是 等 在 年 可以 为 与 ‰ 了 或 一种 月 c 至 日 有 "
    "进行 于 不 中 × 根据 小 由 亩 也 要 指 法 会 元 主要 以及 "
    "通过 首先 对 然后 号 以 所 后 丁 包括 无 将 用 能 形 方面 因素 "
    "位于 而 从 到 一定 用于 但 使用 让 具有 并 亿元 万元 上 类 基于 "
    "才 来 地 片 其他 个 或者 变得 时 给 你 使 条 受 已经 带 度".split()
)


def cut(text: str) -> list[str]:
    """Chinese word segmentation as the benchmarks do it: `jieba.cut(text, cut_all=False)`."""
    try:
        import jieba
    except ImportError as err:
        raise ImportError(
            "Chinese metrics need jieba (the official segmenter): pip install jieba"
        ) from err
    jieba.setLogLevel(60)
    return list(jieba.cut(text, cut_all=False))


def normalize_answer(s: str) -> str:
    """Lower case, drop ASCII punctuation, the articles a/an/the, and extra whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def normalize_zh_answer(s: str) -> str:
    """Lower case, drop ASCII and Chinese punctuation and all whitespace."""
    punctuation = set(string.punctuation + ZH_PUNCTUATION)
    return "".join("".join(ch for ch in s.lower() if ch not in punctuation).split())


def f1_score(prediction: list, ground_truth: list, **kwargs) -> float:
    """Bag-of-tokens F1 between two token lists (0 when nothing is shared)."""
    num_same = sum((Counter(prediction) & Counter(ground_truth)).values())
    if num_same == 0:
        return 0
    precision = num_same / len(prediction)
    recall = num_same / len(ground_truth)
    return (2 * precision * recall) / (precision + recall)


def _en_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def _zh_tokens(text: str) -> list[str]:
    tokens = (normalize_zh_answer(token) for token in cut(text))
    return [token for token in tokens if len(token) > 0]


def qa_f1_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """Token F1 after `normalize_answer` (LongBench, LV-Eval)."""
    return f1_score(_en_tokens(prediction), _en_tokens(ground_truth))


def qa_f1_zh_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """Token F1 over jieba words after `normalize_zh_answer`, empty words dropped."""
    return f1_score(_zh_tokens(prediction), _zh_tokens(ground_truth))


def _keyword_recall(prediction_tokens, gold_tokens, blacklist) -> float:
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    num_same = sum(n for token, n in common.items() if token not in blacklist)
    return num_same / len(gold_tokens)


def qa_f1_score_with_gold_ans(prediction: str, ground_truth: str, **kwargs) -> float:
    """LV-Eval: `qa_f1_score`, but 0 when the recall of the answer keywords `gold_ans` is < 0.2.

    Quirk: blacklisted words (`ABANDON_WORDS_EN`) are removed from the matches but still
    count in the denominator (all keyword tokens). Without `gold_ans` it is plain F1.
    """
    prediction_tokens = _en_tokens(prediction)
    gold_ans = kwargs.get("gold_ans")
    if gold_ans:
        recall = _keyword_recall(prediction_tokens, _en_tokens(gold_ans), ABANDON_WORDS_EN)
        if recall < 0.2:
            return 0.0
    return f1_score(prediction_tokens, _en_tokens(ground_truth))


def qa_f1_zh_score_with_gold_ans(prediction: str, ground_truth: str, **kwargs) -> float:
    """LV-Eval: `qa_f1_zh_score`, but 0 when the keyword recall is < 0.4.

    Quirk: without `gold_ans` the ground truth itself serves as the keywords (unlike English).
    """
    prediction_tokens = _zh_tokens(prediction)
    ground_truth_tokens = _zh_tokens(ground_truth)
    gold_ans = kwargs.get("gold_ans") or ground_truth
    if gold_ans:
        recall = _keyword_recall(prediction_tokens, _zh_tokens(gold_ans), ABANDON_WORDS_ZH)
        if recall < 0.4:
            return 0.0
    return f1_score(prediction_tokens, ground_truth_tokens)


def qa_f1_score_factrecall(prediction: str, ground_truth: str, **kwargs) -> float:
    """LV-Eval: recall of the ground-truth tokens in the prediction."""
    ground_truth_tokens = _en_tokens(ground_truth)
    common = Counter(_en_tokens(prediction)) & Counter(ground_truth_tokens)
    return sum(common.values()) / len(ground_truth_tokens)


def qa_f1_zh_score_factrecall(prediction: str, ground_truth: str, **kwargs) -> float:
    """LV-Eval: recall of the ground-truth jieba words in the prediction."""
    ground_truth_tokens = _zh_tokens(ground_truth)
    common = Counter(_zh_tokens(prediction)) & Counter(ground_truth_tokens)
    return sum(common.values()) / len(ground_truth_tokens)


@functools.cache
def _official(module: str):
    """The official scorers' library (`rouge`, `fuzzywuzzy.fuzz`) when installed (the `eval`
    extra), else None: the local port then runs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fuzzywuzzy: "using slow pure-python SequenceMatcher"
            return importlib.import_module(module)
    except ImportError:
        return None


def scorers() -> dict[str, str]:
    """Which implementation computes ROUGE and the fuzz ratio here (kept in results.json)."""
    from importlib.metadata import version

    def which(module, dist, port):
        return f"{dist} {version(dist)}" if _official(module) else port

    return {
        "rouge": which("rouge", "rouge", "ahn port of rouge 1.0.1 (ahn.eval._rouge)"),
        "fuzz": which("fuzzywuzzy.fuzz", "fuzzywuzzy", "ahn port of fuzzywuzzy (difflib)"),
    }


def rouge_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """ROUGE-L F of the `rouge` package (the port when it is not installed); 0.0 where the
    package raises (e.g. an empty prediction), as the official scorers do."""
    lib = _official("rouge")
    try:
        if lib is not None:
            return lib.Rouge().get_scores([prediction], [ground_truth], avg=True)["rouge-l"]["f"]
        return rouge_l_f(prediction, ground_truth)
    except Exception:  # the official code: `except: return 0.0`
        return 0.0


def rouge_zh_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """`rouge_score` over jieba words joined by spaces."""
    return rouge_score(" ".join(cut(prediction)), " ".join(cut(ground_truth)))


def rouge_zh_score_blacklist(prediction: str, ground_truth: str, **kwargs) -> float:
    """LV-Eval: `rouge_zh_score` after dropping `ABANDON_WORDS_ZH`.

    As in LV-Eval, the text is segmented, joined with spaces and segmented again before the
    words are normalised and filtered.
    """

    def filtered(text: str) -> str:
        tokens = (normalize_zh_answer(token) for token in cut(" ".join(cut(text))))
        return " ".join(token for token in tokens if token not in ABANDON_WORDS_ZH)

    return rouge_score(filtered(prediction), filtered(ground_truth))


def classification_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """LongBench (trec, lsht): 1 / (number of matched classes) if the true class is matched.

    Quirk kept: classes contained in the prediction are collected, then those that are a
    substring of the ground truth (but not equal to it) are removed *while iterating the same
    list*, so a removal skips the next element, which therefore stays in.
    Kwargs: `all_classes` (list of class names).
    """
    em_match_list = [name for name in kwargs["all_classes"] if name in prediction]
    for match_term in em_match_list:
        if match_term in ground_truth and match_term != ground_truth:
            em_match_list.remove(match_term)
    if ground_truth in em_match_list:
        return 1.0 / len(em_match_list)
    return 0.0


def _share_of_numbers(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    if not numbers:
        return 0.0
    return float(sum(number == str(target) for number in numbers) / len(numbers))


def count_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """LongBench passage_count: share of the numbers in the prediction equal to the answer."""
    return _share_of_numbers(prediction, ground_truth)


def retrieval_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """LongBench passage_retrieval_en: share of numbers equal to N of "Paragraph N"."""
    return _share_of_numbers(prediction, re.findall(r"Paragraph (\d+)", ground_truth)[0])


def retrieval_zh_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """LongBench passage_retrieval_zh: as `retrieval_score` with "段落N"."""
    return _share_of_numbers(prediction, re.findall(r"段落(\d+)", ground_truth)[0])


def fuzz_ratio(s1: str, s2: str) -> int:
    """`fuzzywuzzy.fuzz.ratio` (the port below when it is not installed)."""
    lib = _official("fuzzywuzzy.fuzz")
    return lib.ratio(s1, s2) if lib is not None else fuzz_ratio_port(s1, s2)


def fuzz_ratio_port(s1: str, s2: str) -> int:
    """`fuzzywuzzy.fuzz.ratio` without python-Levenshtein: 100 if equal, 0 if one is empty,
    else round(100 * difflib ratio) with Python's (banker's) rounding."""
    if s1 == s2:
        return 100
    if len(s1) == 0 or len(s2) == 0:
        return 0
    return int(round(100 * SequenceMatcher(None, s1, s2).ratio()))


def code_sim_score(prediction: str, ground_truth: str, **kwargs) -> float:
    """LongBench lcc / repobench-p: fuzz ratio / 100 of the first line of the prediction
    (after leading newlines) that contains none of "`", "#", "//" ("" if there is none)."""
    first = ""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            first = line
            break
    return fuzz_ratio(first, ground_truth) / 100


def string_match_all(preds: list[str], refs: list[list[str]]) -> float:
    """RULER: mean over examples of the share of references found (case-insensitive), x 100."""
    per_example = [
        sum(r.lower() in pred.lower() for r in ref) / len(ref)
        for pred, ref in zip(preds, refs, strict=True)
    ]
    return sum(per_example) / len(preds) * 100


def string_match_part(preds: list[str], refs: list[list[str]]) -> float:
    """RULER: mean over examples of whether any reference is found (case-insensitive), x 100."""
    per_example = [
        max(float(r.lower() in pred.lower()) for r in ref)
        for pred, ref in zip(preds, refs, strict=True)
    ]
    return sum(per_example) / len(preds) * 100


def ruler_postprocess(prediction: str) -> str:
    """RULER's `postprocess_pred`: control characters become newlines, then strip."""
    return re.sub(r"[\x00-\x1f]", "\n", prediction).strip()
