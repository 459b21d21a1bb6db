"""`ahn export --official DIR`: an AHN in the official ByteDance checkpoint layout."""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("--base", required=True, help="the base the AHN was trained for")
    parser.add_argument("--ahn", required=True, help="AHN directory or Hub id (ahn.save output)")
    parser.add_argument(
        "--official", required=True, metavar="DIR", help="write the official layout here"
    )


def run(args) -> int:
    from transformers import AutoModelForCausalLM

    import ahn
    from ahn.bases import resolve

    model = AutoModelForCausalLM.from_pretrained(resolve(args.base))
    ahn.load(model, args.ahn)
    path = ahn.export_official(model, args.official)
    print(f"[ahn] wrote {path} (model.safetensors + config.json, official layout)", file=sys.stderr)
    return 0
