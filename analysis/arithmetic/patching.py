"""Activation patching on multiplication models: which layer, position and head carry an operand digit.

Clean and corrupted problems differ in one operand digit (slot ``a1``: the tens
digit of ``a``). Both rows keep the clean answer tokens as input, so the only
difference in the input is that digit. For answer digit ``k`` the metric is the
logit difference ``logit[clean digit] - logit[corrupted digit]`` at the position
that predicts it, over the pairs where the two products differ at ``k``. Patching
a clean activation into the corrupted run recovers the fraction
``(LD_patched - LD_corrupted) / (LD_clean - LD_corrupted)`` (means over pairs).

Residual stream: ``blocks.{L}.hook_resid_pre`` for every layer plus the last
``hook_resid_post``, one position at a time. Heads: ``blocks.{L}.attn.hook_z`` of
one head at every position. The bridge runs in its default mode (norms not folded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from analysis.arithmetic.attention import operand_labels, predicting_positions
from analysis.arithmetic.metrics import token_logits
from probes.arithmetic import ArithmeticDataError, Batch, ProblemSpec, columns, make_batch, operand_digits


def residual_hooks(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"]


def position_labels(spec: ProblemSpec) -> list[str]:
    """Return a label per position of a fixed-layout row: ``a2 a1 a0 * b2 b1 b0 = r0 .. end``."""
    labels = [f"a{i}" for i in range(spec.n_a - 1, -1, -1)] + ["*"]
    labels += [f"b{j}" for j in range(spec.n_b - 1, -1, -1)] + ["="]
    places = range(spec.n_places) if spec.format.reverse_product else range(spec.n_places - 1, -1, -1)
    return labels + [f"p{k}" for k in places] + ["end"]


def _require_fixed_layout(spec: ProblemSpec) -> None:
    if not (spec.format.pad_operands and spec.format.pad_product):
        raise ArithmeticDataError(
            "Activation patching needs every digit at a fixed position; this model's format pads "
            f"operands={spec.format.pad_operands} and product={spec.format.pad_product}. "
            "Use a model trained on the 'padded' or 'padded-reversed' format."
        )


def corrupt_operand(a: Tensor, b: Tensor, spec: ProblemSpec, slot: str,
                    generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return operands with the digit in ``slot`` (``a0``, ``b2``, ...) replaced by a different random digit."""
    if slot not in operand_labels(spec):
        raise ArithmeticDataError(f"Operand slot {slot!r} does not exist; use one of {', '.join(operand_labels(spec))}.")
    which, place = slot[0], int(slot[1:])
    values = (a if which == "a" else b).clone()
    width = spec.n_a if which == "a" else spec.n_b
    old = operand_digits(values, width)[:, place]
    new = (old + torch.randint(1, 10, old.shape, generator=generator)) % 10  # never equal to old
    values += (new - old) * 10**place
    return (values, b) if which == "a" else (a, values)


def hook_replacing(source: Tensor, position: int | None = None, head: int | None = None) -> Callable:
    """Return a forward hook that writes ``source`` into the activation (one position, or one head's slice)."""

    def hook(activation: Tensor, hook: Any) -> Tensor:
        patched = activation.clone()
        if head is not None:
            patched[:, :, head] = source[:, :, head]
        elif position is not None:
            patched[:, position] = source[:, position]
        else:
            patched[:] = source
        return patched

    return hook


@torch.no_grad()
def patched_logits(model: torch.nn.Module, tokens: Tensor, hook_name: str, source: Tensor,
                   position: int | None = None, head: int | None = None) -> Tensor:
    """Return ``token_logits`` of ``tokens`` with ``hook_name`` overwritten from ``source``."""
    hook = hook_replacing(source, position, head)
    logits = model.run_with_hooks(tokens[:, :-1], fwd_hooks=[(hook_name, hook)])
    return torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)


