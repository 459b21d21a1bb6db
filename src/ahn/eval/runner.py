"""The evaluation runner: every item under every method, resumable, with timings.

`evaluate(model, tokenizer, config, output_dir)` runs the tasks of an `EvalConfig` on an
augmented model (`ahn.augment` / `ahn.load`) under each method ("full", "sliding", "ahn") at
the same window/sinks, appends one json line per (item, method) to `predictions.jsonl`
(a rerun skips the lines already there), then writes `results.json`, `results.md` and plots.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

import ahn
from ahn import atomic
from ahn.config import load_profile
from ahn.eval import benchmarks, methods, metrics, nll, synthetic
from ahn.eval.config import EvalConfig
from ahn.integration.augment import runtime_of


def _key(*parts) -> str:
    return "|".join(str(p) for p in parts)


def run_identity(model, config: EvalConfig) -> dict:
    """Everything besides the item and the method that changes a prediction: the base model,
    its dtype, the AHN's config and a hash of its weights, and the generation settings."""
    from ahn.checkpoint import weights_sha256

    weight = model.get_output_embeddings().weight
    return {
        "base": str(getattr(model.config, "name_or_path", "") or type(model).__name__),
        "base_parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(weight.dtype).removeprefix("torch."),
        "ahn_config": runtime_of(model).config.to_dict(),
        "ahn_weights_sha256": weights_sha256(model),
        "seed": config.seed,
        "chat": config.chat,
        "max_new_tokens": config.max_new_tokens,
        "data": config.data,
        "text_key": config.text_key,
        "nll_bucket": config.nll_bucket,
    }


def _identity_key(identity: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _reusable(records: list[dict], identity: dict) -> dict:
    """The records made by this same run identity, keyed; tells about any that are not."""
    key = _identity_key(identity)
    mine = {r["key"]: r for r in records if r.get("run") == key}
    others = [r for r in records if r.get("run") != key]
    if others:
        seen = others[-1].get("identity") or {}
        differ = sorted(k for k in identity if seen.get(k) != identity[k]) or ["format"]
        print(
            f"ahn eval: {len(others)} earlier predictions in this --output were made with "
            f"another {', '.join(differ)}; they are not reused (this run starts fresh for them)"
        )
    return mine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(model, run):
    """Runs `run()`, returning its result, wall seconds and peak memory: CUDA's peak allocation
    on a GPU, the process's peak resident set size (sampled) on a CPU."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    with _RssPeak() as rss:
        result = run()
    _sync(device)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
    return result, wall, peak


class _RssPeak:
    """Samples this process's resident set size every few ms (Linux `/proc`; `peak` stays None
    elsewhere), since `ru_maxrss` cannot be reset between methods."""

    PERIOD_S = 0.005

    def __init__(self) -> None:
        self.peak: int | None = None
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _sample(self) -> None:
        while True:
            rss = self._rss()
            if rss is not None:
                self.peak = max(self.peak or 0, rss)
            if self._stop.wait(self.PERIOD_S):
                return

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@torch.no_grad()
def _generate(model, tokenizer, sample, method: str) -> dict:
    device = next(model.parameters()).device
    input_ids = torch.tensor([sample.input_ids], device=device)
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None) or eos
    stop = {}
    if sample.stop_ids and eos is not None:  # e.g. LongBench's samsum: a newline ends it too
        stop = {"eos_token_id": [eos, *sample.stop_ids], "min_new_tokens": 1}
    if method == "truncated":
        input_ids = methods.truncated_prompt(input_ids, model, sample.max_new_tokens)
    with methods.running(model, method, input_ids.shape[1] + sample.max_new_tokens):
        out, wall, peak = _measure(
            model,
            lambda: model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=sample.max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                return_dict_in_generate=True,
                **stop,
            ),
        )
    new_ids = out.sequences[0, input_ids.shape[1] :].tolist()
    cache = out["cache"] if "cache" in out else out.get("past_key_values")
    if sample.task in synthetic.TASKS:
        value, prediction = synthetic.score(sample, new_ids, tokenizer)
    else:
        value, prediction = benchmarks.score(sample, new_ids, tokenizer)
    return {
        "score": value,
        "prediction": prediction,
        "answers": sample.answers or sample.answer_ids,
        "input_tokens": len(sample.input_ids),
        "new_tokens": len(new_ids),
        "wall_s": wall,
        "tokens_per_s": (len(sample.input_ids) + len(new_ids)) / wall,
        "peak_memory_bytes": peak,
        "cache_bytes": ahn.cache_bytes(cache) if cache is not None else None,
        "group": sample.meta.get("group"),
    }


@torch.no_grad()
def _nll(model, ids: list[int], method: str, bucket: int, lossless: int) -> dict:
    """NLL of one piece; `lossless` (sinks + window) splits it into positions whose every
    earlier token is kept losslessly and positions that need the memory."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    score = {"truncated": methods.truncated_nll, "rebased": methods.rebased_nll}.get(
        method, nll.token_nll
    )
    with methods.running(model, method, len(ids)):
        values, wall, peak = _measure(model, lambda: score(model, input_ids)[0])
    sums, counts = nll.bucket_sums(values.cpu(), bucket)
    return {
        "bucket": bucket,
        "sums": sums,
        "counts": counts,
        "score": float(values.mean()),
        "within_window": [float(values[:lossless].sum()), int(values[:lossless].numel())],
        "beyond_window": [float(values[lossless:].sum()), int(values[lossless:].numel())],
        "input_tokens": len(ids),
        "wall_s": wall,
        "tokens_per_s": len(ids) / wall,
        "peak_memory_bytes": peak,
    }


