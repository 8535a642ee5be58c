"""Which operand digits each answer digit reads: attention maps, and one problem explained.

The query of answer digit ``k`` is the position whose output predicts it (the
token just before the digit); its attention over the prompt is summed per
operand digit (``a0`` is the units digit of ``a``) and averaged over problems.
Patterns are read from ``blocks.{L}.attn.hook_pattern`` of the TransformerLens
bridge in its default mode (norms not folded, which patterns do not depend on).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from analysis.arithmetic.metrics import greedy_answers
from probes.arithmetic import VOCAB, ArithmeticDataError, Batch, ProblemSpec, make_batch


def operand_labels(spec: ProblemSpec) -> list[str]:
    """Return the operand-slot labels in slot order: ``a0 .. a{n_a-1}, b0 .. b{n_b-1}``."""
    return [f"a{i}" for i in range(spec.n_a)] + [f"b{j}" for j in range(spec.n_b)]


def pattern_hooks(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]


@torch.no_grad()
def attention_patterns(model: torch.nn.Module, tokens: Tensor) -> Tensor:
    """Return attention patterns [layer, batch, head, query, key] of a teacher-forced run."""
    names = pattern_hooks(model.cfg.n_layers)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return torch.stack([cache[name] for name in names])


def predicting_positions(batch: Batch, n_places: int) -> Tensor:
    """Return [batch, n_places]: the position whose output predicts each place's digit, -1 if absent."""
    positions = torch.full((len(batch), n_places), -1, dtype=torch.long)
    rows, columns = (batch.place >= 0).nonzero(as_tuple=True)
    positions[rows, batch.place[rows, columns]] = columns - 1
    return positions


@dataclass(frozen=True)
class AttentionMap:
    """Mean attention ``weights[layer][head][place][slot]`` from answer digits to operand digits.

    ``slot_labels`` ends with ``other`` (the ``*``, ``=`` and earlier answer tokens),
    so each row sums to 1. ``counts[place]`` is how many problems had that digit.
    """

    places: list[int]
    slot_labels: list[str]
    weights: list[list[list[list[float]]]]
    counts: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def answer_operand_attention(model: torch.nn.Module, spec: ProblemSpec, batch: Batch,
                             chunk_size: int = 512) -> AttentionMap:
    """Average, over ``batch``, each head's attention from every answer digit to every operand digit."""
    n_slots = spec.n_a + spec.n_b
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, spec.n_places, n_slots + 1)
    counts = torch.zeros(spec.n_places)
    for start in range(0, len(batch), chunk_size):
        part = batch.subset(slice(start, start + chunk_size))
        patterns = attention_patterns(model, part.tokens)  # [layer, batch, head, query, key]
        queries = predicting_positions(part, spec.n_places)  # [batch, place]
        present = queries >= 0
        index = queries.clamp(min=0)[None, :, None, :, None].expand(
            patterns.shape[0], -1, patterns.shape[2], -1, patterns.shape[-1])
        rows = patterns.gather(3, index)  # [layer, batch, head, place, key]
        slots = torch.where(part.operand_slot >= 0, part.operand_slot, n_slots)  # "other" is the last slot
        by_slot = torch.zeros(*rows.shape[:-1], n_slots + 1)
        by_slot.scatter_add_(-1, slots[None, :, None, None, :].expand_as(rows), rows)
        by_slot = by_slot * present[None, :, None, :, None]
        total += by_slot.sum(dim=1)
        counts += present.sum(dim=0)
    mean = total / counts.clamp(min=1)[None, None, :, None]
    return AttentionMap(list(range(spec.n_places)), [*operand_labels(spec), "other"], mean.tolist(),
                        counts.long().tolist())


@dataclass(frozen=True)
class DigitStep:
    """One answer token the model wrote: its place (-1 for the end token), the chosen
    token and its probability, the true token, and the attention ``[layer][head][key]``
    of the position that produced it over the tokens before it."""

    place: int
    token: str
    probability: float
    expected: str
    attention: list[list[list[float]]]


@dataclass(frozen=True)
class ProductExplanation:
    """A problem answered greedily, digit by digit, with the attention behind each digit."""

    a: int
    b: int
    product: int
    predicted: int | None  # None when the model wrote something that is not a number
    correct: bool
    tokens: list[str]  # the whole sequence with the model's answer, as text tokens
    steps: list[DigitStep]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def explain_product(model: torch.nn.Module, spec: ProblemSpec, a: int, b: int) -> ProductExplanation:
    """Answer ``a * b`` greedily and return each answer digit with the attention that produced it."""
    for name, value, width in (("a", a, spec.n_a), ("b", b, spec.n_b)):
        if not isinstance(value, int) or not 0 <= value < 10**width:
            raise ArithmeticDataError(f"{name}={value!r} does not fit this {spec.n_a}x{spec.n_b}-digit model; "
                                      f"type an integer from 0 to {10**width - 1}.")
    was_training = model.training
    model.eval()
    try:
        batch = make_batch([a], [b], spec)
        generated = greedy_answers(model, batch)
        logits = model(generated[:, :-1])[0]
        probabilities = logits.softmax(dim=-1)
        patterns = attention_patterns(model, generated)[:, 0]  # [layer, head, query, key]
    finally:
        model.train(was_training)

    steps = []
    for position in batch.target_mask[0].nonzero().flatten().tolist():
        token = int(generated[0, position])
        query = position - 1
        steps.append(DigitStep(
            place=int(batch.place[0, position]),
            token=VOCAB[token],
            probability=float(probabilities[query, token]),
            expected=VOCAB[int(batch.tokens[0, position])],
            attention=patterns[:, :, query, : query + 1].tolist(),
        ))

    written = [step for step in steps if step.place >= 0]
    digits = "".join(step.token for step in written)
    predicted = None
    if digits.isdigit():
        predicted = sum(int(step.token) * 10**step.place for step in written)
    correct = all(step.token == step.expected for step in steps)
    return ProductExplanation(a, b, a * b, predicted, correct, [VOCAB[t] for t in generated[0].tolist()], steps)
