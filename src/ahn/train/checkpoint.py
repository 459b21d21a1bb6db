"""Resumable training checkpoints, `OUTPUT/checkpoint-STEP/`, written atomically.

A checkpoint is assembled in `checkpoint-STEP.tmp/` and renamed into place only when complete,
so a killed process leaves at most a `.tmp` directory, which resuming ignores. Contents:
the AHN (`ahn.save`, loadable with `ahn.load`), `optimizer.safetensors` (per parameter name),
`rng-rank{R}.safetensors`, and `trainer_state.json` (step, data position, optimizer scalars,
the run's config).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import ahn
from ahn import atomic
from ahn.train.sharding import full_tensor, shard_like

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
_NAME = re.compile(r"checkpoint-(\d+)")


def checkpoint_dir(output: str | Path, step: int) -> Path:
    return Path(output) / f"checkpoint-{step}"


def latest_checkpoint(output: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under `output`, or None."""
    found = []
    for path in Path(output).glob("checkpoint-*"):
        match = _NAME.fullmatch(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def staging_dir(output: str | Path, step: int) -> Path:
    """Fresh `checkpoint-STEP.tmp/` (call on one rank, then barrier, then all ranks write)."""
    tmp = Path(f"{checkpoint_dir(output, step)}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path) -> Path:
    """Rename a finished `checkpoint-STEP.tmp/` to `checkpoint-STEP/`, replacing an older one."""
    final = tmp.with_suffix("")
    atomic.replace_dir(tmp, final)
    return final


def save_ahn_into(model: torch.nn.Module, directory: str | Path) -> None:
    """`ahn.save` into an existing directory without disturbing its other files (`ahn.save`
    replaces its target directory as a whole): each file is renamed into place."""
    directory = Path(directory)
    tmp = ahn.save(model, directory / ".ahn.tmp")
    for file in tmp.iterdir():
        os.replace(file, directory / file.name)
    tmp.rmdir()


def write_json(path: Path, data: dict) -> None:
    """Atomic json write (`ahn.atomic`), keys sorted."""
    atomic.write_json(path, data, sort_keys=True)


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, names: dict[torch.nn.Parameter, str]
) -> tuple[dict[str, torch.Tensor], dict]:
    """Split optimizer state into whole tensors keyed `NAME::KEY` and the json-able rest.

    With sharded parameters this gathers each tensor: every rank must call it.
    """
    tensors, scalars = {}, {}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{names[param]}::{key}"] = full_tensor(value).detach().cpu().contiguous()
            else:
                scalars[f"{names[param]}::{key}"] = value
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return tensors, {"state": scalars, "param_groups": groups}


def write_optimizer(directory: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(directory / OPTIMIZER_FILE))


def load_optimizer(
    directory: Path,
    optimizer: torch.optim.Optimizer,
    names: dict[torch.nn.Parameter, str],
    rest: dict,
) -> None:
    """Restore what `optimizer_tensors` saved (as `OPTIMIZER_FILE` + `rest`) into an optimizer
    over the same named parameters (sharded or not)."""
    tensors = load_file(str(directory / OPTIMIZER_FILE))
    index = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            index[names[param]] = (len(index), param)
    state: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *rest["state"].items()]:
        name, key = flat.rsplit("::", 1)
        if name not in index:
            raise ValueError(f"checkpoint {directory} has optimizer state for unknown {name!r}")
        i, param = index[name]
        state.setdefault(i, {})[key] = shard_like(value, param) if torch.is_tensor(value) else value
    groups = optimizer.state_dict()["param_groups"]
    for group, saved in zip(groups, rest["param_groups"], strict=True):
        group.update(saved)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_file(directory: Path, rank: int) -> Path:
    return directory / f"rng-rank{rank}.safetensors"


def save_rng(directory: Path, rank: int) -> None:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    save_file(tensors, str(rng_file(directory, rank)))


def load_rng(directory: Path, rank: int) -> None:
    path = rng_file(directory, rank)
    if not path.is_file():  # resumed with more processes than saved: keep the seeded state
        return
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in tensors]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
