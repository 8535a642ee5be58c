"""Learning curves and learning order, read from a run's ``metrics.jsonl``.

Qiu et al. 2024 observe that the answer digits are learned one after another
(the units and the top digit first, the middle digits last) and that subtasks
with carries are learned later; ``learning_order`` measures both on a run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analysis.arithmetic.checkpoint import CheckpointError
from analysis.arithmetic.subtasks import SUBTASKS
from analysis.arithmetic.training import METRICS_FILE


@dataclass(frozen=True)
class LearningCurves:
    """Every logged metric over training: ``series[name][i]`` belongs to ``steps[i]``."""

    steps: list[int]
    time_s: list[float]
    series: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digit_series(self, kind: str = "digit_accuracy_greedy") -> dict[int, list[float]]:
        """Return ``{place: values}`` for a per-digit metric (``digit_loss``, ``digit_accuracy_greedy`` ...)."""
        prefix = f"{kind}_"
        return {int(name[len(prefix):]): values for name, values in self.series.items()
                if name.startswith(prefix) and name[len(prefix):].isdigit()}

    def subtask_series(self, kind: str = "subtask_loss") -> dict[str, list[float]]:
        return {name: self.series[f"{kind}_{name}"] for name in SUBTASKS if f"{kind}_{name}" in self.series}


def learning_curves(run_dir: Path | str) -> LearningCurves:
    """Read ``metrics.jsonl`` of a run folder."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no {METRICS_FILE}; train the run first (`workbench arith train`).")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    names = [key for key in rows[0] if key not in ("step", "time_s")] if rows else []
    # Missing values are written as null (see metrics.json_safe) and read back as NaN.
    series = {name: [math.nan if row.get(name) is None else float(row[name]) for row in rows] for name in names}
    return LearningCurves([row["step"] for row in rows], [row["time_s"] for row in rows], series)


@dataclass(frozen=True)
class LearningOrder:
    """Step at which each digit's teacher-forced accuracy first reached ``accuracy_threshold``
    and each subtask's loss first fell below ``loss_threshold`` (``None``: never)."""

    accuracy_threshold: float
    loss_threshold: float
    digits: dict[int, int | None]
    subtasks: dict[str, int | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digit_order(self) -> list[int]:
        """Return places sorted by the step they were learned; unlearned places come last."""
        return sorted(self.digits, key=lambda place: (self.digits[place] is None, self.digits[place] or 0))


def _first_step(steps: list[int], values: list[float], reached) -> int | None:
    for step, value in zip(steps, values):
        if not math.isnan(value) and reached(value):
            return step
    return None


def learning_order(curves: LearningCurves, accuracy_threshold: float = 0.9,
                   loss_threshold: float = 0.1) -> LearningOrder:
    """Return when each answer digit and each subtask was learned."""
    digits = {place: _first_step(curves.steps, values, lambda v: v >= accuracy_threshold)
              for place, values in sorted(curves.digit_series("digit_accuracy_teacher_forced").items())}
    subtasks = {name: _first_step(curves.steps, values, lambda v: v <= loss_threshold)
                for name, values in curves.subtask_series("subtask_loss").items()}
    return LearningOrder(accuracy_threshold, loss_threshold, digits, subtasks)


def learning_curve_figure(curves: LearningCurves):
    """Return a plotly figure: per-digit loss and per-subtask loss over training steps."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss per answer digit", "loss per subtask"))
    for place, values in sorted(curves.digit_series("digit_loss").items()):
        figure.add_scatter(x=curves.steps, y=values, name=f"digit 10^{place}", row=1, col=1)
    for name, values in curves.subtask_series("subtask_loss").items():
        figure.add_scatter(x=curves.steps, y=values, name=name, row=1, col=2)
    figure.update_yaxes(type="log", title_text="cross-entropy (nats)")
    figure.update_xaxes(title_text="training step")
    return figure
