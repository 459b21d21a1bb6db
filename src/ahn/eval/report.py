"""Aggregation of `predictions.jsonl` records, the markdown report, and the plots."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

METHOD_ORDER = ("full", "sliding", "ahn")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _ordered(methods) -> list[str]:
    return sorted(methods, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99)


def aggregate(records: list[dict], window: int, sinks: int) -> dict:
    """Scores (x 100; mean NLL for "nll"), scores by depth, NLL curves and measured cost.

    Returns:
        {"window", "sinks",
         "scores": {task: {method: {length: mean}}},
         "by_depth": {task: {method: {length: {depth: mean}}}},
         "nll": {length: {method: {"position": [...], "nll": [...]}}},
         "efficiency": {method: {"items", "wall_s", "tokens_per_s", "peak_memory_bytes",
                                 "cache_bytes"}}}
        (lengths and depths as strings: json keys).
    """
    scores = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    depths = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    curves = defaultdict(dict)
    cost = defaultdict(lambda: defaultdict(list))
    for r in records:
        task, method, length = r["task"], r["method"], str(r["length"])
        scale = 1.0 if task == "nll" else 100.0
        scores[task][method][length].append(scale * r["score"])
        if r.get("depth") is not None:
            depths[task][method][length][str(r["depth"])].append(scale * r["score"])
        if task == "nll":
            _add_curve(curves[length], method, r)
        for name in ("wall_s", "tokens_per_s", "peak_memory_bytes", "cache_bytes"):
            if r.get(name) is not None:
                cost[method][name].append(r[name])
    return {
        "window": window,
        "sinks": sinks,
        "scores": _nested_means(scores),
        "by_depth": _nested_means(depths),
        "nll": {length: _finish_curves(c) for length, c in curves.items()},
        "efficiency": {m: _cost(cost[m], m, records) for m in _ordered(cost)},
    }


def _nested_means(tree):
    if isinstance(tree, list):
        return _mean(tree)
    return {k: _nested_means(v) for k, v in tree.items()}


def _add_curve(curves: dict, method: str, record: dict) -> None:
    sums, counts = curves.setdefault(method, ([], [], record["bucket"]))[:2]
    for i, (s, c) in enumerate(zip(record["sums"], record["counts"], strict=True)):
        if i == len(sums):
            sums.append(0.0)
            counts.append(0)
        sums[i] += s
        counts[i] += c


def _finish_curves(curves: dict) -> dict:
    return {
        method: {
            "position": [i * bucket for i in range(len(sums))],
            "nll": [s / c for s, c in zip(sums, counts, strict=True)],
        }
        for method, (sums, counts, bucket) in curves.items()
    }


def _cost(values: dict, method: str, records: list[dict]) -> dict:
    return {
        "items": sum(r["method"] == method for r in records),
        "wall_s": sum(values["wall_s"]),
        "tokens_per_s": _mean(values["tokens_per_s"]),
        "peak_memory_bytes": max(values["peak_memory_bytes"], default=None),
        "cache_bytes": max(values["cache_bytes"], default=None),
    }


def _by_length(lengths) -> list[str]:
    return sorted(lengths, key=int)


def markdown(results: dict) -> str:
    """The side-by-side tables: scores per task (methods x lengths) and measured cost."""
    lines = [f"# AHN evaluation (sinks {results['sinks']}, window {results['window']})", ""]
    for task, per_method in results["scores"].items():
        lengths = _by_length({n for by_len in per_method.values() for n in by_len})
        unit = "mean NLL (lower is better)" if task == "nll" else "score x 100"
        lines += [f"## {task} ({unit})", "", "| method | " + " | ".join(lengths) + " | avg |"]
        lines.append("|---|" + "---:|" * (len(lengths) + 1))
        for method in _ordered(per_method):
            row = [per_method[method].get(n) for n in lengths]
            cells = ["-" if v is None else f"{v:.2f}" for v in row]
            known = [v for v in row if v is not None]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {_mean(known):.2f} |")
        lines.append("")
    lines += [
        "## Measured cost",
        "",
        "| method | items | wall s | tokens/s | peak memory | cache |",
    ]
    lines.append("|---|---:|---:|---:|---:|---:|")
    for method, c in results["efficiency"].items():
        peak, cache = c["peak_memory_bytes"], c["cache_bytes"]
        lines.append(
            f"| {method} | {c['items']} | {c['wall_s']:.2f} | {c['tokens_per_s']:.1f} | "
            f"{'-' if peak is None else f'{peak / 2**20:.1f} MiB'} | "
            f"{'-' if cache is None else f'{cache / 2**20:.2f} MiB'} |"
        )
    return "\n".join(lines) + "\n"


def plots(results: dict, out: Path) -> list[Path]:
    """score_vs_length.png, depth_heatmap_<task>.png, nll_vs_position_<length>.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tasks = [t for t in results["scores"] if t != "nll"]
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.2), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            for method in _ordered(results["scores"][task]):
                by_len = results["scores"][task][method]
                lengths = _by_length(by_len)
                ax.plot([int(n) for n in lengths], [by_len[n] for n in lengths], "o-", label=method)
            ax.set(title=task, xlabel="length (tokens)", ylabel="score", xscale="log")
            ax.legend()
        written.append(_save(fig, out / "score_vs_length.png"))
    for task, per_method in results["by_depth"].items():
        written.append(_heatmap(plt, task, per_method, out / f"depth_heatmap_{task}.png"))
    for length, curves in results["nll"].items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for method in _ordered(curves):
            ax.plot(curves[method]["position"], curves[method]["nll"], label=method)
        ax.axvline(results["sinks"] + results["window"], color="grey", ls="--", label="S + W")
        ax.set(title=f"NLL by position ({length} tokens)", xlabel="position", ylabel="NLL")
        ax.legend()
        written.append(_save(fig, out / f"nll_vs_position_{length}.png"))
    return written


def _heatmap(plt, task: str, per_method: dict, path: Path) -> Path:
    methods = _ordered(per_method)
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        lengths = _by_length(per_method[method])
        depths = sorted({d for n in lengths for d in per_method[method][n]}, key=float)
        grid = [[per_method[method][n].get(d, float("nan")) for n in lengths] for d in depths]
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
        ax.set(title=f"{task}: {method}", xlabel="length", ylabel="depth")
        ax.set_xticks(range(len(lengths)), lengths)
        ax.set_yticks(range(len(depths)), depths)
    fig.colorbar(image, ax=list(axes[0]))
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name("tmp-" + path.name)
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
