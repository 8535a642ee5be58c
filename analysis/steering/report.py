"""One run of every steering experiment on a model, written as JSON (``workbench icv report``).

Vectors are built from the first ``n_pairs`` pairs of each shipped set; measures
use the first ``n_inputs`` held-out inputs. Small defaults keep a CPU run in
tens of minutes; the numbers in docs/steering.md come from this command.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict
from pathlib import Path

from transformer_lens.model_bridge import TransformerBridge

from analysis.paths import atomic_write_json
from analysis.steering.concepts import analogy_report, inhibition_audit
from analysis.steering.evaluate import (
    evaluate_condition,
    evaluate_sweep,
    few_shot_prompt,
    results_to_dicts,
    sentiment,
    zero_shot_prompt,
)
from analysis.steering.icv import build_icv
from analysis.steering.steer import generate_batch
from probes.demos import demos_hash, load_demos, load_inputs, shipped_demos, shipped_heldout

logger = logging.getLogger(__name__)


def _pairs(name: str) -> list[tuple[str, str]]:
    return [(pair.x, pair.y) for pair in load_demos(shipped_demos()[name]).pairs]


def steering_report(
    model: TransformerBridge, out: Path, n_pairs: int = 24, n_inputs: int = 8,
    strengths: tuple[float, ...] = (1.0, 2.0, 4.0),
) -> dict:
    started = time.perf_counter()
    report: dict = {"n_pairs": n_pairs, "n_inputs": n_inputs}

    vectors = {}
    for name in ("sentiment", "politeness", "formality"):
        pairs = _pairs(name)[:n_pairs]
        vectors[name] = build_icv(model, pairs, demos_hash=demos_hash(pairs), show_progress=False)
        report.setdefault("explained_variance", {})[name] = vectors[name].extra["explained_variance"]
    logger.info("built vectors in %.0f s", time.perf_counter() - started)

    # Sweep: the sentiment vector against no steering and in-context learning.
    inputs = load_inputs(shipped_heldout("sentiment"))[:n_inputs]
    sweep = evaluate_sweep(model, vectors["sentiment"], inputs, _pairs("sentiment"), strengths)
    report["sentiment_sweep"] = results_to_dicts(sweep)
    atomic_write_json(Path(out), report)  # keep finished sections if a later one is interrupted

    # Composition: sentiment + politeness on rude inputs; both measures for a, b and a + b.
    rude = load_inputs(shipped_heldout("politeness"))[:n_inputs]
    prompts = [zero_shot_prompt(text) for text in rude]
    strength = 2.0
    combined = vectors["sentiment"] + vectors["politeness"]
    report["composition"] = {
        "strength": strength,
        "rows": [asdict(evaluate_condition(model, rude, prompts, label, strength, vector))
                 for label, vector in (("none", None), ("sentiment", vectors["sentiment"]),
                                       ("politeness", vectors["politeness"]), ("sentiment + politeness", combined))],
    }
    logger.info("composition done")
    atomic_write_json(Path(out), report)  # keep finished sections if a later one is interrupted

    # Analogy on the 2x2 grid: relation (capital, antonym) x case (as written, upper).
    grid = {"AC": _pairs("fv_country_capital"), "AD": _pairs("fv_country_capital_upper"),
            "BC": _pairs("fv_antonym"), "BD": _pairs("fv_antonym_upper")}
    analogy = analogy_report(model, grid, n_train=n_pairs)
    report["analogy"] = asdict(analogy)
    logger.info("analogy done")
    atomic_write_json(Path(out), report)  # keep finished sections if a later one is interrupted

    # Inhibition: erase the sentiment direction, measure in-context positive rewriting, try to restore it.
    shots = _pairs("sentiment")[:8]
    few_shot = [few_shot_prompt(text, shots) for text in inputs]

    def positive_rewriting() -> float:
        outputs = generate_batch(model, few_shot, 12)
        return statistics.fmean(sentiment([o.text.strip().split("\n")[0] for o in outputs]))

    audit = inhibition_audit(model, vectors["sentiment"], {k: v for k, v in vectors.items() if k != "sentiment"},
                             positive_rewriting, strengths=(2.0, 4.0))
    report["inhibition"] = asdict(audit) | {"removed_share": audit.removed_share,
                                            "restored_share": audit.restored_share}
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(Path(out), report)
    return report
