"""Ship a trained AHN for SmolLM2-135M-Instruct: `ahn.save` in bfloat16 with its training summary.

    python recipes/smollm2_export.py runs/smollm2-gdn src/ahn/assets/smollm2-135m-instruct-gdn
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


def main(run: str, out: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(bases.resolve("smollm2-135m-instruct"))
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    ahn.load(model, run)
    info = summary(Path(run))
    ahn.save(model, out, dtype=torch.bfloat16, training=info)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