@dataclass(frozen=True)
class PatchingResult:
    """Recovered logit difference when clean activations are patched into corrupted runs.

    ``residual[hook][position][place]`` and ``heads[layer][head][place]`` are
    fractions (1 = the clean logit difference fully restored, 0 = no effect; NaN
    where no pair differs at that place). ``clean_logit_diff[place]`` and
    ``corrupted_logit_diff[place]`` are the unpatched means, ``n_pairs[place]`` the
    pairs behind each place.
    """

    slot: str
    hooks: list[str]
    positions: list[str]
    places: list[int]
    residual: list[list[list[float]]]
    heads: list[list[list[float]]]
    clean_logit_diff: list[float]
    corrupted_logit_diff: list[float]
    n_pairs: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _LogitDiff:
    """Mean logit difference per place over the pairs whose digit differs there."""

    def __init__(self, clean: Batch, corrupted: Batch, spec: ProblemSpec) -> None:
        self.query = predicting_positions(clean, spec.n_places)  # same layout in both
        clean_digits = columns(clean.a, clean.b, spec).digit
        corrupted_digits = columns(corrupted.a, corrupted.b, spec).digit
        self.clean_digits, self.corrupted_digits = clean_digits, corrupted_digits
        self.differs = clean_digits != corrupted_digits  # [pair, place]

    def __call__(self, logits: Tensor) -> Tensor:
        rows = torch.arange(logits.shape[0])[:, None]
        at_query = logits[rows, self.query + 1]  # token_logits row t predicts token t
        diff = at_query.gather(-1, self.clean_digits[..., None]) - at_query.gather(-1, self.corrupted_digits[..., None])
        diff = diff.squeeze(-1) * self.differs
        return diff.sum(dim=0) / self.differs.sum(dim=0).clamp(min=1)


def activation_patching(model: torch.nn.Module, spec: ProblemSpec, a: Tensor, b: Tensor, slot: str,
                        seed: int = 0, progress: bool = True) -> PatchingResult:
    """Patch every residual position and every head from clean into corrupted problems ``(a, b)``."""
    _require_fixed_layout(spec)
    generator = torch.Generator().manual_seed(seed)
    corrupted_a, corrupted_b = corrupt_operand(a, b, spec, slot, generator)
    clean = make_batch(a, b, spec)
    corrupted = make_batch(corrupted_a, corrupted_b, spec)
    corrupted_tokens = clean.tokens.clone()  # clean answer tokens as input; only the operand digit differs
    corrupted_tokens[clean.operand_slot >= 0] = corrupted.tokens[clean.operand_slot >= 0]
    metric = _LogitDiff(clean, corrupted, spec)

    was_training = model.training
    model.eval()
    try:
        hooks = residual_hooks(model.cfg.n_layers)
        z_hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
        with torch.no_grad():
            _, cache = model.run_with_cache(clean.tokens[:, :-1], names_filter=lambda n: n in hooks + z_hooks)
            clean_ld = metric(token_logits(model, clean.tokens))
            corrupted_ld = metric(token_logits(model, corrupted_tokens))
        span = (clean_ld - corrupted_ld)

        def recovered(logits: Tensor) -> list[float]:
            fraction = (metric(logits) - corrupted_ld) / span
            fraction[metric.differs.sum(dim=0) == 0] = float("nan")
            return fraction.tolist()

        n_positions = clean.tokens.shape[1] - 1
        total = len(hooks) * n_positions + len(z_hooks) * model.cfg.n_heads
        bar = tqdm(total=total, desc=f"patching {slot}", disable=not progress)
        residual = []
        for name in hooks:
            row = []
            for position in range(n_positions):
                row.append(recovered(patched_logits(model, corrupted_tokens, name, cache[name], position=position)))
                bar.update(1)
            residual.append(row)
        heads = []
        for name in z_hooks:
            row = []
            for head in range(model.cfg.n_heads):
                row.append(recovered(patched_logits(model, corrupted_tokens, name, cache[name], head=head)))
                bar.update(1)
            heads.append(row)
        bar.close()
    finally:
        model.train(was_training)

    return PatchingResult(slot, hooks, position_labels(spec)[:n_positions], list(range(spec.n_places)), residual,
                          heads, clean_ld.tolist(), corrupted_ld.tolist(), metric.differs.sum(dim=0).tolist())