def _items(model, tokenizer, config: EvalConfig, lossless: int) -> Iterator[tuple[dict, callable]]:
    """(identity fields, job(method) -> record fields) for every item of `config`."""
    haystack = None
    if config.data and Path(config.data).is_file() and config.data.endswith(".txt"):
        haystack = Path(config.data).read_text(encoding="utf-8")
    vocab = model.config.vocab_size
    for task in config.tasks:
        for length in config.lengths:
            if task == "nll":
                yield from _nll_items(model, tokenizer, config, length, lossless)
            elif benchmarks.is_benchmark(task):
                loaded = benchmarks.load(
                    task, config.data, tokenizer, length, config.limit, config.chat
                )
                for sample in loaded:
                    _override(sample, config)
                    ident = {"task": task, "length": length, "depth": None, "index": sample.index}
                    yield ident, _bind(_generate, model, tokenizer, sample)
            else:
                for depth in config.depths:
                    for index in range(config.samples):
                        ident = {"task": task, "length": length, "depth": depth, "index": index}
                        yield ident, _lazy_sample(model, tokenizer, config, ident, haystack, vocab)


def _bind(fn, model, tokenizer, sample):
    return lambda method: fn(model, tokenizer, sample, method)


def _override(sample, config: EvalConfig) -> None:
    if config.max_new_tokens is not None:
        sample.max_new_tokens = config.max_new_tokens


def _lazy_sample(model, tokenizer, config, ident, haystack, vocab):
    """A job generating its sample once, on first use (skipped items never build prompts)."""
    made = []

    def job(method: str) -> dict:
        if not made:
            sample = synthetic.generate(
                ident["task"], tokenizer, ident["length"], ident["depth"], ident["index"],
                config.seed, haystack_text=haystack, vocab_size=vocab, chat=config.chat,
            )  # fmt: skip
            _override(sample, config)
            made.append(sample)
        return _generate(model, tokenizer, made[0], method)

    return job


