"""Shared, cached loading for the dashboard pages: model, tasks, head scores and result files.

The pages import this module and never call ``analysis`` loaders directly, so
every page gets the same cached objects. Streamlit puts the main script's
folder (``app/``) on ``sys.path`` while it runs a page, which is why this
module is imported as plain ``state``.

Caches live as long as the Streamlit server process:

* ``get_model`` uses ``st.cache_resource`` keyed by the model name string: one
  model object per name, shared by every browser session.
* head scores and OV top tokens use ``st.cache_data`` keyed by model name,
  task names and the head. The model object is never part of a cache key.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import streamlit as st
from transformer_lens.model_bridge import TransformerBridge

from analysis.batch import read_result, result_paths
from analysis.models import DEFAULT_MODEL, ModelLoadError, known_aliases, load_model, model_info
from analysis.store import StoreError
from analysis.successor import METHODS, HeadRank, HeadScores, ov_top_tokens, search_heads
from probes.ordinal import TokenizedTask, get_tasks, tokenize_task

logger = logging.getLogger(__name__)

T = TypeVar("T")

RESULTS_ENV = "INTERP_WORKBENCH_RESULTS"
DEFAULT_RESULTS_DIR = Path("results")  # the default of `workbench heads --out`
MODEL_KEY = "model_name"  # st.session_state key for the model chosen on the Home page
LOAD_SPINNER = "Loading the model (seconds once cached; building the cache first takes about a minute)…"

# Model names in result files that `load_model` can load again by that name.
# A .gguf result stores the file's stem and a native model has no source, so
# neither can be reloaded from the name alone.
RELOADABLE_SOURCES = ("embedded-gguf", "hf-folder", "hub")


# -- which model and which results folder --------------------------------------


def results_dir() -> Path:
    """Return the results folder: ``$INTERP_WORKBENCH_RESULTS``, else ``./results``."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS_DIR).expanduser()


def selected_model() -> str:
    return st.session_state.get(MODEL_KEY, DEFAULT_MODEL)


def select_model(name: str) -> None:
    # A plain session_state key, not a widget key: Streamlit drops a widget's
    # state when the user switches to a page that does not show the widget.
    st.session_state[MODEL_KEY] = name


def task_names() -> tuple[str, ...]:
    return tuple(task.name for task in get_tasks())


# -- result files written by `workbench heads --out DIR` -----------------------


@dataclass(frozen=True)
class ResultFile:
    """One ``*.heads.json`` file in the results folder, as the Home page lists it."""

    path: Path
    usable: bool  # complete and in the current result format (see analysis.batch.read_result)
    model_name: str = ""
    source: str = ""
    fingerprint: str = ""
    tasks: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    seconds: float | None = None

    @property
    def reloadable(self) -> bool:
        if not self.usable or self.source not in RELOADABLE_SOURCES:
            return False
        return self.source != "hf-folder" or Path(self.model_name).is_dir()


@st.cache_data(show_spinner=False)
def _read_result_version(path: str, mtime_ns: int, size: int) -> dict | None:
    # mtime and size are part of the cache key, so a rewritten file is read again,
    # and read_result logs an unreadable file once per version, not on every rerun.
    return read_result(Path(path))


