"""Aggregation of prediction records into the side-by-side report."""

import pytest

from ahn.eval import report


def _record(task, method, length, score, depth=None, group=None, cache=None):
    return {
        "task": task, "method": method, "length": length, "score": score, "depth": depth,
        "group": group, "wall_s": 2.0, "tokens_per_s": 100.0, "cache_bytes": cache,
    }  # fmt: skip


def test_aggregate_means_depths_groups_and_cost():
    records = [
        _record("passkey", "full", 512, 1.0, depth=0.0, cache=4096),
        _record("passkey", "full", 512, 0.0, depth=1.0, cache=8192),
        _record("passkey", "ahn", 512, 1.0, depth=0.0, cache=1024),
        _record("longbench_e:trec", "ahn", 4096, 0.5, group="4-8k"),
    ]
    results = report.aggregate(records, window=32, sinks=4)
    assert results["scores"]["passkey"]["full"]["512"] == pytest.approx(50.0)
    assert results["by_depth"]["passkey"]["full"]["512"] == {"0.0": 100.0, "1.0": 0.0}
    assert results["by_group"]["longbench_e:trec"]["ahn"] == {"4-8k": 50.0}
    assert list(results["efficiency"]) == ["full", "ahn"]
    assert results["efficiency"]["full"] == {
        "items": 2, "wall_s": 4.0, "tokens_per_s": 100.0, "peak_memory_bytes": None,
        "cache_bytes": 8192, "cache_bytes_by_length": {"512": 8192},
    }  # fmt: skip
    text = report.markdown(results)
    assert "| full | 50.00 | 50.00 |" in text
    assert "| ahn | 50.00 |" in text and "4-8k" in text
    assert "| full | 2 | 4.00 | 100.0 | - | 8.0 KiB |" in text
    assert "| ahn | 1.0 KiB |" in text  # cache by length


def test_nll_curves_average_bucket_sums():
    nll = {"task": "nll", "method": "sliding", "length": 8, "depth": None, "bucket": 4,
           "wall_s": 1.0, "tokens_per_s": 8.0}  # fmt: skip
    records = [
        {**nll, "score": 1.5, "sums": [4.0, 6.0], "counts": [4, 3],
         "within_window": [3.0, 3], "beyond_window": [7.0, 4]},
        {**nll, "score": 2.5, "sums": [8.0, 9.0], "counts": [4, 3],
         "within_window": [6.0, 3], "beyond_window": [11.0, 4]},
    ]  # fmt: skip
    results = report.aggregate(records, window=2, sinks=1)
    assert results["nll"]["8"]["sliding"] == {
        "position": [0, 4], "nll": [1.5, 2.5], "within_window": 1.5, "beyond_window": 2.25,
    }  # fmt: skip
    assert "| sliding | 1.50 | 2.25 |" in report.markdown(results)
