"""In-context vectors (Liu, Ye, Xing, Zou, "In-context Vectors", 2023).

From k demonstration pairs (x, y): run x and y alone, take the last real
token's hidden state after every block (``hook_resid_post``), form the per-pair
differences h(y) - h(x) with all layers concatenated, and take the first
principal direction of the centred differences. Its sign is chosen on the data
so that the mean difference projects positively on it (it points from x to y).

Two variants:

* ``"paper"`` (default): the principal direction, added to the residual stream
  after every block (hook point ``resid_post``), as the paper describes.
* ``"released"``: what the authors' released code does: the principal direction
  plus the mean difference, steering each block's MLP output (hook point
  ``mlp_out``), each followed by the same norm-preserving rescale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from analysis.activations import cached_activations
from analysis.models import model_info
from analysis.steering.vector import SteeringVector, VectorError
from analysis.store import ActivationStore

logger = logging.getLogger(__name__)

VARIANTS = ("paper", "released")


@dataclass(frozen=True)
class PrincipalDirection:
    """First principal direction of centred differences, with what explains it."""

    direction: Float[Tensor, "features"]  # unit norm, pointing from x to y
    mean_difference: Float[Tensor, "features"]
    explained_variance: float  # share of the centred differences' variance on the direction
    mean_projection: float  # mean of the (uncentred) differences projected on the direction


def principal_direction(differences: Float[Tensor, "pair features"]) -> PrincipalDirection:
    """Return the first principal direction of ``differences`` after centring, sign fixed by the mean."""
    if differences.shape[0] < 2:
        raise VectorError(f"A principal direction needs at least 2 demonstration pairs, got {differences.shape[0]}.")
    differences = differences.double()
    mean = differences.mean(0)
    centred = differences - mean
    _, singular_values, right = torch.linalg.svd(centred, full_matrices=False)
    direction = right[0]

    # SVD's sign is arbitrary: flip so the demonstrations move along +direction on average.
    if (differences @ direction).mean() < 0:
        direction = -direction
    variance = singular_values.pow(2)
    explained = float(variance[0] / variance.sum()) if variance.sum() > 0 else 0.0
    return PrincipalDirection(direction.float(), mean.float(), explained, float((differences @ direction).mean()))


def pair_differences(
    model: TransformerBridge, xs: Sequence[str], ys: Sequence[str], store: ActivationStore | None = None,
    show_progress: bool = True,
) -> Float[Tensor, "pair layer d_model"]:
    """h(y) - h(x) at the last real token after every block, each prompt run alone (batched with a mask)."""
    if len(xs) != len(ys):
        raise VectorError(f"Got {len(xs)} inputs x but {len(ys)} outputs y; each pair needs both.")
    if not xs:
        raise VectorError("The demonstration set is empty; give at least 2 pairs (x, y).")
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    entry = cached_activations(model, list(xs) + list(ys), hooks, positions="last", store=store,
                               show_progress=show_progress)
    states = torch.stack([entry.tensor(hook) for hook in hooks], dim=1)  # [2k, layer, d_model]
    return states[len(xs):] - states[: len(xs)]


def build_icv(
    model: TransformerBridge,
    pairs: Sequence[tuple[str, str]],
    variant: str = "paper",
    demos_hash: str = "",
    store: ActivationStore | None = None,
    show_progress: bool = True,
) -> SteeringVector:
    """Build an in-context vector from demonstration pairs (x, y)."""
    if variant not in VARIANTS:
        raise VectorError(f"Unknown ICV variant {variant!r}; use one of {', '.join(VARIANTS)}.")
    xs = [x for x, _ in pairs]
    ys = [y for _, y in pairs]
    differences = pair_differences(model, xs, ys, store=store, show_progress=show_progress)
    n_pairs, n_layers, d_model = differences.shape
    found = principal_direction(differences.reshape(n_pairs, n_layers * d_model))
    logger.info("ICV from %d pairs: first component explains %.1f%% of the variance",
                n_pairs, 100 * found.explained_variance)

    if variant == "paper":
        directions, scale, hook_point = found.direction, found.mean_projection, "resid_post"
    else:
        # Released code: principal direction plus the mean difference, in residual units.
        combined = found.direction * found.mean_projection + found.mean_difference
        directions, scale, hook_point = combined, 1.0, "mlp_out"

    info = model_info(model)
    return SteeringVector(
        directions=directions.reshape(n_layers, d_model),
        model_id=info.name,
        fingerprint=info.fingerprint,
        hook_point=hook_point,
        method=f"icv-{variant}",
        demos_hash=demos_hash,
        scale=scale,
        extra={"explained_variance": found.explained_variance, "n_pairs": n_pairs,
               "mean_difference_norm": float(found.mean_difference.norm())},
    )
