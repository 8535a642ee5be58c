"""Exporting steering vectors to the formats other tools load, and importing theirs.

* ``safetensors``: the native format (``SteeringVector.save``), bit-exact round trip.
* ``gguf``: a llama.cpp control vector. Architecture ``controlvector``, metadata
  ``controlvector.model_hint`` and ``controlvector.layer_count``, and one float32
  tensor ``direction.N`` per layer. llama.cpp adds ``direction.N`` to the output
  of block N (0-based) and never steers block 0, so ``direction.N`` holds our
  ``blocks.{N}.hook_resid_post`` direction for N >= 1 and layer 0 is dropped.
  llama.cpp adds the vector without the norm-preserving rescale, so the file contains
  ``strength * scale * direction`` and is applied with ``--control-vector``.
  repeng writes the same layout, so ``import_gguf`` reads its files too.
* ``torch``: a safetensors file of ``{"layers.{L}": delta}`` for the Hugging Face
  decoder layer ``model.model.layers[L]``, applied by a plain PyTorch forward
  hook on that layer's output (see ``apply_torch_layout``); no workbench needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from analysis.paths import child_path
from analysis.steering.vector import SteeringVector, VectorError

logger = logging.getLogger(__name__)

FORMATS = ("safetensors", "gguf", "torch")


def output_path(folder: Path, name: str) -> Path:
    """Resolve a user-given output name inside ``folder``; raise if it escapes."""
    return child_path(Path(folder), name)


def export_vector(vector: SteeringVector, fmt: str, path: Path, strength: float | None = None,
                  model_hint: str = "gemma3") -> Path:
    """Write ``vector`` in format ``fmt`` to ``path`` (atomically) and return the path."""
    if fmt not in FORMATS:
        raise VectorError(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")
    strength = vector.strength if strength is None else strength
    if fmt == "safetensors":
        return vector.save(path)
    if fmt == "gguf":
        return write_control_vector(vector, path, strength, model_hint)
    return write_torch_layout(vector, path, strength)


def _residual_deltas(vector: SteeringVector, strength: float) -> torch.Tensor:
    if vector.hook_point != "resid_post":
        raise VectorError(
            f"Only resid_post vectors can be exported to llama.cpp or plain PyTorch hooks; this one steers "
            f"{vector.hook_point!r}. Build it with the 'paper' variant."
        )
    return (strength * vector.residual()).to(torch.float32)


def write_control_vector(vector: SteeringVector, path: Path, strength: float, model_hint: str) -> Path:
    """Write a llama.cpp control vector (GGUF)."""
    import gguf

    deltas = _residual_deltas(vector, strength)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch="controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", vector.n_layers - 1)
    for layer in range(1, vector.n_layers):
        writer.add_tensor(f"direction.{layer}", deltas[layer].numpy().astype(np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    if deltas[0].abs().sum() > 0:
        logger.info("layer 0 is not exported: llama.cpp never steers the first block")
    return path


def import_gguf(path: Path, model_id: str, fingerprint: str, n_layers: int, d_model: int) -> SteeringVector:
    """Read a llama.cpp / repeng control vector as a ``SteeringVector`` (strength 1, scale 1)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise VectorError(f"Control vector file {path} does not exist.")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as error:  # the reader raises ValueError or struct errors on bad files
        raise VectorError(f"{path} is not a readable GGUF file: {error}") from error

    arch_field = reader.fields.get("general.architecture")
    arch = bytes(arch_field.parts[-1]).decode() if arch_field is not None else None
    if arch != "controlvector":
        raise VectorError(f"{path} has architecture {arch!r}, not 'controlvector'.")

    directions = torch.zeros(n_layers, d_model)
    for tensor in reader.tensors:
        if not tensor.name.startswith("direction."):
            continue
        layer = int(tensor.name.split(".")[1])
        data = torch.from_numpy(np.array(tensor.data, dtype=np.float32)).flatten()
        if not 0 <= layer < n_layers or data.numel() != d_model:
            raise VectorError(f"{path}: tensor {tensor.name} of size {data.numel()} does not fit a model "
                              f"with {n_layers} layers of width {d_model}.")
        directions[layer] = data
    return SteeringVector(directions=directions, model_id=model_id, fingerprint=fingerprint,
                          hook_point="resid_post", method=f"imported:{path.name}")


def write_torch_layout(vector: SteeringVector, path: Path, strength: float) -> Path:
    """Write ``{"layers.{L}": delta}`` for plain PyTorch forward hooks on HF decoder layers."""
    from safetensors.torch import save

    from analysis.paths import atomic_write_bytes

    deltas = _residual_deltas(vector, strength)
    tensors = {f"layers.{layer}": deltas[layer].contiguous() for layer in range(vector.n_layers)}
    metadata = {"model_id": vector.model_id, "method": vector.method, "strength": repr(float(strength)),
                "usage": "add layers.L to the hidden-state output of model.model.layers[L] (no rescale)"}
    atomic_write_bytes(Path(path), save(tensors, metadata=metadata))
    return Path(path)


def apply_torch_layout(hf_model: torch.nn.Module, path: Path) -> list:
    """Register forward hooks on ``hf_model.model.layers`` that add the exported deltas; return handles.

    This is what a user without the workbench does; the tests use it to check the export.
    """
    from safetensors.torch import load_file

    deltas = load_file(str(path))
    handles = []
    for name, delta in deltas.items():
        layer = hf_model.model.layers[int(name.split(".")[1])]

        def add(module, inputs, output, delta=delta):
            if isinstance(output, tuple):
                return (output[0] + delta,) + tuple(output[1:])
            return output + delta

        handles.append(layer.register_forward_hook(add))
    return handles
