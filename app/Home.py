"""Dashboard home: pick a model, see what is loaded and which head-search results are cached.

Started by ``workbench dashboard`` (or ``streamlit run app/Home.py``); the
pages in ``app/pages/`` read the chosen model from ``st.session_state``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import streamlit as st

import state
from analysis.models import model_info

logger = logging.getLogger(__name__)

FINGERPRINT_CHARS = 12  # enough to tell weights apart by eye
CHOICE_KEY = "home_model_choice"
PATH_KEY = "home_model_path"

st.set_page_config(page_title="interp-workbench", layout="wide")
st.title("interp-workbench")
st.markdown(
    "A workbench for mechanistic interpretability. Pick a model here, then open a page in the "
    "sidebar: **Successor heads** shows which attention heads map an ordinal item (Monday, 3, "
    "March) to the next one, **Activation explorer** shows one prompt's attention patterns, "
    "logit lens and per-head logit attribution, **Steering** builds an in-context vector "
    "and steers generation with it, and **Multiplication** dissects small transformers trained "
    "on n-digit products, digit by digit."
)


# -- model picker ---------------------------------------------------------------

results_folder = state.results_dir()
results = state.list_result_files(results_folder)
choices = state.model_choices(results)
current = state.selected_model()

# The widgets get their starting values through session_state, not `index=` or
# `value=`: a changed `value=` makes Streamlit build a new widget, which drops
# what the user has just typed. Streamlit deletes these keys when the user opens
# another page, so they are filled again from the chosen model on return.
if st.session_state.get(CHOICE_KEY) not in choices:
    st.session_state[CHOICE_KEY] = current if current in choices else choices[0]
if PATH_KEY not in st.session_state:
    st.session_state[PATH_KEY] = "" if current in choices else current

st.subheader("Model")
left, right = st.columns(2)
choice = left.selectbox(
    "Known model (used while the path field is empty)",
    choices,
    key=CHOICE_KEY,
    help="The built-in default, plus every model with a complete result file in the results folder.",
)
typed = right.text_input(
    "…or a local model folder or .gguf file",
    key=PATH_KEY,
    placeholder="/path/to/hf-folder or /path/to/model.gguf",
    help="A Hugging Face folder (config.json plus weights) or a GGUF file. Overrides the known model when set.",
).strip()

if typed and not Path(typed).expanduser().exists():
    # Checked here because load_model would treat an unknown path as a hub id and try the network.
    logger.info("model path %r not found", typed)
    st.error(f"No file or folder at {typed!r}. Enter the path of a Hugging Face model folder or a .gguf file.")
    st.stop()

name = typed or choice
state.select_model(name)


# -- what is loaded -------------------------------------------------------------

model = state.load_model_or_stop(name)
info = model_info(model)

# A markdown table, not st.metric: metrics cut long names such as folder paths.
st.markdown(
    "| Name | Source | Fingerprint | Layers x heads |\n"
    "| --- | --- | --- | --- |\n"
    f"| `{info.name}` | {info.source} | `{info.fingerprint[:FINGERPRINT_CHARS]}` "
    f"| {model.cfg.n_layers} x {model.cfg.n_heads} |"
)
if info.path:
    st.caption(f"Weights: {info.path}")

st.page_link("pages/1_Successor_heads.py", label="Open the successor-head search", icon=":material/arrow_forward:")
st.page_link("pages/2_Activation_explorer.py", label="Explore one prompt's activations",
             icon=":material/arrow_forward:")
st.page_link("pages/3_Steering.py", label="Build and steer with an in-context vector", icon=":material/arrow_forward:")


# -- cached results -------------------------------------------------------------

st.subheader("Cached head-search results")
st.caption(f"Results folder: {results_folder.resolve()} (set with `workbench dashboard --results DIR`).")

if not results:
    st.info(
        "No result files here. Run `workbench heads --model NAME --out DIR` to write one; "
        "without it the dashboard computes the scores itself (a few seconds per model)."
    )
else:
    table = pd.DataFrame([
        {
            "file": result.path.name,
            "model": result.model_name or "?",
            "status": "complete" if result.usable else "not usable",
            "in picker": result.reloadable,
            "source": result.source or "?",
            "fingerprint": result.fingerprint[:FINGERPRINT_CHARS],
            "tasks": len(result.tasks),
            "methods": ", ".join(result.methods),
            "seconds": result.seconds,
        }
        for result in results
    ])
    st.dataframe(table, hide_index=True)
    if not all(result.usable for result in results):
        st.caption(
            "A file that is not usable is incomplete, unreadable or in another result format; "
            "`workbench heads` with the same --out folder writes it again."
        )
    if any(result.usable and not result.reloadable for result in results):
        st.caption(
            "A model read from a .gguf file is recorded by the file's stem, which cannot be loaded "
            "again; enter the same .gguf path that was given to `workbench heads` to use its result file."
        )
