"""Aggregation of `predictions.jsonl` records, the markdown report, and the plots."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ahn import atomic

METHOD_ORDER = ("full", "sliding", "ahn", "store")


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
         "by_group": {task: {method: {group: mean}}}  (LongBench-E's length groups),
         "nll": {length: {method: {"position": [...], "nll": [...],
                                   "within_window": mean, "beyond_window": mean}}},
         "efficiency": {method: {"items", "wall_s", "tokens_per_s", "peak_memory_bytes",
                                 "cache_bytes", "cache_bytes_by_length": {length: max}}}}
        (lengths and depths as strings: json keys).
    """
    scores = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    depths = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    groups = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    curves = defaultdict(dict)
    cost = defaultdict(lambda: defaultdict(list))
    for r in records:
        task, method, length = r["task"], r["method"], str(r["length"])
        scale = 1.0 if task == "nll" else 100.0
        scores[task][method][length].append(scale * r["score"])
        if r.get("depth") is not None:
            depths[task][method][length][str(r["depth"])].append(scale * r["score"])
        if r.get("group") is not None:
            groups[task][method][r["group"]].append(scale * r["score"])
        if task == "nll":
            _add_curve(curves[length], method, r)
        for name in ("wall_s", "tokens_per_s", "peak_memory_bytes", "cache_bytes"):
            if r.get(name) is not None:
                cost[method][name].append(r[name])
        if r.get("cache_bytes") is not None:
            cost[method][f"cache@{length}"].append(r["cache_bytes"])
    return {
        "window": window,
        "sinks": sinks,
        "scores": _nested_means(scores),
        "items": _nested_counts(scores),
        "by_depth": _nested_means(depths),
        "by_group": _nested_means(groups),
        "nll": {length: _finish_curves(c) for length, c in curves.items()},
        "efficiency": {m: _cost(cost[m], m, records) for m in _ordered(cost)},
    }


def _nested_counts(tree):
    if isinstance(tree, list):
        return len(tree)
    return {k: _nested_counts(v) for k, v in tree.items()}


def _nested_means(tree):
    if isinstance(tree, list):
        return _mean(tree)
    return {k: _nested_means(v) for k, v in tree.items()}


def _add_curve(curves: dict, method: str, record: dict) -> None:
    sums, counts, _, split = curves.setdefault(method, ([], [], record["bucket"], {}))
    for part in ("within_window", "beyond_window"):
        total, n = split.get(part, (0.0, 0))
        split[part] = (total + record[part][0], n + record[part][1])
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
            **{part: total / n if n else None for part, (total, n) in split.items()},
        }
        for method, (sums, counts, bucket, split) in curves.items()
    }


def _cost(values: dict, method: str, records: list[dict]) -> dict:
    return {
        "items": sum(r["method"] == method for r in records),
        "wall_s": sum(values["wall_s"]),
        "tokens_per_s": _mean(values["tokens_per_s"]),
        "peak_memory_bytes": max(values["peak_memory_bytes"], default=None),
        "cache_bytes": max(values["cache_bytes"], default=None),
        "cache_bytes_by_length": {
            key.split("@")[1]: max(v) for key, v in values.items() if key.startswith("cache@")
        },
    }


def _by_length(lengths) -> list[str]:
    return sorted(lengths, key=int)


