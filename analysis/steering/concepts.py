"""Concept arithmetic on steering vectors: composition, analogies and an inhibition audit.

* Composition: steer with a, b and a + b and report each measure for all three,
  as activation addition and representation engineering compose directions.
* Function-vector style analogy: on a 2x2 grid of in-context tasks with known
  answers (relation x output case), test whether v_BD = v_AD + v_BC - v_AC
  does task BD, against the directly built v_BD and in-context learning.
* Inhibition audit: erase a concept direction from the residual stream (project it
  out at every layer), measure how much of a behaviour is gone, then search for a
  weighted combination of other vectors that brings it back, and report how much
  returns. This is the language-model analogue of checking that concept
  inhibition in diffusion models cannot be undone by composing other concepts.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from analysis.steering.evaluate import few_shot_prompt, zero_shot_prompt
from analysis.steering.icv import build_icv
from analysis.steering.steer import generate_batch, steering
from analysis.steering.vector import SteeringVector

logger = logging.getLogger(__name__)


# -- erasing a direction --------------------------------------------------------


def erasure_hooks(concept: SteeringVector) -> list[tuple[str, Callable]]:
    """Hooks that remove the component along ``concept.directions[L]`` from every position at layer L."""
    hooks = []
    for layer in range(concept.n_layers):
        direction = concept.directions[layer]
        if direction.norm() == 0:
            continue
        unit = direction / direction.norm()

        def erase(activation: Tensor, hook, unit: Tensor = unit) -> Tensor:
            unit = unit.to(activation.dtype)
            return activation - (activation @ unit)[..., None] * unit

        hooks.append((concept.hook_name(layer), erase))
    return hooks


@contextmanager
def erasing(model: TransformerBridge, concept: SteeringVector) -> Iterator[None]:
    """Project ``concept`` out of the residual stream inside the ``with`` block."""
    with model.hooks(fwd_hooks=erasure_hooks(concept)):
        yield


@dataclass
class InhibitionResult:
    """Behaviour before and after erasure, and after the best restoring combination found."""

    original: float
    erased: float
    restored: float
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def removed_share(self) -> float:
        """Share of the behaviour that erasure removed (1 = all of it)."""
        return 0.0 if self.original == 0 else (self.original - self.erased) / self.original

    @property
    def restored_share(self) -> float:
        """Share of the removed behaviour that the combination brought back."""
        gap = self.original - self.erased
        return 0.0 if gap == 0 else (self.restored - self.erased) / gap


def inhibition_audit(
    model: TransformerBridge,
    concept: SteeringVector,
    candidates: dict[str, SteeringVector],
    behaviour: Callable[[], float],
    strengths: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
) -> InhibitionResult:
    """Erase ``concept``, then search greedily, one candidate at a time, for the strengths that restore ``behaviour``.

    ``behaviour`` runs the model (whatever hooks are active) and returns a number
    that is larger when the behaviour is present.
    """
    original = behaviour()
    with erasing(model, concept):
        erased = behaviour()
        weights: dict[str, float] = {}
        best = erased
        for name, candidate in candidates.items():
            for strength in strengths:
                trial = dict(weights, **{name: strength})
                score = _with_combination(model, candidates, trial, behaviour)
                logger.info("inhibition audit: %s -> %.3f", trial, score)
                if score > best:
                    best, weights = score, trial
    return InhibitionResult(original, erased, best, weights)


def _with_combination(model, candidates, weights, behaviour) -> float:
    combined = None
    for name, strength in weights.items():
        scaled = strength * candidates[name]
        combined = scaled if combined is None else combined + scaled
    with steering(model, combined, 1.0, preserve_norm=False):
        return behaviour()


# -- analogies ---------------------------------------------------------------------


def _first_word(text: str) -> str:
    words = re.findall(r"[\w'-]+", text)
    return words[0] if words else ""


def task_accuracy(
    model: TransformerBridge,
    queries: Sequence[tuple[str, str]],
    vector: SteeringVector | None = None,
    strength: float = 1.0,
    demonstrations: Sequence[tuple[str, str]] = (),
    max_new_tokens: int = 4,
) -> float:
    """Share of queries whose first generated word equals the expected answer (case-sensitive)."""
    prompts = [few_shot_prompt(x, demonstrations) if demonstrations else zero_shot_prompt(x) for x, _ in queries]
    outputs = generate_batch(model, prompts, max_new_tokens, vector, strength if vector is not None else 0.0)
    hits = [_first_word(output.text) == y for output, (_, y) in zip(outputs, queries)]
    return sum(hits) / len(hits)


@dataclass
class AnalogyResult:
    """Accuracy on held-out BD queries for each way of doing task BD."""

    accuracy: dict[str, float]
    cosine_composed_direct: float
    n_queries: int


def analogy_report(
    model: TransformerBridge,
    grid: dict[str, Sequence[tuple[str, str]]],
    n_train: int = 24,
    strength: float = 1.0,
    n_shots: int = 8,
) -> AnalogyResult:
    """Test v_BD = v_AD + v_BC - v_AC on held-out queries of task BD.

    ``grid`` maps "AC", "AD", "BC" and "BD" to pairs (x, y); the first ``n_train`` pairs
    of each build its vector and BD's remaining pairs are the queries.
    """
    missing = [key for key in ("AC", "AD", "BC", "BD") if key not in grid]
    if missing:
        raise ValueError(f"The analogy grid lacks task(s) {', '.join(missing)}.")
    vectors = {key: build_icv(model, list(pairs[:n_train]), show_progress=False) for key, pairs in grid.items()}
    composed = vectors["AD"] + vectors["BC"] - vectors["AC"]
    queries = list(grid["BD"][n_train:])
    if not queries:
        raise ValueError(f"Task BD has no pairs left after the first {n_train} for held-out queries.")

    accuracy = {
        "no steering": task_accuracy(model, queries),
        "in-context": task_accuracy(model, queries, demonstrations=list(grid["BD"][:n_shots])),
        "direct v_BD": task_accuracy(model, queries, vectors["BD"], strength),
        "v_AD + v_BC - v_AC": task_accuracy(model, queries, composed, strength),
    }
    return AnalogyResult(accuracy, vectors["BD"].cosine(composed), len(queries))
