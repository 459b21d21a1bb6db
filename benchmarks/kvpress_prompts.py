"""The evaluation's synthetic prompts as token ids (JSONL), for `kvpress_run.py` in kvpress's own
environment (`make kvpress`): both sides read the very same ids.

    python benchmarks/kvpress_prompts.py --tasks passkey --lengths 4k,8k --output prompts.jsonl

Each line: task, length, depth, index, input_ids, question_start (the first token of the
question, which kvpress reads after compressing what comes before it), answers, metric,
max_new_tokens.
"""

from __future__ import annotations

import argparse
import json

# The text that starts each task's question (the last line of its prompt).
QUESTIONS = {
    "passkey": "What is the pass key?",
    "niah_single_1": "What are all the special magic",
    "niah_multikey_2": "What are all the special magic",
}


def question_start(tokenizer, prompt: str, question: str) -> int:
    """The index of the first token at or after the question's last occurrence in `prompt`."""
    at = prompt.rindex(question)
    spans = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    return next(i for i, (a, _) in enumerate(spans) if a >= at)


def main() -> None:
    from transformers import AutoTokenizer

    from ahn.bases import resolve_base
    from ahn.eval import synthetic
    from ahn.eval.flops import parse_length

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--tasks", default="passkey")
    parser.add_argument("--lengths", default="4k")
    parser.add_argument("--depths", default="0,0.25,0.5,0.75")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(args.base))
    lines = []
    for task in args.tasks.split(","):
        for length in map(parse_length, args.lengths.split(",")):
            for depth in map(float, args.depths.split(",")):
                for index in range(args.samples):
                    s = synthetic.generate(task, tokenizer, length, depth, index, args.seed,
                                           chat=True)  # fmt: skip
                    assert tokenizer.encode(s.prompt) == s.input_ids
                    record = {
                        "task": task, "length": length, "depth": depth, "index": index,
                        "input_ids": s.input_ids, "answers": s.answers, "metric": s.metric,
                        "question_start": question_start(tokenizer, s.prompt, QUESTIONS[task]),
                        "max_new_tokens": s.max_new_tokens,
                    }  # fmt: skip
                    lines.append(json.dumps(record) + "\n")
    with open(args.output, "w") as f:
        f.writelines(lines)
    print(f"{args.output}: {len(lines)} prompts")


if __name__ == "__main__":
    main()
