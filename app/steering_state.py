"""Cached loading, building, generation and export for the Steering page.

Cache keys are content, never object identity: the model name string, the
sha256 of the demonstration pairs used (``probes.demos.demos_hash``), the
variant, the prompt text, and ``vector_key`` (a sha256 over a vector's
metadata and directions). Arguments whose names start with ``_`` are left out
of Streamlit's key because another argument already identifies them.

The page keeps its vectors (built, uploaded or composed) in
``st.session_state``, per browser session; ``vector_library`` returns them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import streamlit as st

import state
from analysis.steering.evaluate import (
    ConditionResult,
    evaluate_sweep,
    offensive,
    sentiment,
    similarity,
    zero_shot_prompt,
)
from analysis.steering.export import export_vector
from analysis.steering.icv import build_icv
from analysis.steering.steer import generate
from analysis.steering.vector import SteeringVector, VectorError
from probes.demos import DemoError, DemoSet, load_demos, load_inputs, shipped_demos, shipped_heldout

logger = logging.getLogger(__name__)

LIBRARY_KEY = "steering_vectors"  # st.session_state key: {label: SteeringVector}, in insertion order
ACTIVE_KEY = "steer_active"  # st.session_state key of the page's "Vector" selectbox: the label steered with
MAX_CACHED_GENERATIONS = 256  # one short text each
_INPUT_MARKER = "\x00"  # placeholder for the input text when splitting the zero-shot template


# -- demonstration sets -----------------------------------------------------------


@st.cache_data(show_spinner=False)
def shipped_sets() -> dict[str, str]:
    """Map each shipped demonstration set's name to its file path. Raises DemoError without data/demos."""
    return {name: str(path) for name, path in shipped_demos().items()}


@st.cache_data(show_spinner=False)
def shipped_set(path: str) -> DemoSet:
    """Return ``probes.demos.load_demos`` of a shipped file."""
    return load_demos(path)


@st.cache_data(show_spinner=False, max_entries=16)
def uploaded_set(file_name: str, data: bytes) -> DemoSet:
    """Read an uploaded ``.jsonl`` or ``.csv`` file with ``load_demos``, keeping the upload's name.

    ``load_demos`` reads a path, so the bytes go to a temporary folder under the
    uploaded file's base name (its extension selects the parser and its stem
    names the set). Raises DemoError with the temporary path replaced by the
    uploaded name.
    """
    base_name = Path(file_name).name or "upload.jsonl"
    with tempfile.TemporaryDirectory(prefix="steering-upload-") as folder:
        path = Path(folder) / base_name
        path.write_bytes(data)
        try:
            return load_demos(path)
        except DemoError as error:
            raise DemoError(str(error).replace(str(path), repr(file_name))) from error


@st.cache_data(show_spinner=False)
def heldout_inputs(set_name: str) -> list[str] | None:
    """Return the shipped held-out inputs of ``set_name``, or None when none are shipped for it."""
    try:
        return load_inputs(shipped_heldout(set_name))
    except DemoError as error:
        logger.info("no shipped held-out inputs for %r: %s", set_name, error)
        return None


def split_zero_shot(prompt: str) -> str | None:
    """Return the input text of a prompt written as ``zero_shot_prompt(text)``, or None for any other prompt."""
    prefix, suffix = zero_shot_prompt(_INPUT_MARKER).split(_INPUT_MARKER)
    if len(prompt) < len(prefix) + len(suffix) or not (prompt.startswith(prefix) and prompt.endswith(suffix)):
        return None
    text = prompt[len(prefix): len(prompt) - len(suffix)]
    return text if zero_shot_prompt(text) == prompt else None


# -- vectors ---------------------------------------------------------------------


