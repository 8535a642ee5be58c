"""Training loop for multiplication models: AdamW with warm-up, loss on answer tokens only.

``train`` writes a run folder (layout in ``analysis.arithmetic.checkpoint``),
evaluates every ``eval_every`` steps on the first ``eval_size`` test problems,
appends each evaluation to ``metrics.jsonl``, and checkpoints every
``checkpoint_every`` steps and on interrupt. Calling it again on the same folder
resumes from the latest checkpoint and draws the same batches an uninterrupted
run would have drawn. The final evaluation covers the whole test set.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from analysis.arithmetic.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_run,
    read_config,
    save_checkpoint,
    save_weights,
)
from analysis.arithmetic.config import ConfigError, RunConfig
from analysis.arithmetic.metrics import EvalResult, answer_loss, evaluate, json_safe
from analysis.arithmetic.model import build_model
from analysis.paths import atomic_write_json, atomic_write_text
from probes.arithmetic import Batch, TestSet, TrainSampler, make_batch, make_test_set

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    elapsed_s: float
    final: EvalResult
    stopped_early: bool


def learning_rate(config: RunConfig, step: int) -> float:
    """Return the learning rate for 0-based ``step``: linear warm-up, then the schedule."""
    train = config.train
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.schedule == "constant":
        return train.lr
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    progress = min(progress, 1.0)
    floor = train.min_lr_ratio
    return train.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.AdamW:
    train = config.train
    return torch.optim.AdamW(model.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, grad_clip: float) -> float:
    """Take one optimiser step on ``batch`` and return its loss before the step."""
    loss = answer_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def held_out_batch(config: RunConfig, size: int | None = None) -> tuple[TestSet, Batch]:
    """Return the run's fixed test set and the batch of its first ``size`` problems (all by default)."""
    test_set = make_test_set(config.problem, config.train.test_size, config.train.test_seed)
    count = len(test_set) if size is None else min(size, len(test_set))
    return test_set, make_batch(test_set.a[:count], test_set.b[:count], config.problem)


@contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn Ctrl-C into a flag that the training loop reads between steps.

    A KeyboardInterrupt raised inside a step could land after the sampler drew
    the batch but before the optimiser stepped, and a checkpoint saved then would
    not resume the same run. Outside the main thread signals cannot be caught, so
    there the flag stays False and Ctrl-C behaves as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield lambda: bool(pending)
    finally:
        signal.signal(signal.SIGINT, previous)


def initial_weights(config: RunConfig) -> dict[str, torch.Tensor]:
    """Return the final weights of the run ``config.train.init_from``, checking that
    its problem and model match ``config``. Fine-tuning changes only the training,
    and the share of simple problems counts as training data, so it may differ."""
    source = Path(config.train.init_from)
    if (source / "config.json").is_file() and not (source / "model.safetensors").is_file():
        raise ConfigError(f"--init-from {source} has no model.safetensors, so it has not finished; "
                          "resume it with `workbench arith train --out` first.")
    try:
        source_config, source_model = load_run(source)
    except (CheckpointError, ConfigError, OSError) as error:
        raise ConfigError(f"--init-from {source}: {error}") from error
    theirs, ours = source_config.to_dict(), config.to_dict()
    differing = [f"{section}.{key} ({value!r} there, {ours[section].get(key)!r} here)"
                 for section in ("problem", "model")
                 for key, value in theirs[section].items()
                 if key != "simple_share" and ours[section].get(key) != value]
    if differing:
        raise ConfigError(
            f"--init-from {source} was trained with another problem or model: {'; '.join(differing)}. "
            f"Fine-tuning changes only the training settings; pass --preset {source_config.preset} "
            "or leave --preset out to take the source run's problem and model."
        )
    return source_model.state_dict()


