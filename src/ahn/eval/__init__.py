"""Evaluation: how much the AHN helps on a model and data, and what it costs, offline.

- `ahn.eval.metrics`: LongBench / LV-Eval metrics under their official names and signatures,
  RULER's `string_match_all` / `string_match_part`.
- `ahn.eval.flops.efficiency(config, length, window, sinks, memory)`: FLOPs and cache bytes of
  full / sliding / ahn with the paper's Table 1 conventions (`ahn flops` on the command line).
- `ahn.eval.synthetic.generate(task, tokenizer, length, depth, ...)`: passkey, RULER NIAH
  (single, multi-key, multi-value, multi-query; noise, essay and needle haystacks), variable
  tracking, key-value retrieval, and `copy` on token ids.
- `ahn.eval.benchmarks.load("longbench:hotpotqa", folder, tokenizer, length)`: LongBench(-E),
  LV-Eval, InfiniteBench from their local jsonl files.
- `ahn.eval.nll`: per-token NLL, bucketed by position.
- `ahn.eval.runner.evaluate(model, tokenizer, EvalConfig(...), output_dir)` (`EvalConfig` in
  `ahn.eval.config`): every item under every method, resumable; writes predictions.jsonl,
  results.json, results.md and PNG plots (`ahn eval` on the command line).
"""
