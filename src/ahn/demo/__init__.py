"""The demo: a small shipped Qwen2 base that needs long context, and `ahn demo`, which trains a
GDN AHN on it by self-distillation and compares full / sliding / AHN (see docs/demo.md)."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo-base"
TASK_FILE = "demo_task.json"  # the task and pretraining setup, next to the weights
