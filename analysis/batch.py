"""Batch jobs: run the head search over several models, one result file per model.

Each result is written atomically (temporary file, then rename) and carries a
``complete`` flag and the job's parameters, so an interrupted run resumes: a
model whose result file is complete for the same tasks and methods is skipped.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from analysis import __version__
from analysis.models import load_model, model_info
from analysis.paths import atomic_write_json, atomic_write_text, child_path, safe_name
from analysis.successor import METHODS, HeadScores, search_heads
from probes.ordinal import OrdinalTask, tokenize_task

logger = logging.getLogger(__name__)

RESULT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class HeadsJob:
    """Parameters of a head search; part of every result so stale results are not reused."""

    tasks: tuple[str, ...]
    methods: tuple[str, ...] = METHODS
    top: int = 20

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "methods": list(self.methods), "top": self.top}


def result_paths(out_dir: Path, model_name: str) -> tuple[Path, Path]:
    stem = safe_name(model_name)
    return child_path(out_dir, f"{stem}.heads.json"), child_path(out_dir, f"{stem}.heads.csv")


def read_result(path: Path) -> dict[str, Any] | None:
    """Return a result file's contents, or None if it is missing, corrupt or incomplete."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("result file %s is unreadable (%s); treating it as missing", path, error)
        return None
    if data.get("format_version") != RESULT_FORMAT_VERSION or not data.get("complete"):
        return None
    return data


def is_complete(path: Path, job: HeadsJob) -> bool:
    """Return whether ``path`` contains a complete result for the same tasks and methods (``top`` may differ)."""
    data = read_result(path)
    if data is None:
        return False
    stored = data.get("job", {})
    return stored.get("tasks") == list(job.tasks) and stored.get("methods") == list(job.methods)


def ranking_csv(scores: HeadScores, top: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    task_names = [task.name for task in scores.tasks if task.successor_pairs()]
    writer.writerow(["method", "rank", "head", "layer", "head_index", "mean_score", *task_names])
    for method in scores.scores:
        for rank, head in enumerate(scores.ranking(method, top), start=1):
            writer.writerow([method, rank, head.label, head.layer, head.head, f"{head.mean_score:.4f}",
                             *(f"{head.per_task.get(name, 0.0):.4f}" for name in task_names)])
    return buffer.getvalue()


def run_heads_for_model(
    model_name: str,
    tasks: list[OrdinalTask],
    job: HeadsJob,
    out_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load one model, score its heads and write ``NAME.heads.json`` and ``NAME.heads.csv``."""
    started = time.perf_counter()
    if progress:
        progress("loading model")
    model = load_model(model_name)
    tokenized = [tokenize_task(task, model.tokenizer) for task in tasks]
    for task in tokenized:
        if task.dropped:
            logger.info("%s: task %s dropped %d of %d items", model_name, task.name,
                        len(task.dropped), task.task_length)

    scores = search_heads(model, tokenized, job.methods, progress=progress)
    result = {
        "format_version": RESULT_FORMAT_VERSION,
        "complete": True,
        "workbench_version": __version__,
        "model": model_info(model).to_dict(),
        "requested_model": model_name,  # what to pass to load_model to get this model again
        "job": job.to_dict(),
        "seconds": round(time.perf_counter() - started, 2),
        "chance": {task.name: task.chance for task in tokenized},
        **scores.to_dict(top=job.top),
    }
    json_path, csv_path = result_paths(out_dir, model_name)
    atomic_write_text(csv_path, ranking_csv(scores, job.top))
    atomic_write_json(json_path, result)  # written last: its `complete` flag covers the CSV too
    return result
