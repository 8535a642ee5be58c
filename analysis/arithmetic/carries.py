"""Carries: accuracy by how many carries a problem needs, and linear probes for the carry.

* ``accuracy_by_carries`` groups test problems by the number of columns that
  receive a nonzero carry and by the longest cascade (``subtasks.cascade_length``),
  and reports greedy exact match per group, plus each digit's greedy accuracy by
  the size of its incoming carry.
* ``carry_probes`` fits a multinomial logistic-regression probe for the carry into
  column ``k`` from the residual stream at the position that predicts digit ``k``
  (teacher-forced rows), per layer: ``blocks.{L}.hook_resid_pre`` and the last
  ``hook_resid_post``. Probes train on fresh training problems and are scored on
  the test set against the majority-class baseline.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from analysis.arithmetic.attention import predicting_positions
from analysis.arithmetic.metrics import predict
from analysis.arithmetic.patching import residual_hooks
from analysis.arithmetic.subtasks import cascade_length
from probes.arithmetic import Batch, ProblemSpec, columns

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupAccuracy:
    value: int  # the number of carries, cascade length or carry size of this group
    n_problems: int
    accuracy: float


@dataclass(frozen=True)
class CarryAccuracy:
    """Greedy accuracy grouped by carries; ``digit_by_carry_in[place]`` lists groups by carry size."""

    by_carry_count: list[GroupAccuracy]
    by_cascade_length: list[GroupAccuracy]
    digit_by_carry_in: list[list[GroupAccuracy]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _groups(keys: Tensor, correct: Tensor) -> list[GroupAccuracy]:
    return [GroupAccuracy(int(value), int((keys == value).sum()), float(correct[keys == value].float().mean()))
            for value in keys.unique().tolist()]


def accuracy_by_carries(model: torch.nn.Module, spec: ProblemSpec, batch: Batch) -> CarryAccuracy:
    """Return greedy exact match by carry count and cascade length, and digit accuracy by carry size."""
    was_training = model.training
    model.eval()
    try:
        predictions = predict(model, batch)
    finally:
        model.train(was_training)
    cols = columns(batch.a, batch.b, spec)
    carry_count = (cols.carry_in > 0).sum(dim=1)

    # Greedy correctness of each place's digit, [batch, n_places]; absent places stay False and are skipped.
    digit_correct = torch.zeros(len(batch), spec.n_places, dtype=torch.bool)
    present = torch.zeros_like(digit_correct)
    rows, positions = (batch.place >= 0).nonzero(as_tuple=True)
    places = batch.place[rows, positions]
    digit_correct[rows, places] = predictions.greedy_token_correct[rows, positions]
    present[rows, places] = True

    by_digit = []
    for place in range(spec.n_places):
        mask = present[:, place]
        by_digit.append(_groups(cols.carry_in[mask, place], digit_correct[mask, place]))
    return CarryAccuracy(_groups(carry_count, predictions.greedy_correct),
                         _groups(cascade_length(cols), predictions.greedy_correct), by_digit)


@dataclass(frozen=True)
class CarryProbeResult:
    """Test accuracy ``accuracy[hook][place]`` of the carry probes, and the majority baseline per place."""

    hooks: list[str]
    places: list[int]
    accuracy: list[list[float]]
    baseline: list[float]
    n_train: int
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def _residuals(model: torch.nn.Module, batch: Batch, spec: ProblemSpec, hooks: list[str]) -> Tensor:
    """Return residual vectors [hook, batch, place, d_model] at each place's predicting position."""
    _, cache = model.run_with_cache(batch.tokens[:, :-1], names_filter=lambda name: name in hooks)
    query = predicting_positions(batch, spec.n_places).clamp(min=0)
    rows = torch.arange(len(batch))[:, None]
    return torch.stack([cache[name][rows, query] for name in hooks])


def _fit_probe(features: Tensor, labels: Tensor, n_classes: int, steps: int) -> torch.nn.Linear:
    probe = torch.nn.Linear(features.shape[1], n_classes)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(probe(features), labels) + 1e-4 * probe.weight.square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probe


def carry_probes(model: torch.nn.Module, spec: ProblemSpec, train_batch: Batch, test_batch: Batch,
                 steps: int = 300, progress: bool = True) -> CarryProbeResult:
    """Fit one linear probe per (hook, place) for the carry into that place; score it on ``test_batch``."""
    was_training = model.training
    model.eval()
    hooks = residual_hooks(model.cfg.n_layers)
    try:
        train_x = _residuals(model, train_batch, spec, hooks)
        test_x = _residuals(model, test_batch, spec, hooks)
    finally:
        model.train(was_training)
    train_y = columns(train_batch.a, train_batch.b, spec).carry_in
    test_y = columns(test_batch.a, test_batch.b, spec).carry_in
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    train_present = predicting_positions(train_batch, spec.n_places) >= 0
    test_present = predicting_positions(test_batch, spec.n_places) >= 0

    accuracy = [[float("nan")] * spec.n_places for _ in hooks]
    baseline = [float("nan")] * spec.n_places
    bar = tqdm(total=len(hooks) * (spec.n_places - 1), desc="carry probes", disable=not progress)
    for place in range(1, spec.n_places):  # nothing carries into the units column
        train_rows, test_rows = train_present[:, place], test_present[:, place]
        labels, truth = train_y[train_rows, place], test_y[test_rows, place]
        majority = int(labels.mode().values)
        baseline[place] = float((truth == majority).float().mean())
        for index in range(len(hooks)):
            features = train_x[index, train_rows, place]
            mean, std = features.mean(dim=0), features.std(dim=0) + 1e-6
            with torch.enable_grad():
                probe = _fit_probe((features - mean) / std, labels, n_classes, steps)
            with torch.no_grad():
                guess = probe((test_x[index, test_rows, place] - mean) / std).argmax(dim=-1)
            accuracy[index][place] = float((guess == truth).float().mean())
            bar.update(1)
    bar.close()
    return CarryProbeResult(hooks, list(range(spec.n_places)), accuracy, baseline, len(train_batch), len(test_batch))
