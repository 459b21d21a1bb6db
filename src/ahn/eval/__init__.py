"""Evaluation harness: metrics, synthetic long-context tasks, benchmark loaders, NLL by
position, FLOPs / cache accounting, and the `ahn eval` runner."""
