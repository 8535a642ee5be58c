"""Apply a GGUF control vector with llama.cpp (through llama-cpp-python) and read next-token log-probs.

llama.cpp's own loader (``llama_control_vector_load`` in its ``common`` library)
is not exposed by llama-cpp-python, so ``load_control_vector_buffer`` rebuilds
the buffer it would build: ``direction.N`` at offset ``(N - 1) * n_embd``,
starting from layer 1. ``llama_set_adapter_cvec`` then makes llama.cpp add
each direction to the output of block N, exactly as ``--control-vector`` does.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Sequence

import numpy as np


def load_control_vector_buffer(path: Path, n_layers: int, n_embd: int) -> np.ndarray:
    """Return the float32 buffer [n_layers - 1, n_embd] that llama.cpp builds from a control-vector file."""
    import gguf

    buffer = np.zeros((n_layers - 1, n_embd), dtype=np.float32)
    for tensor in gguf.GGUFReader(str(path)).tensors:
        if tensor.name.startswith("direction."):
            layer = int(tensor.name.split(".")[1])
            if 1 <= layer < n_layers:
                buffer[layer - 1] = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
    return buffer


class LlamaCppModel:
    """A llama.cpp model that scores next tokens, with or without a control vector."""

    def __init__(self, gguf_path: Path, n_ctx: int = 256):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, logits_all=True, verbose=False, seed=0)
        self.n_layers = self.llm.n_layer() if callable(getattr(self.llm, "n_layer", None)) else self._n_layer()
        self.n_embd = self.llm.n_embd()

    def _n_layer(self) -> int:
        import llama_cpp

        return llama_cpp.llama_model_n_layer(self.llm.model)

    def set_control_vector(self, path: Path | None) -> None:
        """Apply the control vector at ``path`` to every layer, or clear it with None."""
        import llama_cpp

        if path is None:
            result = llama_cpp.llama_set_adapter_cvec(self.llm.ctx, None, 0, self.n_embd, 0, 0)
        else:
            buffer = np.ascontiguousarray(load_control_vector_buffer(path, self.n_layers, self.n_embd).reshape(-1))
            self._buffer = buffer  # llama.cpp copies it, but keep it alive during the call
            pointer = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            result = llama_cpp.llama_set_adapter_cvec(self.llm.ctx, pointer, buffer.size, self.n_embd,
                                                      1, self.n_layers - 1)
        if result != 0:
            raise RuntimeError(f"llama.cpp rejected the control vector (code {result}).")

    def next_token_log_probs(self, token_ids: Sequence[int]) -> np.ndarray:
        """Log-probabilities of the next token after ``token_ids`` (BOS included by the caller)."""
        self.llm.reset()
        self.llm.eval(list(token_ids))
        logits = np.asarray(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float64)
        logits -= logits.max()
        return logits - np.log(np.exp(logits).sum())