def _table(title: str, columns: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    lines = [f"## {title}", "", "| method | " + " | ".join(columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return lines + [""]


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def _nll_split_table(results: dict) -> list[str]:
    lengths = _by_length(results["nll"])
    columns = [f"{n} {part}" for n in lengths for part in ("inside", "beyond")]
    methods = _ordered({m for curves in results["nll"].values() for m in curves})
    rows = [
        (m, [_cell(results["nll"][n].get(m, {}).get(f"{part}_window"))
             for n in lengths for part in ("within", "beyond")])
        for m in methods
    ]  # fmt: skip
    lossless = results["sinks"] + results["window"]
    return _table(f"NLL inside vs beyond sinks + window ({lossless})", columns, rows)


def markdown(results: dict) -> str:
    """The side-by-side tables: scores per task (methods x lengths, and LongBench-E's length
    groups) and the measured cost per method."""
    lines = [f"# AHN evaluation (sinks {results['sinks']}, window {results['window']})", ""]
    for task, per_method in results["scores"].items():
        lengths = _by_length({n for by_len in per_method.values() for n in by_len})
        unit = "mean NLL (lower is better)" if task == "nll" else "score x 100"
        rows = []
        for method in _ordered(per_method):
            row = [per_method[method].get(n) for n in lengths]
            average = _mean([v for v in row if v is not None])
            rows.append((method, [_cell(v) for v in row] + [_cell(average)]))
        lines += _table(f"{task} ({unit})", lengths + ["avg"], rows)
        counts = results.get("items", {}).get(task, {})
        if counts:
            per_length = {n: max(c.get(n, 0) for c in counts.values()) for n in lengths}
            lines += ["items per score: " + ", ".join(f"{n}: {k}" for n, k in per_length.items()),
                      ""]  # fmt: skip
    for task, per_method in results["by_group"].items():
        groups = sorted({g for by_group in per_method.values() for g in by_group})
        rows = [(m, [_cell(per_method[m].get(g)) for g in groups]) for m in _ordered(per_method)]
        lines += _table(f"{task} by length group (score x 100)", groups, rows)
    if results["nll"]:
        lines += _nll_split_table(results)
    columns = ["items", "wall s", "tokens/s", "peak memory", "cache"]
    rows = [
        (m, [str(c["items"]), f"{c['wall_s']:.2f}", f"{c['tokens_per_s']:.1f}",
             _bytes(c["peak_memory_bytes"]), _bytes(c["cache_bytes"])])
        for m, c in results["efficiency"].items()
    ]  # fmt: skip
    lines += _table("Measured cost", columns, rows)
    lengths = _by_length(
        {n for c in results["efficiency"].values() for n in c["cache_bytes_by_length"]}
    )
    if lengths:
        rows = [
            (m, [_bytes(c["cache_bytes_by_length"].get(n)) for n in lengths])
            for m, c in results["efficiency"].items()
        ]
        lines += _table("Cache held after generation, by length", lengths, rows)
    return "\n".join(lines) + "\n"


def can_plot() -> bool:
    """Whether matplotlib (the `plots` extra) is importable."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


MARKERS = "os^Dv<>p"


def plots(results: dict, out: Path) -> list[Path]:
    """score_vs_length.png, depth_heatmap_<task>.png, nll_vs_position_<length>.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tasks = [t for t in results["scores"] if t != "nll"]
    if tasks:
        fig, axes = plt.subplots(
            1, len(tasks), figsize=(4 * len(tasks), 3.2), squeeze=False, layout="constrained"
        )
        for ax, task in zip(axes[0], tasks, strict=True):
            methods = _ordered(results["scores"][task])
            for i, method in enumerate(methods):
                by_len = results["scores"][task][method]
                lengths = _by_length(by_len)
                # equal scores overlap: each later method drawn smaller, on a distinct marker
                size = 4 + 3 * (len(methods) - 1 - i)
                xs, ys = [int(n) for n in lengths], [by_len[n] for n in lengths]
                marker = MARKERS[i % len(MARKERS)]
                ax.plot(xs, ys, "-", marker=marker, ms=size, mfc="none", label=method)
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
    fig, axes = plt.subplots(
        1, len(methods), figsize=(4 * len(methods), 3.2), squeeze=False, layout="constrained"
    )
    for ax, method in zip(axes[0], methods, strict=True):
        lengths = _by_length(per_method[method])
        depths = sorted({d for n in lengths for d in per_method[method][n]}, key=float)
        grid = [[per_method[method][n].get(d, float("nan")) for n in lengths] for d in depths]
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
        ax.set(title=f"{task}: {method}", xlabel="length", ylabel="depth")
        ax.set_xticks(range(len(lengths)), lengths)
        ax.set_yticks(range(len(depths)), depths)
        for (i, j), value in np.ndenumerate(np.array(grid)):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=list(axes[0]))
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic.temp_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
