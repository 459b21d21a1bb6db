"""Per-step records: a tqdm bar, `OUTPUT/train_log.jsonl`, optionally TensorBoard (main rank)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from ahn import atomic

LOG_FILE = "train_log.jsonl"
BAR_FIELDS = {"loss": "loss", "kl": "kl", "ce_teacher": "ce_t", "ce_student": "ce_s"}


class TrainLogger:
    """Writes one record per optimizer step; does nothing on ranks other than the main one.

    Args:
        output: the run's output directory.
        total_steps: steps of the whole run (for the bar's ETA).
        start_step: steps already done (resumed runs); later lines of an older log are dropped.
        enabled: False on non-main ranks.
        tensorboard: also write TensorBoard scalars under `output/tensorboard`.
    """

    def __init__(
        self,
        output: str | Path,
        total_steps: int,
        start_step: int,
        enabled: bool,
        tensorboard: bool = False,
    ) -> None:
        self.enabled = enabled
        self.path = Path(output) / LOG_FILE
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not enabled, unit="step")
        self.board = (
            _summary_writer(Path(output) / "tensorboard") if enabled and tensorboard else None
        )
        if enabled:
            _truncate_log(self.path, start_step)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        postfix = {
            short: f"{record[key]:.4g}"
            for key, short in BAR_FIELDS.items()
            if not math.isnan(record[key])
        }
        self.bar.set_postfix(postfix | {"tok/s": f"{record['tokens_per_s']:.0f}"}, refresh=False)
        self.bar.update(1)
        if self.board is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.board.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        self.bar.close()
        if self.board is not None:
            self.board.close()


def _summary_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ValueError(
            "--tensorboard needs the tensorboard package (pip install tensorboard)"
        ) from err
    return SummaryWriter(str(directory))


def _truncate_log(path: Path, start_step: int) -> None:
    """Keep the records of steps <= start_step (those a resumed run does not redo)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= start_step]
    atomic.write_text(path, "".join(line + "\n" for line in kept))
