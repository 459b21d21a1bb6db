"""`ahn ask`: answer questions from a memory file, without reading the document again."""

from __future__ import annotations

import sys
from pathlib import Path

from ahn.cli.generate import add_decoding_arguments, add_model_arguments


def add_arguments(parser) -> None:
    from ahn.cli.read import MEMORY_MODES

    add_model_arguments(parser, modes=MEMORY_MODES)
    parser.add_argument("--memory", required=True, help="memory file written by `ahn read`")
    questions = parser.add_mutually_exclusive_group(required=True)
    questions.add_argument("--question", help="one question")
    questions.add_argument("--questions", help="file with one question per line")
    parser.add_argument(
        "--chat", action="store_true", help="the memory was read with --chat (checked)"
    )
    add_decoding_arguments(parser)


def read_questions(args) -> list[str]:
    if args.question is not None:
        questions = [args.question]
    else:
        path = Path(args.questions)
        if not path.is_file():
            raise FileNotFoundError(f"--questions {path} does not exist")
        questions = [q for q in path.read_text().splitlines() if q.strip()]
    if not questions or not all(q.strip() for q in questions):
        raise ValueError("no question given (--question TEXT or --questions FILE)")
    return questions


def run(args) -> int:
    import torch

    import ahn
    from ahn import memfile
    from ahn.cli.generate import generation_config, report, stream
    from ahn.cli.read import load_for_memory

    questions = read_questions(args)
    prompt = memfile.read_metadata(args.memory).get("prompt") or {}
    if bool(prompt.get("chat")) != args.chat:
        made = "with" if prompt.get("chat") else "without"
        raise ValueError(f"{args.memory} was read {made} --chat: ask {made} --chat too")
    model, tokenizer, mode = load_for_memory(args)
    memory = ahn.load_memory(model, args.memory, tokenizer)
    config = generation_config(model, args)
    for n, question in enumerate(questions):
        torch.manual_seed(args.seed)
        if len(questions) > 1:
            print(f"{'' if n == 0 else chr(10)}### {question}", flush=True)
        text = f"{prompt.get('before', '')}{question}{prompt.get('after', '')}"
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        new, cache, timing = stream(model, tokenizer, ids, config, memory.copy())
        print(report(mode, cache, timing), file=sys.stderr)
    return 0