def read_result_file(path: Path) -> dict | None:
    """Return ``analysis.batch.read_result(path)``, cached until the file changes."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read_result_version(str(path), stat.st_mtime_ns, stat.st_size)


def list_result_files(folder: Path) -> list[ResultFile]:
    """Return every ``*.heads.json`` in ``folder``, unusable ones included so the page can flag them."""
    if not folder.is_dir():
        return []

    found = []
    for path in sorted(folder.glob("*.heads.json")):
        data = read_result_file(path)
        if data is None:
            found.append(ResultFile(path, usable=False))
            continue
        model = data.get("model", {})
        job = data.get("job", {})
        found.append(ResultFile(
            path,
            usable=True,
            model_name=str(model.get("name", "")),
            source=str(model.get("source", "")),
            fingerprint=str(model.get("fingerprint", "")),
            tasks=tuple(job.get("tasks", ())),
            methods=tuple(job.get("methods", ())),
            seconds=data.get("seconds"),
        ))
    return found


def model_choices(results: list[ResultFile]) -> list[str]:
    """Return the known aliases, then every reloadable model that has a usable result file."""
    names = list(known_aliases())
    for result in results:
        if result.reloadable and result.model_name not in names:
            names.append(result.model_name)
    return names


# -- the model -----------------------------------------------------------------


@st.cache_resource(show_spinner=LOAD_SPINNER)
def get_model(name: str) -> TransformerBridge:
    """Load ``name`` once per server process. A failed load is not cached, so a retry loads again."""
    return load_model(name)


@st.cache_resource
def _model_lock(name: str) -> threading.Lock:
    """Return the lock that serializes forward passes on one cached model.

    Sessions run in threads and share the cached model, and TransformerLens
    hooks are attributes of that shared model: two concurrent hooked runs
    would see each other's hooks.
    """
    return threading.Lock()


def load_model_or_stop(name: str) -> TransformerBridge:
    """Return the cached model, or show why it failed to load and stop the page run."""
    try:
        return get_model(name)
    except ModelLoadError as error:
        logger.warning("model %r failed to load: %s", name, error)
        st.error(f"Could not load model {name!r}: {error}")
    except Exception as error:  # noqa: BLE001 - any loader failure must reach the user, not a blank page
        logger.exception("model %r failed to load", name)
        st.error(f"Could not load model {name!r}: {type(error).__name__}: {error}")
    st.stop()


def run_or_stop(function: Callable[..., T], *args: Any) -> T:
    """Return ``function(*args)``, or show an activation-store failure and stop the page run.

    The head search and the OV readout keep activations in the store under
    ``$INTERP_WORKBENCH_HOME``. A full disk or an unusable folder there raises
    ``StoreError``, or a bare ``OSError`` when the folder cannot even be created.
    """
    try:
        return function(*args)
    except StoreError as error:  # its message already names the folder and the fix
        logger.warning("activation store failed in %s: %s", getattr(function, "__name__", function), error)
        st.error(f"The activation store failed: {error}")
    except OSError as error:
        logger.warning("activation store failed in %s: %s", getattr(function, "__name__", function), error)
        st.error(
            f"The activation store failed: {error}. Set INTERP_WORKBENCH_HOME to a writable folder "
            "with free space and reload the page."
        )
    st.stop()


# -- tasks and head scores -----------------------------------------------------


@st.cache_data(show_spinner=False)
def tokenized_tasks(model_name: str, names: tuple[str, ...]) -> list[TokenizedTask]:
    tokenizer = get_model(model_name).tokenizer
    return [tokenize_task(task, tokenizer) for task in get_tasks(list(names))]


@st.cache_data(show_spinner="Scoring every head on every task (a few seconds)…")
def computed_scores(model_name: str, names: tuple[str, ...]) -> HeadScores:
    model = get_model(model_name)
    tasks = tokenized_tasks(model_name, names)
    with _model_lock(model_name):
        return search_heads(model, tasks, METHODS)


def _result_mismatch(data: dict, fingerprint: str, names: tuple[str, ...]) -> str | None:
    """Return why a complete result file cannot stand in for a fresh search, or None if it can."""
    if data.get("model", {}).get("fingerprint") != fingerprint:
        return "it was computed from other weights (fingerprint differs)"
    if tuple(data.get("job", {}).get("tasks", ())) != names:
        return "it covers other tasks"
    scores = data.get("scores", {})
    missing = [method for method in METHODS if method not in scores]
    if missing:
        return f"it lacks the method(s) {', '.join(missing)}"
    unscored = sorted({name for method in METHODS for name in names if name not in scores[method]})
    if unscored:
        return f"it has no scores for the task(s) {', '.join(unscored)}"
    return None


def head_scores(model_name: str, names: tuple[str, ...]) -> tuple[HeadScores, str]:
    """Return the head scores and a sentence saying where they came from.

    A complete result file for the same weights, tasks and methods is read
    instead of searching again. Otherwise the scores are computed and cached.
    """
    fingerprint = model_info(get_model(model_name)).fingerprint
    try:
        path = result_paths(results_dir(), model_name)[0]
    except ValueError as error:  # a name with no usable file-name characters
        logger.info("no result file name for %r: %s", model_name, error)
        path = None

    data = read_result_file(path) if path is not None else None
    if data is not None:
        mismatch = _result_mismatch(data, fingerprint, names)
        if mismatch is None:
            try:
                return HeadScores.from_dict(data), f"Scores read from {path}."
            except (KeyError, TypeError, ValueError) as error:
                mismatch = f"it is malformed ({type(error).__name__}: {error})"
                logger.warning("result file %s is malformed: %s", path, error)
        scores = computed_scores(model_name, names)
        return scores, f"Scores computed in this server process. {path} was not used because {mismatch}."

    return computed_scores(model_name, names), "Scores computed in this server process (no result file for this model)."


def task_ranking(scores: HeadScores, method: str, task_name: str, top: int) -> list[HeadRank]:
    """Rank heads by one task's score alone."""
    return scores.ranking(method, top, task=task_name)


@st.cache_data(show_spinner="Reading the head's OV circuit…")
def top_tokens(model_name: str, layer: int, head: int, task_name: str, method: str, k: int, scope: str) -> list[dict]:
    """Return ``ov_top_tokens`` rows for one head and task, cached per argument set."""
    model = get_model(model_name)
    (task,) = tokenized_tasks(model_name, (task_name,))
    with _model_lock(model_name):
        return ov_top_tokens(model, layer, head, task, method=method, k=k, scope=scope)
