"""The demo's table, `report.md`, `report.json` and plots."""

from __future__ import annotations

from pathlib import Path

from ahn import atomic
from ahn.demo.evaluate import METHODS

COLUMNS = (  # (header, key, format)
    ("accuracy beyond window", "beyond_window_accuracy", "{:.3f}"),
    ("answer NLL", "answer_nll", "{:.3f}"),
    ("filler NLL", "filler_nll", "{:.3f}"),
    ("KL to full", "kl_to_full", "{:.4f}"),
    ("cache bytes", "cache_bytes", "{:,}"),
    ("FLOPs / seq", "model_flops", "{:.3g}"),
    ("tokens/s", "tokens_per_s", "{:,.0f}"),
)


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def results_table(results: dict) -> str:
    """Markdown table: one row per method, the `COLUMNS` figures."""
    lines = [_row(["method", *(h for h, _, _ in COLUMNS)]), _row(["---"] * (len(COLUMNS) + 1))]
    for method in METHODS:
        lines.append(_row([method, *(f.format(results[method][k]) for _, k, f in COLUMNS)]))
    return "\n".join(lines)


def breakdown_tables(report: dict) -> str:
    """Accuracy by number of facts and NLL by position bucket, one row per method."""
    results, bucket = report["results"], report["config"]["bucket"]
    spans = list(results["full"]["accuracy_by_distance"])
    lines = ["Accuracy beyond the window by distance from the answer back to its fact (tokens):"]
    lines += ["", _row(["method", *spans]), _row(["---"] * (len(spans) + 1))]
    for m in METHODS:
        by = results[m]["accuracy_by_distance"]
        lines.append(_row([m, *(f"{by[k]:.3f}" for k in spans)]))
    n = len(results["full"]["nll_by_position"])
    heads = [f"{i * bucket}-{(i + 1) * bucket - 1}" for i in range(n)]
    lines += ["", "Mean NLL by position bucket (all tokens):", ""]
    lines += [_row(["method", *heads]), _row(["---"] * (n + 1))]
    for m in METHODS:
        lines.append(_row([m, *(f"{v:.3f}" for v in results[m]["nll_by_position"])]))
    return "\n".join(lines)


def summary(report: dict) -> str:
    """Two sentences: the gap and the share of it the AHN recovers."""
    acc = {m: report["results"][m]["beyond_window_accuracy"] for m in METHODS}
    c, recovered = report["config"], report["recovered_fraction"]
    share = (
        "there is no gap to recover"
        if recovered is None
        else f"the AHN recovers {100 * recovered:.1f}% of the sliding-to-full gap"
    )
    return (
        f"Window {c['sinks']} sinks + {c['window']} recent tokens. Accuracy on answers beyond the "
        f"window: full {acc['full']:.3f}, sliding {acc['sliding']:.3f}, AHN {acc['ahn']:.3f}; "
        f"{share}."
    )


def examples_text(report: dict) -> str:
    """One line per example: the query, the expected word and each method's `generate` answer."""
    lines = ["Answers of model.generate to held-out queries (fact stated N tokens back):"]
    for e in report["examples"]:
        said = ", ".join(f"{m} -> {e['answers'][m]}" for m in METHODS)
        lines.append(f"  '{e['query']}' ({e['distance']} back) expects {e['expected']}: {said}")
    return "\n".join(lines)


def markdown(report: dict, plots: list[str]) -> str:
    c, train, bill = report["config"], report["train"], report["memory_bill"]
    lines = [
        "# AHN demo report",
        "",
        summary(report),
        "",
        f"Task (docs/demo.md): a fact `# key value` stated 1-{report['task']['repeats']} times, "
        f"at least {report['task']['min_distance']} tokens before the final query `? key`; "
        "accuracy is that of the predicted value.",
        "",
        results_table(report["results"]),
        "",
        breakdown_tables(report),
        "",
        "Cache bytes measured after one forward pass over random tokens, and model FLOPs counted",
        "as in the paper's Table 1, by tokens processed:",
        "",
        _row(["method", *(f"{n} tokens" for n in bill["lengths"])]),
        _row(["---"] * (len(bill["lengths"]) + 1)),
        *(_row([m, *(f"{b:,} B" for b in bill[m]["cache_bytes"])]) for m in METHODS),
        *(_row([m, *(f"{f:.3g} FLOPs" for f in bill[m]["model_flops"])]) for m in METHODS),
        "",
        f"AHN: {c['memory']}, {train['ahn_parameters']:,} trained parameters "
        f"({100 * train['ahn_parameters'] / report['base']['parameters']:.2f}% of the base), "
        f"{train['steps']} steps in {train['seconds']:.0f} s, final KL {train['final_kl']:.4f}.",
        f"Evaluated on {c['eval_samples']} held-out sequences of "
        f"{report['task']['length']} tokens.",
        "",
        "```",
        examples_text(report),
        "```",
        "",
        *(f"![{Path(p).stem}]({Path(p).name})" for p in plots),
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict, output: Path) -> list[Path]:
    """`report.json`, plots and `report.md` under `output`. Returns the written paths."""
    output.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, output)
    atomic.write_json(output / "report.json", report)
    atomic.write_text(output / "report.md", markdown(report, [str(p) for p in plots]))
    return [output / "report.json", output / "report.md", *plots]


def write_plots(report: dict, output: Path) -> list[Path]:
    """The `PLOTS` as PNG files (none, with a note, when matplotlib is not installed)."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install 'ahn[plots]'): no plots written")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, draw in PLOTS.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        draw(ax, report)
        fig.tight_layout()
        path = output / f"{name}.png"
        with atomic.temp_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _accuracy(ax, report):
    results = report["results"]
    spans = list(results["full"]["accuracy_by_distance"])
    width = 0.8 / len(METHODS)
    for i, m in enumerate(METHODS):
        values = [results[m]["beyond_window_accuracy"]] + [
            results[m]["accuracy_by_distance"][k] for k in spans
        ]
        ax.bar([x + i * width for x in range(len(values))], values, width, label=m)
    ax.set_xticks([x + width for x in range(len(spans) + 1)], ["all", *spans], fontsize=8)
    ax.set_xlabel("distance from the answer back to its fact (tokens)")
    ax.set_ylabel("accuracy on answers beyond the window")
    ax.set_ylim(0, 1.05)
    ax.legend()


def _nll(ax, report):
    bucket = report["config"]["bucket"]
    for m in METHODS:
        curve = report["results"][m]["nll_by_position"]
        ax.plot([(i + 0.5) * bucket for i in range(len(curve))], curve, marker="o", label=m)
    lossless = report["config"]["sinks"] + report["config"]["window"]
    ax.axvline(lossless, color="gray", linestyle=":", label="sinks + window")
    ax.set_xlabel("position")
    ax.set_ylabel("mean NLL (nats)")
    ax.legend()


def _memory(ax, report):
    bill = report["memory_bill"]
    for m in METHODS:
        ax.plot(bill["lengths"], bill[m]["cache_bytes"], marker="o", label=m)
    ax.set_xscale("log", base=2)
    ax.set_xticks(bill["lengths"], [str(n) for n in bill["lengths"]])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("tokens processed")
    ax.set_ylabel("cache bytes (measured)")
    ax.legend()


def _training(ax, report):
    kl = report["train"]["kl"]
    ax.plot(range(1, len(kl) + 1), kl)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("KL(full || ahn) beyond the window")


PLOTS = {"accuracy": _accuracy, "nll_by_position": _nll, "memory": _memory, "training": _training}
