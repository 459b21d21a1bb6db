"""Ship a trained AHN for SmolLM2-135M-Instruct: `ahn.save` in bfloat16 with its training summary.

    python recipes/smollm2_export.py runs/smollm2-gdn src/ahn/assets/smollm2-135m-instruct-gdn

A run started from an earlier AHN (`ahn train --init-ahn PREVIOUS`) names it third: the summary
then adds the earlier stages' steps, tokens and hours, and lists every stage.
"""

import json
import statistics
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

import ahn
from ahn import bases


def summary(run: Path) -> dict:
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    last = log[-10:]
    return {
        "recipe": "docs/smollm2.md",
        "steps": log[-1]["step"],
        "tokens": sum(r["tokens"] for r in log),
        "loss_tokens": sum(r["loss_tokens"] for r in log),
        "hours": round(sum(r["seconds"] for r in log) / 3600, 2),
        "kl_first_10_steps": round(statistics.mean(r["kl"] for r in log[:10]), 4),
        "kl_last_10_steps": round(statistics.mean(r["kl"] for r in last), 4),
        "data": "ahn corpus (Python standard library docs + sources, train split; fact chats)",
    }


def with_previous(info: dict, previous: Path) -> dict:
    """`info` of the last stage, totals over every stage, and the stages in order."""
    before = json.loads((previous / "ahn_config.json").read_text())["training"]
    stages = before.get("stages", [before]) + [info]
    totals = {k: round(sum(s[k] for s in stages), 2) for k in ("steps", "tokens", "loss_tokens",
                                                                "hours")}  # fmt: skip
    return {**info, **totals, "stages": stages}


def main(run: str, out: str, previous: str | None = None) -> None:
    model = AutoModelForCausalLM.from_pretrained(bases.resolve("smollm2-135m-instruct"))
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    ahn.load(model, run)
    info = summary(Path(run))
    if previous is not None:
        info = with_previous(info, Path(previous))
    ahn.save(model, out, dtype=torch.bfloat16, training=info)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
