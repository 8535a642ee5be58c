"""``SteeringVector``: one direction per layer plus the metadata that describes it.

Arithmetic (``a + b``, ``a - b``, ``2.0 * a``, ``a.project_out(b)``) checks that
both vectors belong to the same model (id and weights fingerprint), hook point
and layer count, because adding directions from different residual streams is
meaningless. Saved as safetensors: one float32 tensor per layer named
``layer.{L}`` and every metadata field as a string in the header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from analysis import __version__
from analysis.paths import atomic_write_bytes

HOOK_POINTS = {
    # hook point -> hook name pattern of the residual-stream site that steering edits
    "resid_post": "blocks.{layer}.hook_resid_post",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
}


class VectorError(ValueError):
    """Vectors that cannot be combined or files that cannot be read as vectors."""


@dataclass(frozen=True)
class SteeringVector:
    """A steering direction per layer: ``directions[L]`` is added at ``hook_point`` of layer L.

    ``scale`` converts strength into residual-stream units: steering with strength s
    adds ``s * scale * directions[L]``. For in-context vectors ``scale`` is the mean
    projection of the demonstration differences on the direction, so strength 1
    moves the state by one average demonstration shift.
    """

    directions: Float[Tensor, "layer d_model"]
    model_id: str
    fingerprint: str
    hook_point: str = "resid_post"
    method: str = "icv"
    demos_hash: str = ""
    strength: float = 1.0
    scale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hook_point not in HOOK_POINTS:
            raise VectorError(f"Unknown hook point {self.hook_point!r}; use one of {', '.join(HOOK_POINTS)}.")
        if self.directions.ndim != 2:
            raise VectorError(f"directions must be [layer, d_model], got shape {tuple(self.directions.shape)}.")

    @property
    def n_layers(self) -> int:
        return self.directions.shape[0]

    @property
    def norm(self) -> float:
        return float(self.directions.norm())

    def hook_name(self, layer: int) -> str:
        return HOOK_POINTS[self.hook_point].format(layer=layer)

    # -- arithmetic ---------------------------------------------------------

    def _check_compatible(self, other: "SteeringVector") -> None:
        if not isinstance(other, SteeringVector):
            raise VectorError(f"Cannot combine a steering vector with {type(other).__name__}.")
        mismatches = [
            f"{name} {getattr(self, name)!r} vs {getattr(other, name)!r}"
            for name in ("model_id", "fingerprint", "hook_point", "n_layers")
            if getattr(self, name) != getattr(other, name)
        ]
        if self.directions.shape != other.directions.shape:
            mismatches.append(f"shape {tuple(self.directions.shape)} vs {tuple(other.directions.shape)}")
        if mismatches:
            raise VectorError("Vectors belong to different models or hook points: " + "; ".join(mismatches))

    def _combine(self, directions: Tensor, method: str) -> "SteeringVector":
        # Combined directions are in residual units already, so the result has scale 1.
        return replace(self, directions=directions, method=method, scale=1.0, demos_hash="", extra={})

    def residual(self) -> Tensor:
        """Return the direction in residual-stream units: ``scale * directions``."""
        return self.scale * self.directions

    def __add__(self, other: "SteeringVector") -> "SteeringVector":
        self._check_compatible(other)
        return self._combine(self.residual() + other.residual(), f"({self.method} + {other.method})")

    def __sub__(self, other: "SteeringVector") -> "SteeringVector":
        self._check_compatible(other)
        return self._combine(self.residual() - other.residual(), f"({self.method} - {other.method})")

    def __mul__(self, factor: float) -> "SteeringVector":
        return self._combine(self.residual() * float(factor), f"{float(factor):g} * {self.method}")

    __rmul__ = __mul__

    def project_out(self, other: "SteeringVector") -> "SteeringVector":
        """Remove from this vector its component along ``other`` (per layer), orthogonalising it."""
        self._check_compatible(other)
        mine, theirs = self.residual(), other.residual()
        denominator = (theirs * theirs).sum(-1, keepdim=True).clamp_min(1e-12)
        projected = mine - (mine * theirs).sum(-1, keepdim=True) / denominator * theirs
        return self._combine(projected, f"{self.method} without {other.method}")

    def cosine(self, other: "SteeringVector") -> float:
        """Cosine similarity of the two vectors, all layers concatenated."""
        self._check_compatible(other)
        return float(torch.nn.functional.cosine_similarity(
            self.directions.flatten(), other.directions.flatten(), dim=0))

    # -- files --------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        return {
            "format": "interp-workbench steering vector",
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "hook_point": self.hook_point,
            "method": self.method,
            "demos_hash": self.demos_hash,
            "strength": repr(float(self.strength)),
            "scale": repr(float(self.scale)),
            "norm": repr(self.norm),
            "n_layers": str(self.n_layers),
            "library_version": __version__,
            "extra": json.dumps(self.extra),
        }

    def save(self, path: Path) -> Path:
        """Write the vector as safetensors (atomically) and return the path."""
        from safetensors.torch import save

        tensors = {f"layer.{layer}": self.directions[layer].detach().to(torch.float32).contiguous()
                   for layer in range(self.n_layers)}
        atomic_write_bytes(Path(path), save(tensors, metadata=self.metadata()))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "SteeringVector":
        """Read a vector written by ``save``."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise VectorError(f"Steering vector file {path} does not exist.")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                names = list(handle.keys())
                if meta.get("format") != "interp-workbench steering vector":
                    raise VectorError(f"{path} is not an interp-workbench steering vector (no format tag); "
                                      "import llama.cpp or repeng GGUF files with analysis.steering.export.")
                layers = sorted(int(name.split(".")[1]) for name in names)
                if layers != list(range(len(layers))):
                    raise VectorError(f"{path} has layers {layers}; expected 0..{len(layers) - 1}.")
                directions = torch.stack([handle.get_tensor(f"layer.{layer}") for layer in layers])
        except SafetensorError as error:
            raise VectorError(f"{path} is not a readable safetensors file: {error}") from error
        return cls(
            directions=directions, model_id=meta["model_id"], fingerprint=meta["fingerprint"],
            hook_point=meta["hook_point"], method=meta["method"], demos_hash=meta.get("demos_hash", ""),
            strength=float(meta.get("strength", 1.0)), scale=float(meta.get("scale", 1.0)),
            extra=json.loads(meta.get("extra", "{}")),
        )


def cosine_matrix(vectors: list[SteeringVector]) -> Tensor:
    """Pairwise cosine similarities of a set of vectors from the same model and hook point."""
    size = len(vectors)
    matrix = torch.eye(size)
    for i in range(size):
        for j in range(i + 1, size):
            matrix[i, j] = matrix[j, i] = vectors[i].cosine(vectors[j])
    return matrix
