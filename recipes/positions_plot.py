"""NLL by position past the base's context, every method of `ahn eval` outputs in one picture
(docs/positions.md): each method's curve from the longest piece it was run on (the pieces of
`--limit 1` all start the held-out stream, so a shorter one is a prefix of a longer one), in
bins of `--bin` positions, with a line at the base's context.

    python recipes/positions_plot.py docs/img/positions_nll.png runs/nll16k runs/nll32k ...
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curves(dirs: list[Path], bin_size: int) -> dict[str, tuple[list[int], list[float]]]:
    """{label: (bin centres, mean NLL per bin)} from the longest record of each label."""
    best: dict[str, dict] = {}
    for directory in dirs:
        for line in (directory / "predictions.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r.get("task") != "nll":
                continue
            label = r["method"]
            if label == "ahn":
                label = f"ahn + store {r['salient']}" if r.get("salient") else "ahn"
            if r["method"] not in ("full", "truncated", "yarn", "dynamic", "rebased"):
                label += "" if r.get("positions") == "bounded" else " (original positions)"
            if label not in best or r["input_tokens"] > best[label]["input_tokens"]:
                best[label] = r
    out = {}
    for label, r in best.items():
        per = bin_size // r["bucket"]
        sums, counts = r["sums"], r["counts"]
        xs, ys = [], []
        for a in range(0, len(sums), per):
            xs.append((a + per / 2) * r["bucket"])
            ys.append(sum(sums[a : a + per]) / sum(counts[a : a + per]))
        out[label] = (xs, ys)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output")
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--bin", type=int, default=2048)
    parser.add_argument("--context", type=int, default=8192)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    styles = {"full": "k-", "truncated": "k--", "yarn": "k:", "rebased": "C7-"}
    for label, (xs, ys) in sorted(curves(args.dirs, args.bin).items()):
        ax.plot(xs, ys, styles.get(label, "o-"), ms=3, label=label)
    ax.axvline(args.context, color="grey", ls="--", lw=0.8)
    title = "Held-out stdlib stream, SmolLM2-135M-Instruct, 32 sinks + 480 window"
    ax.set(xlabel="position (tokens)", ylabel=f"NLL (mean per {args.bin} positions)", title=title)
    ax.set_ylim(top=min(ax.get_ylim()[1], 6.0))
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