def _nll_items(model, tokenizer, config: EvalConfig, length: int, lossless: int):
    docs = nll.read_documents(config.data, config.text_key)
    ids = [tokenizer.encode(doc) for doc in docs]
    separator = getattr(tokenizer, "eos_token_id", None)
    bucket = config.nll_bucket or max(1, length // 32)
    for index, piece in enumerate(nll.pieces(ids, length, separator, config.limit)):
        ident = {"task": "nll", "length": length, "depth": None, "index": index}
        yield ident, (lambda method, piece=piece: _nll(model, piece, method, bucket, lossless))


def read_records(path: Path) -> list[dict]:
    """The json lines of `predictions.jsonl` (a torn last line from a crash is ignored)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def evaluate(model, tokenizer, config: EvalConfig, output_dir: str | Path, progress: bool = True):
    """Run `config` on an augmented `model`; returns the results dict (also in results.json).

    Args:
        model: a transformers causal LM augmented with `ahn.augment` or `ahn.load`.
        tokenizer: its tokenizer (`encode` / `decode`).
        config: an `EvalConfig`.
        output_dir: where predictions.jsonl, results.json, results.md and the PNGs go.
        progress: show a tqdm progress bar.
    """
    from ahn.eval import report

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    can_plot = report.can_plot()  # checked before hours of work, not after
    if not can_plot:
        print("ahn eval: matplotlib is not installed (pip install 'ahn[plots]'): results.json "
              "and results.md will be written, the PNG plots will not")  # fmt: skip
    path = out / "predictions.jsonl"
    previous = runtime_of(model).config
    _set_store(model, config)
    try:
        return _run(model, tokenizer, config, out, path, progress, can_plot)
    finally:
        ahn.set_store(model, previous.salient_heads, previous.salient_share)


def _set_store(model, config: EvalConfig) -> None:
    """The store's head profile and sharing the run asks for (its identity records them)."""
    heads = config.salient_heads
    if heads is not None:
        ahn.set_store(model, None if heads == "uniform" else load_profile(heads))
    if config.salient_share is not None:
        ahn.set_store(model, share=config.salient_share)


def _run(model, tokenizer, config: EvalConfig, out: Path, path: Path, progress, can_plot):
    from ahn.eval import report

    identity = run_identity(model, config)
    run_key = _identity_key(identity)
    records = _reusable(read_records(path), identity)
    if path.exists() and not path.read_bytes().endswith(b"\n") and path.stat().st_size:
        with path.open("a", encoding="utf-8") as f:
            f.write("\n")  # close a line torn by a crash, so the next record starts clean
    rt = runtime_of(model)
    window = rt.window if config.window is None else config.window
    sinks = rt.sinks if config.sinks is None else config.sinks
    salient = rt.salient if config.salient is None else config.salient
    positions = rt.positions if config.positions is None else config.positions
    model.eval()
    items = list(_items(model, tokenizer, config, sinks + window))
    wanted: list[str] = []
    bar = tqdm(total=len(items) * len(config.methods), disable=not progress, desc="ahn eval")
    sizes = ahn.window(model, window=window, sinks=sinks, salient=salient, positions=positions)
    with sizes, path.open("a", encoding="utf-8") as f:
        budgets = rt.lossless.budgets  # the store's G_lh this run reads with (None: uniform)
        for ident, job in items:
            for method in config.methods:
                # the store changes "ahn" and "store" only: other keys keep earlier runs
                store = [salient] if method in ("ahn", "store") and salient else []
                bounded = [positions] if method != "full" and positions != "original" else []
                key = _key(*ident.values(), method, window, sinks, *store, *bounded)
                if key not in records:
                    record = {"key": key, **ident, "method": method, **job(method)}
                    records[key] = {**record, "window": window, "sinks": sinks, "run": run_key,
                                    "salient": salient, "positions": positions,
                                    "identity": identity}  # fmt: skip
                    f.write(json.dumps(records[key], ensure_ascii=False) + "\n")
                    f.flush()
                wanted.append(key)
                bar.update(1)
    bar.close()
    results = report.aggregate([records[k] for k in wanted], window, sinks)
    results["config"] = asdict(config)
    results["scorers"] = metrics.scorers()
    atomic.write_json(out / "results.json", results)
    atomic.write_text(out / "results.md", report.markdown(results))
    if can_plot:
        report.plots(results, out)
        if budgets is not None and any(m in ("ahn", "store") for m in config.methods):
            from ahn.eval.heads import plot

            plot([list(b) for b in budgets], out / "store_budgets.png", "store entries per head")
    return results
