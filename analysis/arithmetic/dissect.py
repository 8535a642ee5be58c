"""Run every dissection of a trained model and write one JSON file per part.

Each part's file is written atomically and skipped when it already exists, so an
interrupted ``workbench arith dissect`` resumes with the parts still missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from analysis.arithmetic.attention import answer_operand_attention, operand_labels
from analysis.arithmetic.carries import accuracy_by_carries, carry_probes
from analysis.arithmetic.config import RunConfig
from analysis.arithmetic.curves import learning_curve_figure, learning_curves, learning_order
from analysis.arithmetic.metrics import json_safe
from analysis.arithmetic.patching import activation_patching
from analysis.arithmetic.training import held_out_batch
from analysis.paths import atomic_write_json, atomic_write_text
from probes.arithmetic import TrainSampler, make_batch

logger = logging.getLogger(__name__)


def read_dissection(folder: Path | str) -> dict[str, Any]:
    """Return every part written by ``run_dissection`` in ``folder``, keyed by file stem
    (``attention``, ``carries``, ``probes``, ``curves``, ``patching_a0`` ...).

    Values without data (NaN in the dataclasses) are ``None`` here, as in the files.
    """
    folder = Path(folder)
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def run_dissection(run_dir: Path, config: RunConfig, model: torch.nn.Module, out_dir: Path, parts: list[str],
                   n_problems: int = 1000, slots: list[str] | None = None,
                   force: bool = False) -> list[tuple[Path, str]]:
    """Compute the chosen ``parts`` and return ``(path, "wrote" | "skipped")`` for each file."""
    spec = config.problem
    out_dir.mkdir(parents=True, exist_ok=True)
    test_set, batch = held_out_batch(config, n_problems)
    done: list[tuple[Path, str]] = []

    def write(name: str, compute) -> None:
        path = out_dir / f"{name}.json"
        if path.exists() and not force:
            done.append((path, "skipped"))
            return
        logger.info("computing %s", name)
        atomic_write_json(path, json_safe(compute()))
        done.append((path, "wrote"))

    if "curves" in parts and (run_dir / "metrics.jsonl").is_file():
        def curves() -> dict:
            data = learning_curves(run_dir)
            # Self-contained, so that opening the file loads nothing from the network.
            atomic_write_text(out_dir / "learning_curves.html", learning_curve_figure(data).to_html(
                include_plotlyjs=True, full_html=True))
            return {"curves": data.to_dict(), "order": learning_order(data).to_dict()}
        write("curves", curves)
    if "attention" in parts:
        write("attention", lambda: answer_operand_attention(model, spec, batch).to_dict())
    if "carries" in parts:
        write("carries", lambda: accuracy_by_carries(model, spec, batch).to_dict())
    if "probes" in parts:
        def probes() -> dict:
            train_spec = spec.__class__(spec.n_a, spec.n_b, spec.format, simple_share=0.0)
            sampler = TrainSampler(train_spec, test_set, seed=config.train.seed + 7)
            a, b = sampler.sample_operands(max(n_problems, 500))
            return carry_probes(model, spec, make_batch(a, b, spec), batch).to_dict()
        write("probes", probes)
    if "patching" in parts:
        for slot in slots or operand_labels(spec):
            count = min(n_problems, 300)  # one forward pass per (hook, position): keep each pass small
            write(f"patching_{slot}", lambda slot=slot: activation_patching(
                model, spec, batch.a[:count], batch.b[:count], slot).to_dict())
    return done
