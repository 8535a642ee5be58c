"""The format comparison of Shen et al. 2023 ("Positional Description Matters for
Transformers Arithmetic") at an equal budget: the same model, seed and number of
steps on each format, evaluated on the same test problems."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analysis.arithmetic.config import RunConfig
from analysis.arithmetic.metrics import json_safe
from analysis.arithmetic.training import train
from analysis.paths import atomic_write_json
from probes.arithmetic import get_format

logger = logging.getLogger(__name__)

DEFAULT_FORMATS = ("plain", "reversed", "padded", "padded-reversed")


@dataclass(frozen=True)
class FormatRow:
    format: str
    steps: int
    train_time_s: float
    exact_match_greedy: float
    exact_match_teacher_forced: float
    test_loss: float
    digit_accuracy_greedy: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_formats(base: RunConfig, out_dir: Path | str, formats: tuple[str, ...] = DEFAULT_FORMATS,
                    progress: bool = True) -> list[FormatRow]:
    """Train ``base`` once per format in ``out_dir/<format>`` (resumable) and return one row each.

    The test set is drawn from the same seed for every format, so all rows are
    scored on the same problems. ``comparison.json`` is rewritten after each format.
    """
    out_dir = Path(out_dir)
    rows = []
    for name in formats:
        config = base.updated(fmt=get_format(name))
        logger.info("format comparison: training %s for %d steps", name, config.train.steps)
        result = train(config, out_dir / name, progress=progress)
        rows.append(FormatRow(name, result.steps, round(result.elapsed_s, 1), result.final.exact_match_greedy,
                              result.final.exact_match_teacher_forced, result.final.loss,
                              result.final.digit_accuracy_greedy))
        atomic_write_json(out_dir / "comparison.json",
                          json_safe({"base": base.to_dict(), "rows": [row.to_dict() for row in rows]}))
    return rows
