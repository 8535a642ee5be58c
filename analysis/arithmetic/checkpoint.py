"""Checkpoints of multiplication runs: safetensors weights plus JSON, written atomically.

A run folder contains:

* ``config.json``: the ``RunConfig`` (problem and data format, model, training).
* ``metrics.jsonl``: one JSON object per evaluation during training.
* ``checkpoint/``: the latest resumable state. ``model.safetensors`` (weights),
  ``trainer.safetensors`` (AdamW moments and the data generator's state) and
  ``state.json`` (step, elapsed time, optimiser hyperparameters). The folder is
  built under a temporary name and swapped in, so it is always complete.
* ``model.safetensors`` and ``eval.json``: the final weights and their evaluation
  on the whole test set, written when training finishes.

Tensors are read with ``safetensors`` only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from analysis.arithmetic.config import RunConfig
from analysis.paths import atomic_write_json, give_usual_mode

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
SHIPPED_RUNS = Path(__file__).resolve().parents[2] / "data" / "arith"
CHECKPOINT_DIR = "checkpoint"
PREVIOUS_CHECKPOINT_DIR = ".checkpoint.previous"


class CheckpointError(RuntimeError):
    """A run folder or checkpoint is missing, incomplete or from another run."""


@dataclass
class TrainerState:
    """Everything besides the weights that a resumed run needs."""

    step: int
    elapsed_s: float
    optimizer: dict[str, Any]
    sampler_state: torch.Tensor
    running_loss: tuple[float, int] = (0.0, 0)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).detach().clone().contiguous()
    return tensors, state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def save_weights(path: Path, model: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Write the model's weights to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
        save_file(state, tmp, metadata={"format": "pt", **(metadata or {})})
        give_usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    sampler_state: torch.Tensor, step: int, elapsed_s: float,
                    running_loss: tuple[float, int] = (0.0, 0)) -> Path:
    """Write a complete resumable checkpoint into ``run_dir/checkpoint`` and return its path.

    ``running_loss`` is the sum and count of training losses since the last logged
    evaluation, so that a resumed run logs the same mean training loss."""
    target = run_dir / CHECKPOINT_DIR
    previous = run_dir / PREVIOUS_CHECKPOINT_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", suffix=".tmp", dir=run_dir))
    try:
        give_usual_mode(tmp, folder=True)
        save_weights(tmp / "model.safetensors", model)
        tensors, groups = _flatten_optimizer(optimizer.state_dict())
        tensors["sampler_state"] = sampler_state.clone()
        save_file(tensors, tmp / "trainer.safetensors")
        give_usual_mode(tmp / "trainer.safetensors")
        atomic_write_json(tmp / "state.json", {"format_version": CHECKPOINT_FORMAT_VERSION, "step": step,
                                               "elapsed_s": elapsed_s, "param_groups": groups,
                                               "running_loss": list(running_loss)})
        # Two renames: a crash between them leaves the previous checkpoint, which load_checkpoint reads.
        if previous.exists():
            shutil.rmtree(previous)
        if target.exists():
            os.replace(target, previous)
        os.replace(tmp, target)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("checkpoint at step %d written to %s", step, target)
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Return the newest complete checkpoint folder of a run, or ``None``."""
    for name in (CHECKPOINT_DIR, PREVIOUS_CHECKPOINT_DIR):
        folder = run_dir / name
        if (folder / "state.json").is_file():
            return folder
    return None


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], TrainerState]:
    """Return the weights and trainer state stored in a checkpoint folder."""
    try:
        state = json.loads((folder / "state.json").read_text())
        weights = load_file(folder / "model.safetensors")
        tensors = load_file(folder / "trainer.safetensors")
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"Checkpoint {folder} is unreadable ({error}); delete it to start over.") from error
    if state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"Checkpoint {folder} has format {state.get('format_version')!r}, "
                              f"expected {CHECKPOINT_FORMAT_VERSION}; retrain or delete it.")
    optimizer = _unflatten_optimizer(tensors, state["param_groups"])
    loss_sum, loss_count = state.get("running_loss", (0.0, 0))  # absent in checkpoints of older runs
    return weights, TrainerState(int(state["step"]), float(state["elapsed_s"]), optimizer, tensors["sampler_state"],
                                 (float(loss_sum), int(loss_count)))


def read_config(run_dir: Path) -> RunConfig:
    """Return the ``RunConfig`` of a run folder."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no config.json, so it is not a run folder; "
                              "pass a folder written by `workbench arith train`.")
    return RunConfig.from_dict(json.loads(path.read_text()))


def read_eval(run_dir: Path | str) -> dict[str, Any] | None:
    """Return the final evaluation (``eval.json``) of a run, or None if it has not finished."""
    path = Path(run_dir) / "eval.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); rerun the `workbench arith train` command "
                              f"with --out {run_dir} to write it again.") from error


def list_runs(folder: Path | str = SHIPPED_RUNS) -> list[Path]:
    """Return the run folders directly under ``folder`` (default: the checkpoints shipped in data/arith)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if (path / "config.json").is_file())


def load_run(run_dir: Path | str):
    """Return ``(config, model)`` of a run: the final weights, else the latest checkpoint's."""
    from analysis.arithmetic.model import build_model

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    final = run_dir / "model.safetensors"
    if final.is_file():
        weights = load_file(final)
    else:
        folder = latest_checkpoint(run_dir)
        if folder is None:
            raise CheckpointError(f"{run_dir} has neither model.safetensors nor a checkpoint; train it first.")
        weights = load_file(folder / "model.safetensors")
    model = build_model(config, state_dict=weights)
    model.eval()
    return config, model
