"""The demos. `ahn demo` (`real.py`, what `make demo` runs): the shipped AHN with its salient
store on SmolLM2-135M-Instruct, full / sliding / AHN on held-out text (docs/smollm2.md).
`ahn demo-toy` (`toy.py`, `base.py`, `tasks.py`, `evaluate.py`, `report.py`): trains a GDN AHN
in minutes on a 0.55M-parameter shipped Qwen2 base that needs long context (docs/demo.md);
`pretrain.py` made that base."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo-base"
TASK_FILE = "demo_task.json"  # the task and pretraining setup, next to the weights
