"""LV-Eval (infini-ai): <dataset>_<level>.jsonl, level in 16k/32k/64k/128k/256k, with the
fields input, context, answers, answer_keywords, ... Prompts, generation lengths and metrics
follow the official config.py / eval.py, including its scorer quirk: only the *first* answer
is scored, with the answer keywords as `gold_ans`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ahn.eval import metrics as M
from ahn.eval.benchmarks.common import make_sample, truncate_middle
from ahn.eval.sample import chat

LEVELS = ("16k", "32k", "64k", "128k", "256k")
_QA_EN = (
    "Please answer the following question based on the given passages. Questions and answers "
    "are only relevant to one passage. Only give me the answer and do not output any other "
    "explanation and evidence."
)
_HOTPOT = (
    "Answer the question based on the given passages. Questions and answers are only relevant "
    "to some passages. Only give me the answer and do not output any other explanation and "
    "evidence."
)
_HOTPOT_AFTER = (
    "Please answer the following question based on the above passages. Questions and answers "
    "are only relevant to some passages. Only give me the answer and do not output any other "
    "explanation and evidence."
)
_QA_EN_AFTER = _QA_EN.replace("given passages", "above passages")
_EN = "\n\nArticle: {context}\n\n"
_ZH_ONE = "问题和答案只与其中一篇文章有关。"
_ZH_ONLY = "只需要直接给出问题的答案，不要输出其他任何解释和证据。"
_ZH_GIVEN = "请根据下面给定的文章回答问题，" + _ZH_ONE + "\n\n文章：{context}\n\n"
_ZH_QUESTION = "\n\n问题：{input}\n回答："
PROMPTS = {
    "hotpotwikiqa_mixup": _HOTPOT + _EN + _HOTPOT_AFTER + "\n\nQuestion: {input}\nAnswer:",
    "loogle_SD_mixup": _QA_EN + _EN + _QA_EN_AFTER + "\n\nQuestion: {input}\nAnswer:",
    "loogle_CR_mixup": _QA_EN + _EN + _QA_EN_AFTER + "\n\nQuestion: {input}\nAnswer:",
    "loogle_MIR_mixup": _QA_EN + _EN + _QA_EN_AFTER + "\n\nQuestion: {input}\nAnswer:",
    "multifieldqa_en_mixup": _QA_EN + _EN + _QA_EN_AFTER + "\n\nQuestion: {input}\nAnswer:",
    "multifieldqa_zh_mixup": (
        "请阅读以下文章并用中文回答问题，" + _ZH_ONE + _ZH_ONLY
        + "\n\n文章：{context}\n\n请基于上面的文章回答下面的问题，" + _ZH_ONE + _ZH_ONLY
        + "\n\n问题：{input}\n回答："
    ),
    "factrecall_en": (
        "Please answer the following questions based on the given article.\n\nArticle: "
        "{context}\n\nPlease answer the following questions based on the above article.\n\n"
        "Question: {input}\nAnswer:"
    ),
    "factrecall_zh": (
        "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n现在请基于上述文章回答下面的问题。\n\n问题：{input}\n回答："
    ),
    "cmrc_mixup": _ZH_GIVEN + "现在请基于上述文章回答下面的问题，" + _ZH_ONE + _ZH_QUESTION,
    "lic_mixup": _ZH_GIVEN + "请现在基于上述文章回答下面的问题，" + _ZH_ONE + _ZH_QUESTION,
    "dureader_mixup": _ZH_GIVEN + "现在请基于上述文章回答下面的问题，" + _ZH_ONE + _ZH_QUESTION,
}  # fmt: skip
MAX_NEW_TOKENS = {name: 16 if name.startswith("factrecall") else 64 for name in PROMPTS}
METRIC = {
    "hotpotwikiqa_mixup": M.qa_f1_score_with_gold_ans,
    "loogle_SD_mixup": M.qa_f1_score_with_gold_ans,
    "loogle_CR_mixup": M.qa_f1_score_with_gold_ans,
    "loogle_MIR_mixup": M.qa_f1_score_with_gold_ans,
    "multifieldqa_en_mixup": M.qa_f1_score_with_gold_ans,
    "multifieldqa_zh_mixup": M.qa_f1_zh_score_with_gold_ans,
    "factrecall_en": M.qa_f1_score,
    "factrecall_zh": M.qa_f1_zh_score,
    "cmrc_mixup": M.qa_f1_zh_score_with_gold_ans,
    "lic_mixup": M.qa_f1_zh_score_with_gold_ans,
    "dureader_mixup": M.rouge_zh_score_blacklist,
}


def split_level(dataset: str) -> tuple[str, str | None]:
    """ "factrecall_en_64k" -> ("factrecall_en", "64k") (the official `_.{1,3}k` split)."""
    match = re.fullmatch(r"(.+)_(\d{1,3}k)", dataset)
    return (match[1], match[2]) if match else (dataset, None)


@dataclass(frozen=True)
class LVEval:
    """The `Benchmark` of LV-Eval; dataset names carry the length level."""

    def knows(self, dataset: str) -> bool:
        name, level = split_level(dataset)
        return name in PROMPTS and level in LEVELS

    def datasets(self) -> list[str]:
        return [f"{name}_<{'|'.join(LEVELS)}>" for name in PROMPTS]

    def candidates(self) -> list[str]:
        return [f"{name}_{level}" for name in PROMPTS for level in LEVELS]

    def file_name(self, dataset: str) -> str:
        return f"{dataset}.jsonl"

    def sample(self, task, dataset, index, record, tokenizer, length, chat_template=None):
        name, _ = split_level(dataset)
        prompt = truncate_middle(tokenizer, PROMPTS[name].format(**record), length)
        prompt = chat(tokenizer, prompt, chat_template)
        meta = {"gold_ans": record.get("answer_keywords"), "length": record.get("length")}
        return make_sample(
            task, index, length, prompt, tokenizer, record["answers"], MAX_NEW_TOKENS[name], meta
        )

    def score(self, dataset: str, prediction: str, sample) -> float:
        """The metric of the *first* answer only (the official loop breaks after one)."""
        name, _ = split_level(dataset)
        if not sample.answers:
            return 0.0
        return float(METRIC[name](prediction, sample.answers[0], gold_ans=sample.meta["gold_ans"]))


LVEVAL = LVEval()
