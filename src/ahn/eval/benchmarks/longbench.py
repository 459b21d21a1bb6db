"""LongBench and LongBench-E (THUDM): data/<dataset>.jsonl and data/<dataset>_e.jsonl with the
fields input, context, answers, length, all_classes, ... Prompts, generation lengths, the
truncation, the first-line rule and the metrics follow the official pred.py / eval.py."""

from __future__ import annotations

from dataclasses import dataclass

from ahn.eval import metrics as M
from ahn.eval.benchmarks.common import make_sample, truncate_middle
from ahn.eval.benchmarks.longbench_prompts import PROMPTS
from ahn.eval.sample import chat

MAX_NEW_TOKENS = {
    "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "multifieldqa_zh": 64,
    "hotpotqa": 32, "2wikimqa": 32, "musique": 32, "dureader": 128, "gov_report": 512,
    "qmsum": 512, "multi_news": 512, "vcsum": 512, "trec": 64, "triviaqa": 32, "samsum": 128,
    "lsht": 64, "passage_count": 32, "passage_retrieval_en": 32, "passage_retrieval_zh": 32,
    "lcc": 64, "repobench-p": 64,
}  # fmt: skip
METRIC = {
    "narrativeqa": M.qa_f1_score, "qasper": M.qa_f1_score, "multifieldqa_en": M.qa_f1_score,
    "multifieldqa_zh": M.qa_f1_zh_score, "hotpotqa": M.qa_f1_score, "2wikimqa": M.qa_f1_score,
    "musique": M.qa_f1_score, "dureader": M.rouge_zh_score, "gov_report": M.rouge_score,
    "qmsum": M.rouge_score, "multi_news": M.rouge_score, "vcsum": M.rouge_zh_score,
    "trec": M.classification_score, "triviaqa": M.qa_f1_score, "samsum": M.rouge_score,
    "lsht": M.classification_score, "passage_retrieval_en": M.retrieval_score,
    "passage_count": M.count_score, "passage_retrieval_zh": M.retrieval_zh_score,
    "lcc": M.code_sim_score, "repobench-p": M.code_sim_score,
}  # fmt: skip
# Few-shot / completion tasks: no chat template; only the first line of the answer is scored.
NO_CHAT = {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}
FIRST_LINE = {"trec", "triviaqa", "samsum", "lsht"}
E_DATASETS = {
    "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news", "trec",
    "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
}  # fmt: skip


@dataclass(frozen=True)
class LongBench:
    """The `Benchmark` of LongBench (`suffix` "") or LongBench-E (`suffix` "_e")."""

    suffix: str  # "" for LongBench, "_e" for LongBench-E
    names: frozenset

    def knows(self, dataset: str) -> bool:
        return dataset in self.names

    def datasets(self) -> list[str]:
        return sorted(self.names)

    def candidates(self) -> list[str]:
        return self.datasets()

    def file_name(self, dataset: str) -> str:
        return f"{dataset}{self.suffix}.jsonl"

    def sample(self, task, dataset, index, record, tokenizer, length, chat_template=None):
        prompt = truncate_middle(tokenizer, PROMPTS[dataset].format(**record), length)
        if dataset not in NO_CHAT:
            prompt = chat(tokenizer, prompt, chat_template)
        sample = make_sample(
            task, index, length, prompt, tokenizer, record["answers"], MAX_NEW_TOKENS[dataset],
            {"all_classes": record.get("all_classes"), "length": record.get("length")},
        )  # fmt: skip
        if self.suffix == "_e":  # LongBench-E reports scores by length group
            sample.meta["group"] = length_bucket(record["length"])
        if dataset == "samsum":  # the official code also stops at a newline here
            sample.stop_ids = [tokenizer.encode("\n", add_special_tokens=False)[-1]]
        return sample

    def score(self, dataset: str, prediction: str, sample) -> float:
        """Max over the answers of the dataset's metric (LongBench's `scorer`)."""
        if dataset in FIRST_LINE:
            prediction = prediction.lstrip("\n").split("\n")[0]
        metric, classes = METRIC[dataset], sample.meta.get("all_classes")
        return max(
            [0.0] + [metric(prediction, truth, all_classes=classes) for truth in sample.answers]
        )


def length_bucket(length: int) -> str:
    """LongBench-E's length groups of a record's `length` field."""
    return "0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"


LONGBENCH = LongBench("", frozenset(PROMPTS))
LONGBENCH_E = LongBench("_e", frozenset(E_DATASETS))
