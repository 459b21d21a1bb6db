"""`ahn export --official DIR`: an AHN in the official ByteDance checkpoint layout."""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("--base", required=True, help="the base the AHN was trained for")
    parser.add_argument("--ahn", required=True, help="AHN directory or Hub id (ahn.save output)")
    parser.add_argument(
        "--official", required=True, metavar="DIR", help="write the official layout here"
    )
    parser.add_argument(
        "--drop-salient",
        action="store_true",
        help="export an AHN trained with a salient store without it (the layout has none)",
    )


def run(args) -> int:
    from transformers import AutoModelForCausalLM

    import ahn
    from ahn.bases import resolve_base
    from ahn.integration.augment import runtime_of

    model = AutoModelForCausalLM.from_pretrained(resolve_base(args.base))
    ahn.load(model, args.ahn)
    path = ahn.export_official(model, args.official, drop_salient=args.drop_salient)
    print(f"[ahn] wrote {path} (model.safetensors + config.json, official layout)", file=sys.stderr)
    config = runtime_of(model).config
    if config.positions != "original":
        print(f"[ahn] positions={config.positions!r} is not in the official layout: the official "
              "code and ahn.load of it read every key at its original position "
              "(ahn.set_window(model, positions=...) sets it after loading)",
              file=sys.stderr)  # fmt: skip
    salient = config.salient
    if salient:
        print(f"[ahn] the salient store (salient={salient}) was dropped: the official layout "
              "has none", file=sys.stderr)  # fmt: skip
    return 0
