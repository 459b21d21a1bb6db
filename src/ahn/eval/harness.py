"""lm-evaluation-harness model `ahn`: any lm-eval task in full / sliding / ahn mode.

    lm_eval --model ahn --model_args pretrained=DIR,ahn=DIR,mode=ahn,window=480,sinks=32,salient=64

`AHNLM` is lm-eval's own `HFLM` (its batching, padding, loglikelihood / loglikelihood_rolling /
generate_until) over a base model augmented with `ahn.load`; `mode=full` is the base model
itself. lm-eval versions that discover plugins through the `lm_eval.models` entry point find
it there; with the others, `ahn-lm-eval` is lm-eval's command line with the model registered
(`ahn-lm-eval run --model ahn ...`), and Python code imports this module before
`lm_eval.simple_evaluate(model="ahn", ...)`. Needs the `lm-eval` extra.
"""

from __future__ import annotations

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError(
        "the lm-eval plugin needs lm-evaluation-harness: pip install 'ahn[lm-eval]'"
    ) from err

from ahn.config import MODES


@register_model("ahn")
class AHNLM(HFLM):
    """`HFLM` with an AHN: `ahn` (an AHN directory or Hub id), `mode` (full / sliding / ahn),
    `window` / `sinks` / `salient` (the salient store) / `positions` (original or bounded, SPEC
    §2c); default: the AHN's own; every other argument is `HFLM`'s."""

    def __init__(
        self,
        pretrained,
        ahn: str | None = None,
        mode: str = "ahn",
        window: int | None = None,
        sinks: int | None = None,
        salient: int | None = None,
        positions: str | None = None,
        **kwargs,
    ) -> None:
        import ahn as ahn_lib
        from ahn.bases import resolve_base

        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {MODES}")
        _check_hflm_arguments(kwargs)
        sizes = (window, sinks, salient)
        if ahn is None and (mode != "full" or any(x is not None for x in (*sizes, positions))):
            raise ValueError(
                f"mode={mode} / window / sinks / salient / positions need ahn=DIR (the AHN)"
            )
        if isinstance(pretrained, str):
            pretrained = resolve_base(pretrained)
        super().__init__(pretrained=pretrained, **kwargs)
        if ahn is not None:
            ahn_lib.load(self.model, ahn)
            names = ("window", "sinks", "salient")
            sizes = (_int(x, n) for x, n in zip(sizes, names, strict=True))
            ahn_lib.set_window(self.model, *sizes, positions=positions)
            ahn_lib.set_mode(self.model, mode)


# lm-eval's dtype spellings besides torch's names ("float16"): what `HFLM` would reject with an
# AttributeError on `torch.fp16`.
DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32"}


def _check_hflm_arguments(kwargs: dict) -> None:
    """Refuse a model_args key that looks like a misspelt argument of `AHNLM` or `HFLM` (other
    unknown keys go on to `from_pretrained`, as with lm-eval's `hf` model), and take lm-eval
    users' dtype spellings (fp16, bf16, fp32) for torch's; in place."""
    import difflib
    import inspect

    known = {"pretrained", "ahn", "mode", "window", "sinks", "salient", "positions"}
    known |= set(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}
    for key in kwargs:
        close = [] if key in known else difflib.get_close_matches(key, sorted(known), n=2)
        if close:
            raise ValueError(
                f"model_args key {key!r} is not an argument of the ahn model; did you mean "
                f"{' or '.join(close)}?"
            )
    dtype = kwargs.get("dtype")
    if isinstance(dtype, str):
        dtype = kwargs["dtype"] = DTYPE_ALIASES.get(dtype, dtype)
        valid = ("auto", "float16", "bfloat16", "float32", *DTYPE_ALIASES)
        if dtype not in valid:
            raise ValueError(f"model_args dtype={dtype!r} is not one of {', '.join(valid)}")


def _int(value, name: str) -> int | None:
    """lm-eval passes model_args as parsed by its own `key=value` reader (ints or strings)."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be an integer") from None


def cli() -> None:
    """`ahn-lm-eval`: lm-eval's command line, with the `ahn` model registered."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    from ahn.errors import debugging, error_line

    try:
        cli_evaluate()
    except (ValueError, OSError, TypeError) as err:  # bad input: one line (AHN_DEBUG=1: all)
        if debugging():
            raise
        sys.exit(error_line("ahn-lm-eval", err))
