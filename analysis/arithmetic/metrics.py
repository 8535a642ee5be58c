"""Evaluation of a multiplication model: exact match, per-digit accuracy, per-subtask loss.

Two kinds of accuracy, always named:

* greedy: the model writes the whole answer itself (argmax, token by token) after
  the ``=``; a problem is correct when every answer digit and the end token match.
* teacher-forced: each answer token is predicted from the true preceding tokens,
  in one forward pass (the accuracy the released code of Qiu et al. 2024 reports).
  It is never lower than greedy exact match.

Digit-level numbers are indexed by place (power of ten, 0 = units), so reversed
and plain formats are comparable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from analysis.arithmetic.subtasks import SUBTASKS, subtask_masks
from probes.arithmetic import Batch, ProblemSpec, columns


@dataclass
class Predictions:
    """Per-problem results [batch] and per-position results [batch, seq_len]."""

    greedy_tokens: Tensor  # the rows with the model's own answer written in
    greedy_correct: Tensor
    teacher_forced_correct: Tensor
    greedy_token_correct: Tensor  # meaningful where batch.target_mask
    teacher_forced_token_correct: Tensor
    token_loss: Tensor  # cross-entropy of each target token (nats), 0 elsewhere


@dataclass(frozen=True)
class EvalResult:
    """Summary of a model on a set of problems; lists are indexed by place (0 = units)."""

    n_problems: int
    loss: float
    exact_match_greedy: float
    exact_match_teacher_forced: float
    digit_accuracy_greedy: list[float]
    digit_accuracy_teacher_forced: list[float]
    digit_loss: list[float]
    subtask_loss: dict[str, float]
    subtask_accuracy_teacher_forced: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, float]:
        """Return a one-level dict for the metrics log (``digit_loss_3``, ``subtask_loss_cascade``)."""
        row: dict[str, float] = {
            "loss": self.loss,
            "exact_match_greedy": self.exact_match_greedy,
            "exact_match_teacher_forced": self.exact_match_teacher_forced,
        }
        for name in ("digit_accuracy_greedy", "digit_accuracy_teacher_forced", "digit_loss"):
            for place, value in enumerate(getattr(self, name)):
                row[f"{name}_{place}"] = value
        for name in ("subtask_loss", "subtask_accuracy_teacher_forced"):
            for subtask, value in getattr(self, name).items():
                row[f"{name}_{subtask}"] = value
        return row


def token_logits(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Return logits [batch, seq_len, vocab] where row ``t`` predicts token ``t``.

    The model's output at position ``t - 1`` is shifted right by one; position 0
    is never a target and gets zeros.
    """
    logits = model(tokens[:, :-1])
    return torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)


def answer_loss(model: torch.nn.Module, batch: Batch) -> Tensor:
    """Return the mean cross-entropy over answer tokens (digits and end token) only."""
    logits = token_logits(model, batch.tokens)
    return F.cross_entropy(logits[batch.target_mask], batch.tokens[batch.target_mask])


@torch.no_grad()
def greedy_answers(model: torch.nn.Module, batch: Batch) -> Tensor:
    """Return the rows with every answer token replaced by the model's greedy choice.

    All rows advance together, one answer token per forward pass; rows whose
    answer starts later (plain formats) keep their own offsets.
    """
    tokens = batch.tokens.clone()
    rows = torch.arange(len(batch))
    n_steps = int(batch.target_mask.sum(dim=1).max())
    for step in range(n_steps):
        position = batch.answer_start + step
        live = position < tokens.shape[1]
        logits = model(tokens[:, :-1])
        choice = logits[rows[live], position[live] - 1].argmax(dim=-1)
        tokens[rows[live], position[live]] = choice
    return tokens


@torch.no_grad()
def predict(model: torch.nn.Module, batch: Batch, chunk_size: int = 1024) -> Predictions:
    """Run greedy generation and teacher forcing on ``batch``, in chunks of ``chunk_size``."""
    parts = []
    for start in range(0, len(batch), chunk_size):
        part = batch.subset(slice(start, start + chunk_size))
        logits = token_logits(model, part.tokens)
        token_loss = F.cross_entropy(logits.transpose(1, 2), part.tokens, reduction="none")
        token_loss = token_loss * part.target_mask
        forced_ok = (logits.argmax(dim=-1) == part.tokens) | ~part.target_mask
        greedy = greedy_answers(model, part)
        greedy_ok = (greedy == part.tokens) | ~part.target_mask
        parts.append(Predictions(greedy, greedy_ok.all(dim=1), forced_ok.all(dim=1), greedy_ok, forced_ok,
                                 token_loss))
    return Predictions(*(torch.cat([getattr(p, name) for p in parts]) for name in
                         ("greedy_tokens", "greedy_correct", "teacher_forced_correct", "greedy_token_correct",
                          "teacher_forced_token_correct", "token_loss")))


def json_safe(value: Any) -> Any:
    """Return ``value`` with every NaN float replaced by ``None``, so files are standard JSON.

    NaN marks a metric with no data (a place no problem has, a subtask that never occurs).
    """
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _mean(values: Tensor, mask: Tensor) -> float:
    count = int(mask.sum())
    return float(values[mask].float().mean()) if count else math.nan


def summarize(batch: Batch, spec: ProblemSpec, predictions: Predictions) -> EvalResult:
    """Reduce ``predictions`` on ``batch`` to an ``EvalResult``."""
    digit_mask = batch.place >= 0
    cols = columns(batch.a, batch.b, spec)
    # Subtask label of each answer position, looked up through its place.
    safe_place = batch.place.clamp(min=0)
    position_masks = {
        name: mask.gather(1, safe_place) & digit_mask for name, mask in subtask_masks(cols).items()
    }

    return EvalResult(
        n_problems=len(batch),
        loss=_mean(predictions.token_loss, batch.target_mask),
        exact_match_greedy=float(predictions.greedy_correct.float().mean()),
        exact_match_teacher_forced=float(predictions.teacher_forced_correct.float().mean()),
        digit_accuracy_greedy=[_mean(predictions.greedy_token_correct, batch.place == k)
                               for k in range(spec.n_places)],
        digit_accuracy_teacher_forced=[_mean(predictions.teacher_forced_token_correct, batch.place == k)
                                       for k in range(spec.n_places)],
        digit_loss=[_mean(predictions.token_loss, batch.place == k) for k in range(spec.n_places)],
        subtask_loss={name: _mean(predictions.token_loss, position_masks[name]) for name in SUBTASKS},
        subtask_accuracy_teacher_forced={name: _mean(predictions.teacher_forced_token_correct,
                                                     position_masks[name]) for name in SUBTASKS},
    )


def evaluate(model: torch.nn.Module, batch: Batch, spec: ProblemSpec) -> EvalResult:
    """Evaluate ``model`` on ``batch`` in eval mode; the training mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        return summarize(batch, spec, predict(model, batch))
    finally:
        model.train(was_training)