def vector_key(vector: SteeringVector) -> str:
    """Return a sha256 over the vector's metadata and directions, used as its cache key."""
    digest = hashlib.sha256()
    digest.update(json.dumps(vector.metadata(), sort_keys=True).encode())
    digest.update(vector.directions.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@st.cache_data(show_spinner=False, max_entries=32)
def built_vector(model_name: str, demos_digest: str, variant: str,
                 _pairs: Sequence[tuple[str, str]]) -> SteeringVector:
    """Build the in-context vector of ``_pairs`` (whose ``demos_hash`` is ``demos_digest``) on the named model."""
    model = state.get_model(model_name)
    with state._model_lock(model_name):
        vector = build_icv(model, list(_pairs), variant=variant, demos_hash=demos_digest, show_progress=False)
    logger.info("built %s vector on %s from %d pairs (demos %s)", variant, model_name, len(_pairs), demos_digest[:12])
    return vector


@st.cache_data(show_spinner=False, max_entries=16)
def uploaded_vector(file_name: str, data: bytes) -> SteeringVector:
    """Read an uploaded vector file written by ``SteeringVector.save``. Raises VectorError for other files."""
    with tempfile.TemporaryDirectory(prefix="steering-vector-") as folder:
        path = Path(folder) / "vector.safetensors"
        path.write_bytes(data)
        return SteeringVector.load(path)


def vector_library() -> dict[str, SteeringVector]:
    """Return this browser session's vectors by label, creating the empty library on first use."""
    return st.session_state.setdefault(LIBRARY_KEY, {})


def describe_vector(vector: SteeringVector) -> str:
    """Return one line with the vector's method, hook point, size and, for a built vector, its fit."""
    line = (f"{vector.method}, added at `{vector.hook_point}` of {vector.n_layers} layers; "
            f"norm {vector.norm:.3g}, scale {vector.scale:.3g}")
    if "explained_variance" in vector.extra:
        line += (f"; built from {vector.extra.get('n_pairs', '?')} pairs, the first principal direction "
                 f"explains {100 * vector.extra['explained_variance']:.1f}% of their variance")
    return line + "."


# -- generation and measures -------------------------------------------------------


def first_line(text: str) -> str:
    """Cut a generation at its first newline, as ``analysis.steering.evaluate`` does before measuring."""
    return text.strip().split("\n")[0].strip()


@st.cache_data(show_spinner=False, max_entries=MAX_CACHED_GENERATIONS)
def generated_text(model_name: str, prompt: str, max_new_tokens: int, vector_digest: str | None,
                   strength: float, _vector: SteeringVector | None) -> str:
    """Return the greedy continuation of ``prompt``, steered by ``_vector`` at ``strength`` when it is given."""
    model = state.get_model(model_name)
    # Steering hooks sit on the shared model while it generates, so no other session may run it meanwhile.
    with state._model_lock(model_name):
        generation = generate(model, prompt, max_new_tokens, vector=_vector, strength=strength)
    return generation.text


@st.cache_data(show_spinner=False, max_entries=MAX_CACHED_GENERATIONS)
def output_measures(source: str, output: str) -> dict[str, float]:
    """Return the offline measures of one output: sentiment, offensive probability and similarity to ``source``."""
    return {
        "sentiment": sentiment([output])[0],
        "offensive": offensive([output])[0],
        "similarity": similarity([source], [output])[0],
    }


@st.cache_data(show_spinner=False, max_entries=16)
def strength_sweep(model_name: str, vector_digest: str, inputs: tuple[str, ...], demos_digest: str,
                   strengths: tuple[float, ...], n_shots: int, max_new_tokens: int,
                   _vector: SteeringVector, _demonstrations: Sequence[tuple[str, str]]) -> list[ConditionResult]:
    """Run ``evaluate_sweep``: no steering, in-context learning, and the vector at each strength."""
    model = state.get_model(model_name)
    with state._model_lock(model_name):
        return evaluate_sweep(model, _vector, list(inputs), list(_demonstrations), strengths=strengths,
                              n_shots=n_shots, max_new_tokens=max_new_tokens)


# -- export ----------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=64)
def exported_file(vector_digest: str, fmt: str, strength: float, _vector: SteeringVector) -> bytes:
    """Return the bytes of ``export_vector(_vector, fmt, ...)``. Raises VectorError where the format does not fit.

    The safetensors file records ``strength`` in its metadata; gguf and torch
    files hold ``strength * scale * direction`` per layer.
    """
    with tempfile.TemporaryDirectory(prefix="steering-export-") as folder:
        path = Path(folder) / f"vector.{fmt}"
        written = export_vector(replace(_vector, strength=strength), fmt, path, strength=strength)
        return written.read_bytes()


# -- page helpers ----------------------------------------------------------------


def use_vector(label: str, vector: SteeringVector) -> None:
    """Add ``vector`` to the library under ``label`` and make it the one to steer with.

    Meant as a button's ``on_click`` callback: it runs before the next script
    run, which is the only time a widget's session_state value may be set.
    """
    vector_library()[label] = vector
    st.session_state[ACTIVE_KEY] = label


def call_or_stop(action: str, function, *args):
    """Return ``function(*args)``, or show why ``action`` failed and stop the page run.

    Store failures are reported by ``state.run_or_stop``; VectorError and
    DemoError messages already name the value and the fix.
    """
    try:
        return state.run_or_stop(function, *args)
    except (VectorError, DemoError) as error:
        logger.warning("%s failed: %s", action, error)
        st.error(f"{action} failed: {error}")
        st.stop()