def _check_same_run(run_dir: Path, config: RunConfig) -> None:
    """Raise unless ``config`` matches the run stored in ``run_dir``; ``train.steps`` may differ."""
    stored = read_config(run_dir).to_dict()
    wanted = config.to_dict()
    changed = []
    for section, values in wanted.items():
        if not isinstance(values, dict):
            if stored.get(section) != values:
                changed.append(section)
            continue
        for key, value in values.items():
            if key != "steps" and stored.get(section, {}).get(key) != value:
                changed.append(f"{section}.{key}")
    if changed:
        raise ConfigError(
            f"{run_dir} contains a run with another configuration (differs in {', '.join(changed)}); "
            "pass another --out folder, or --force to start over."
        )


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (they came from the part of a run that was lost)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(
    config: RunConfig,
    run_dir: Path | str,
    *,
    resume: bool = True,
    progress: bool = True,
    stop_at_exact_match: float | None = None,
    on_eval: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train (or resume) the run ``config`` in ``run_dir`` and return its final evaluation.

    ``stop_at_exact_match`` ends training at the first periodic evaluation whose
    greedy exact match reaches it. ``on_eval`` receives every logged row.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a folder; pass a new or empty folder as --out.")
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / METRICS_FILE

    if (run_dir / "config.json").is_file():
        if not resume:
            raise ConfigError(f"{run_dir} already contains a run; pass --force to start over or another --out folder.")
        _check_same_run(run_dir, config)
    elif any(path.name != ".DS_Store" for path in run_dir.iterdir()):
        raise ConfigError(f"{run_dir} is not empty and is not a run folder; pass an empty or new --out folder.")

    model = build_model(config)
    model.train()
    optimizer = make_optimizer(model, config)
    test_set, eval_batch = held_out_batch(config, config.train.eval_size)
    sampler = TrainSampler(config.problem, test_set, seed=config.train.seed + 1)

    start_step, elapsed_before, running = 0, 0.0, (0.0, 0)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        weights, state = load_checkpoint(checkpoint)
        if state.step > config.train.steps:
            raise ConfigError(f"{run_dir} is already at step {state.step}, past --steps {config.train.steps}; "
                              "pass more steps to go on, or another --out folder for a shorter run.")
        model.load_state_dict(weights)
        optimizer.load_state_dict(state.optimizer)
        sampler.load_state(state.sampler_state)
        start_step, elapsed_before, running = state.step, state.elapsed_s, state.running_loss
    elif config.train.init_from:
        # Checked before config.json is written, so a rejected source leaves the folder unused.
        model.load_state_dict(initial_weights(config))
        logger.info("initialised %s from %s", run_dir, config.train.init_from)

    atomic_write_json(run_dir / "config.json", config.to_dict())
    if checkpoint is not None:
        _truncate_metrics(metrics_path, start_step)
        logger.info("resuming %s from step %d", run_dir, start_step)
    else:
        metrics_path.unlink(missing_ok=True)

    steps = config.train.steps
    started = time.perf_counter()
    (running_loss, running_count), step = running, start_step
    stopped_early = False

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    bar = tqdm(total=steps, initial=start_step, desc=f"train {run_dir.name}", disable=not progress, unit="step")
    try:
        with deferred_interrupt() as interrupted:
            while step < steps:
                if interrupted():
                    raise KeyboardInterrupt
                lr = learning_rate(config, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = train_step(model, optimizer, sampler.sample(config.train.batch_size), config.train.grad_clip)
                step += 1
                running_loss += loss
                running_count += 1
                bar.update(1)

                if step % config.train.eval_every == 0 or step == steps:
                    result = evaluate(model, eval_batch, config.problem)
                    row = {"step": step, "time_s": round(elapsed(), 3), "lr": lr,
                           "train_loss": running_loss / running_count, **result.flat()}
                    with metrics_path.open("a") as handle:
                        handle.write(json.dumps(json_safe(row)) + "\n")
                    running_loss, running_count = 0.0, 0
                    bar.set_postfix(train_loss=f"{row['train_loss']:.3f}", greedy=f"{result.exact_match_greedy:.3f}")
                    logger.info("step %d: test loss %.4f, greedy exact match %.4f", step, row["loss"],
                                result.exact_match_greedy)
                    if on_eval is not None:
                        on_eval(row)
                    if stop_at_exact_match is not None and result.exact_match_greedy >= stop_at_exact_match:
                        stopped_early = True
                        break

                if step % config.train.checkpoint_every == 0:
                    save_checkpoint(run_dir, model, optimizer, sampler.state(), step, elapsed(),
                                    (running_loss, running_count))
    except KeyboardInterrupt:
        save_checkpoint(run_dir, model, optimizer, sampler.state(), step, elapsed(), (running_loss, running_count))
        logger.warning("interrupted at step %d; the checkpoint is saved, rerun to resume", step)
        raise
    finally:
        bar.close()

    total_s = elapsed()
    if step % config.train.checkpoint_every != 0 or stopped_early:
        save_checkpoint(run_dir, model, optimizer, sampler.state(), step, total_s)
    return finish(config, model, run_dir, step, total_s, stopped_early)


def hardware_description(model: torch.nn.Module) -> dict[str, str | int]:
    """Describe where ``model`` trained, so that a logged time can be compared with another machine's."""
    return {"device": str(next(model.parameters()).device), "machine": platform.machine(),
            "processor": platform.processor() or "unknown", "cpu_count": os.cpu_count() or 0,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def finish(config: RunConfig, model: torch.nn.Module, run_dir: Path, step: int, elapsed_s: float,
           stopped_early: bool = False) -> TrainResult:
    """Evaluate on the whole test set and write ``model.safetensors`` and ``eval.json``."""
    _, full_batch = held_out_batch(config)
    result = evaluate(model, full_batch, config.problem)
    save_weights(run_dir / "model.safetensors", model, metadata={"step": str(step)})
    atomic_write_json(run_dir / "eval.json", {"step": step, "train_time_s": round(elapsed_s, 1),
                                              "hardware": hardware_description(model), "test_set": "full",
                                              **json_safe(result.to_dict())})
    logger.info("finished %s at step %d: greedy exact match %.4f on %d test problems", run_dir, step,
                result.exact_match_greedy, result.n_problems)
    return TrainResult(run_dir, step, elapsed_s, result, stopped_early)
