"""Steering: build an in-context vector from demonstration pairs, steer generations with it, compare and export."""

from __future__ import annotations

# Run this page through app/Home.py (`workbench dashboard`): Streamlit then puts
# app/ on sys.path, which the `charts`, `state` and `steering_state` imports need.
import logging

import pandas as pd
import streamlit as st

import charts
import state
import steering_state
from analysis.models import model_info
from analysis.paths import safe_name
from analysis.steering.evaluate import MEASURES, few_shot_prompt, zero_shot_prompt
from analysis.steering.export import FORMATS
from analysis.steering.icv import VARIANTS
from analysis.steering.vector import VectorError, cosine_matrix
from probes.demos import DemoError, demos_hash

logger = logging.getLogger(__name__)

DEFAULT_SET = "sentiment"
N_SHOTS = 8  # demonstrations in the in-context prompt
DEFAULT_NEW_TOKENS = 24
MAX_NEW_TOKENS = 128
DEFAULT_SWEEP_INPUTS = 4
SWEEP_STRENGTHS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DEFAULT_SWEEP_STRENGTHS = [0.5, 1.0, 2.0, 4.0]  # evaluate_sweep's default
MAX_LISTED_PROBLEMS = 20

SOURCE_LABELS = {"shipped": "Shipped set", "upload": "Upload a file"}
VARIANT_LABELS = {
    "paper": "paper: principal direction, added after every block",
    "released": "released: direction plus mean difference, added to every MLP output",
}
OPERATIONS = {  # name -> (radio label, symbol in the result's label, operation)
    "add": ("A + B", "+", lambda first, second: first + second),
    "sub": ("A − B", "−", lambda first, second: first - second),
    "project": ("A without its component along B", "without", lambda first, second: first.project_out(second)),
}
FORMAT_FILES = {  # export format -> (button label, file-name suffix)
    "safetensors": ("safetensors (workbench)", ".safetensors"),
    "gguf": ("GGUF (llama.cpp control vector)", ".gguf"),
    "torch": ("PyTorch hooks (safetensors)", ".torch-hooks.safetensors"),
}

SOURCE_KEY = "steer_source"
SET_KEY = "steer_set"
PAIRS_KEY = "steer_pairs"
VARIANT_KEY = "steer_variant"
LAST_BUILT_KEY = "steer_last_built"  # label of the vector built on the previous run
LAST_UPLOADED_KEY = "steer_last_uploaded"
PROMPT_KEY = "steer_prompt"
PROMPT_SOURCE_KEY = "steer_prompt_source"  # (set, held-out input) the prompt box was last filled from
STRENGTH_KEY = "steer_strength"
NEW_TOKENS_KEY = "steer_new_tokens"
SWEEP_INPUTS_KEY = "steer_sweep_inputs"
SWEEP_REQUEST_KEY = "steer_sweep_request"  # the settings of the last sweep the user asked for

st.set_page_config(page_title="Steering · interp-workbench", layout="wide")
st.title("Steering")
st.markdown(
    "An in-context vector (Liu, Ye, Xing and Zou, *In-context Vectors*, 2023) is the first principal direction of h(y) − h(x) over "
    "demonstration pairs (x, y), read at the last token after every block. Adding it to the residual "
    "stream while the model generates moves the output from x-like towards y-like text without any "
    "demonstrations in the prompt. This page builds one, compares steered output with the unsteered "
    "model and with in-context learning, and exports the vector."
)


# -- model -------------------------------------------------------------------------

model_name = state.selected_model()
model = state.load_model_or_stop(model_name)
info = model_info(model)
st.caption(f"Model: **{info.name}** ({info.source}, fingerprint {info.fingerprint[:12]}).")
st.page_link("Home.py", label="Change the model on Home", icon=":material/home:")
st.caption("The page's URL records the set, pair count, variant, strength and new tokens "
           "(for example `?steer_pairs=8&steer_new_tokens=8`), so a link reopens the same settings.")


# -- 1. demonstrations ----------------------------------------------------------------

st.subheader("1. Demonstrations")
source = st.radio("Demonstration pairs", tuple(SOURCE_LABELS), format_func=SOURCE_LABELS.get, horizontal=True,
                  key=SOURCE_KEY)
if source == "shipped":
    try:
        sets = steering_state.shipped_sets()
    except DemoError as error:
        logger.warning("shipped demonstration sets unavailable: %s", error)
        st.error(f"The shipped demonstration sets are unavailable: {error}")
        st.stop()
    names = list(sets)
    set_name = st.selectbox("Shipped set", names, index=names.index(DEFAULT_SET) if DEFAULT_SET in names else 0,
                            key=SET_KEY, bind="query-params",
                            help="The files in data/demos; see data/demos/README.md.")
    demo_set = steering_state.call_or_stop(f"Reading the set {set_name!r}", steering_state.shipped_set, sets[set_name])
    set_label = set_name
else:
    upload = st.file_uploader(
        "Demonstration file", type=["jsonl", "csv"], key="steer_upload",
        help='.jsonl with one {"x": ..., "y": ...} object per line, or .csv with the header x,y '
             "(input,output also works). x has the attribute to steer away from, y is x without it.",
    )
    if upload is None:
        st.info("Upload a .jsonl or .csv file of pairs (x, y), or choose a shipped set.")
        st.stop()
    demo_set = steering_state.call_or_stop(f"Reading the uploaded file {upload.name!r}",
                                           steering_state.uploaded_set, upload.name, upload.getvalue())
    set_name = demo_set.name
    set_label = f"{demo_set.name} (upload)"

if demo_set.problems:
    listed = "\n".join(f"- {problem}" for problem in demo_set.problems[:MAX_LISTED_PROBLEMS])
    more = len(demo_set.problems) - MAX_LISTED_PROBLEMS
    st.warning(f"Skipped {len(demo_set.problems)} malformed row(s) of {set_label}; the other rows are used.\n\n"
               f"{listed}" + (f"\n- … and {more} more" if more > 0 else ""))

all_pairs = [(pair.x, pair.y) for pair in demo_set.pairs]
if len(all_pairs) < 2:
    st.error(f"{set_label} has {len(all_pairs)} valid pair, but a principal direction needs at least 2. "
             "Add pairs to the file.")
    st.stop()

# The count keeps its value across sets while it fits, and starts at "all pairs".
if not 2 <= st.session_state.get(PAIRS_KEY, 0) <= len(all_pairs):
    st.session_state[PAIRS_KEY] = len(all_pairs)
left, right = st.columns(2)
n_pairs = int(left.number_input(
    "Pairs to use", min_value=2, max_value=len(all_pairs), step=1, key=PAIRS_KEY, bind="query-params",
    help=f"The first N of the set's {len(all_pairs)} pairs build the vector. Fewer pairs build faster.",
))
variant = right.radio("Variant", VARIANTS, format_func=VARIANT_LABELS.get, key=VARIANT_KEY, bind="query-params")
pairs = all_pairs[:n_pairs]
with st.expander(f"The {n_pairs} pairs used"):
    st.dataframe(pd.DataFrame(pairs, columns=["x", "y"]), hide_index=True)

digest = demos_hash(pairs)
with st.spinner(f"Building the vector: {2 * n_pairs} forward passes, unless the activation store has them…"):
    vector = steering_state.call_or_stop("Building the vector", steering_state.built_vector,
                                         model_name, digest, variant, pairs)
built_label = f"{set_label}, {n_pairs} pairs, {variant}"
if source == "upload":
    built_label += f" ({digest[:8]})"  # two uploads with one file name must not share a label
library = steering_state.vector_library()
library[built_label] = vector
st.caption(f"Built **{built_label}**: {steering_state.describe_vector(vector)}")


# -- 2. the vector to steer with ----------------------------------------------------------

st.subheader("2. Vector to steer with")
vector_upload = st.file_uploader(
    "Add a saved vector", type=["safetensors"], key="steer_vector_upload",
    help="A .safetensors vector downloaded from this page or written by `workbench icv build`.",
)
uploaded_label = None
if vector_upload is not None:
    try:
        uploaded = steering_state.uploaded_vector(vector_upload.name, vector_upload.getvalue())
    except VectorError as error:
        logger.warning("uploaded vector %r rejected: %s", vector_upload.name, error)
        st.error(f"Could not read the uploaded vector {vector_upload.name!r}: {error}")
    else:
        uploaded_label = f"uploaded: {vector_upload.name}"
        library[uploaded_label] = uploaded
        if uploaded.fingerprint != info.fingerprint:
            st.warning(
                f"The uploaded vector {vector_upload.name!r} was built on {uploaded.model_id!r} (weights "
                f"{uploaded.fingerprint[:12]}), not on the loaded {info.name!r} (weights "
                f"{info.fingerprint[:12]}). Choose that model on Home to steer with it."
            )

usable = {label: item for label, item in library.items() if item.fingerprint == info.fingerprint}
# A newly built or uploaded vector becomes the one to steer with; otherwise the choice stays.
newly_uploaded = uploaded_label in usable and st.session_state.get(LAST_UPLOADED_KEY) != uploaded_label
if st.session_state.get(LAST_BUILT_KEY) != built_label or st.session_state.get(steering_state.ACTIVE_KEY) not in usable:
    st.session_state[steering_state.ACTIVE_KEY] = built_label
if newly_uploaded:
    st.session_state[steering_state.ACTIVE_KEY] = uploaded_label
st.session_state[LAST_BUILT_KEY] = built_label
st.session_state[LAST_UPLOADED_KEY] = uploaded_label

active_label = st.selectbox("Vector", list(usable), key=steering_state.ACTIVE_KEY,
                            help="Vectors built, uploaded or composed in this browser session.")
active = usable[active_label]
active_key = steering_state.vector_key(active)
if active_label != built_label:
    st.caption(steering_state.describe_vector(active))
if len(library) > len(usable):
    st.caption(f"{len(library) - len(usable)} vector(s) of other weights are hidden; they steer only their own model.")


# -- 3. generations ------------------------------------------------------------------

st.subheader("3. Generations")
heldout = steering_state.heldout_inputs(set_name) if source == "shipped" else None
if heldout:
    inputs = heldout
    st.caption(f"Held-out inputs: data/demos/{set_name}_heldout.txt ({len(inputs)} inputs, none among the pairs).")
elif n_pairs < len(all_pairs):
    inputs = [x for x, _ in all_pairs[n_pairs:]]
    st.caption(f"{set_label} has no held-out file, so the inputs are the x of the {len(inputs)} pairs not used "
               "to build the vector.")
else:
    inputs = [x for x, _ in all_pairs]
    st.caption(f"{set_label} has no held-out file and every pair built the vector, so the inputs below were "
               "seen while building it. Use fewer pairs to keep some unseen.")

example_input = st.selectbox("Input", inputs, key=f"steer_input:{set_label}",
                             help="Choosing an input replaces the prompt with its zero-shot prompt.")
# The prompt box gets its text through session_state, not `value=`: a changed
# `value=` makes Streamlit build a new widget and drop what the user typed.
prompt_source = (set_label, example_input)
if PROMPT_KEY not in st.session_state or st.session_state.get(PROMPT_SOURCE_KEY) != prompt_source:
    st.session_state[PROMPT_KEY] = zero_shot_prompt(example_input)
    st.session_state[PROMPT_SOURCE_KEY] = prompt_source
prompt = st.text_area("Prompt", key=PROMPT_KEY, height=80,
                      help="The unsteered and steered runs get this prompt; the in-context run gets "
                           f"{N_SHOTS} demonstrations in front of it.")

if STRENGTH_KEY not in st.session_state:
    st.session_state[STRENGTH_KEY] = 1.0
if NEW_TOKENS_KEY not in st.session_state:
    st.session_state[NEW_TOKENS_KEY] = DEFAULT_NEW_TOKENS
left, right = st.columns(2)
strength = float(left.slider(
    "Strength", min_value=-4.0, max_value=8.0, step=0.25, key=STRENGTH_KEY, bind="query-params",
    help="Multiple of the vector's scale added at every layer and position; 1 adds one average "
         "demonstration shift, a negative strength steers towards x.",
))
max_new_tokens = int(right.number_input(
    "New tokens", min_value=1, max_value=MAX_NEW_TOKENS, step=1, key=NEW_TOKENS_KEY, bind="query-params",
    help="Tokens generated greedily per run. Output is cut at its first newline before it is measured.",
))

if not prompt.strip():
    st.info("Enter a prompt, or choose an input above.")
    st.stop()

source_text = steering_state.split_zero_shot(prompt)
shots = pairs[:N_SHOTS]
in_context_prompt = few_shot_prompt(source_text, shots) if source_text is not None else None
conditions = [
    ("Unsteered", prompt, None, 0.0),
    (f"In-context ({len(shots)} demonstrations)", in_context_prompt, None, 0.0),
    (f"Steered (strength {strength:g})", prompt, active, strength),
]

generations = {}
for column, (title, condition_prompt, condition_vector, condition_strength) in zip(st.columns(3), conditions):
    with column:
        st.markdown(f"**{title}**")
        if condition_prompt is None:
            st.info(f"The in-context run needs the prompt in the zero-shot form {zero_shot_prompt('TEXT')!r}, "
                    "so the demonstrations can share its template. Choose an input above to get one.")
            continue
        with st.spinner(f"Generating {max_new_tokens} tokens…"):
            text = steering_state.call_or_stop(
                f"Generating ({title})", steering_state.generated_text, model_name, condition_prompt,
                max_new_tokens, steering_state.vector_key(condition_vector) if condition_vector else None,
                condition_strength, condition_vector,
            )
        output = steering_state.first_line(text)
        generations[title] = (condition_prompt, text)
        st.code(output or "(empty: the first line of the output is blank)", language=None, wrap_lines=True)
        measures = steering_state.output_measures(source_text or prompt, output)
        st.markdown(
            "| sentiment | offensive | similarity |\n| --- | --- | --- |\n"
            f"| {measures['sentiment']:+.3f} | {measures['offensive']:.3f} | {measures['similarity']:.3f} |"
        )

st.caption(
    "Sentiment: VADER compound score, −1 to 1. Offensive: probability of offensive language "
    "(alt-profanity-check). Similarity: cosine of all-MiniLM-L6-v2 embeddings of the output and "
    + ("the input." if source_text is not None else "the prompt, because the prompt is not in the zero-shot form.")
)
with st.expander("Prompts and whole generations"):
    for title, (condition_prompt, text) in generations.items():
        st.markdown(f"**{title}**")
        st.code(condition_prompt + text, language=None, wrap_lines=True)


# -- 4. metric versus strength -----------------------------------------------------------

st.subheader("4. Metric versus strength")
st.caption(
    f"Runs `evaluate_sweep` on the first held-out inputs: unsteered, in-context with {len(shots)} "
    f"demonstrations, and the vector at each strength, {max_new_tokens} new tokens each. On a CPU this takes "
    "minutes, so it runs only when asked."
)
if not 1 <= st.session_state.get(SWEEP_INPUTS_KEY, 0) <= len(inputs):
    st.session_state[SWEEP_INPUTS_KEY] = min(DEFAULT_SWEEP_INPUTS, len(inputs))
columns = st.columns(3)
n_inputs = int(columns[0].number_input("Inputs", min_value=1, max_value=len(inputs), step=1, key=SWEEP_INPUTS_KEY,
                                       help="The first N inputs of the list above."))
strengths = columns[1].multiselect("Strengths", SWEEP_STRENGTHS, default=DEFAULT_SWEEP_STRENGTHS,
                                   key="steer_sweep_strengths")
metric = columns[2].selectbox("Measure", MEASURES, key="steer_sweep_metric",
                              help="Perplexity is of the output under the unsteered model, given the prompt.")
sweep_request = (model_name, active_key, tuple(inputs[:n_inputs]), digest, tuple(sorted(strengths)),
                 N_SHOTS, max_new_tokens)
if st.button("Compute the sweep", key="steer_sweep", disabled=not strengths,
             help="Choose at least one strength." if not strengths else None):
    st.session_state[SWEEP_REQUEST_KEY] = sweep_request

if st.session_state.get(SWEEP_REQUEST_KEY) == sweep_request:
    with st.spinner("Generating for every condition and strength (minutes on a CPU)…"):
        results = steering_state.call_or_stop("The sweep", steering_state.strength_sweep, *sweep_request,
                                              active, pairs)
    st.plotly_chart(charts.metric_versus_strength(results, metric, title=f"{metric} versus strength ({active_label})"),
                    key="sweep_chart")
    table = pd.DataFrame([
        {"condition": result.condition, "strength": result.strength}
        | {measure: getattr(result, measure) for measure in MEASURES} | {"inputs": result.n}
        for result in results
    ])
    st.dataframe(table, hide_index=True)
elif st.session_state.get(SWEEP_REQUEST_KEY) is not None:
    st.caption("The settings changed since the last sweep; press the button to compute it again.")


# -- 5. vector arithmetic -----------------------------------------------------------------

st.subheader("5. Vector arithmetic")
labels = list(usable)
if len(labels) < 2:
    st.info("Build a second vector (another set, pair count or variant above) or upload one to combine two.")
else:
    columns = st.columns([3, 2, 3])
    first_label = columns[0].selectbox("A", labels, key="steer_first")
    operation = columns[1].radio("Operation", tuple(OPERATIONS), format_func=lambda name: OPERATIONS[name][0],
                                 key="steer_operation")
    second_label = columns[2].selectbox("B", labels, index=1, key="steer_second")
    first, second = usable[first_label], usable[second_label]
    try:
        cosine = first.cosine(second)
        composed = OPERATIONS[operation][2](first, second)
    except VectorError as error:
        logger.info("cannot combine %r and %r: %s", first_label, second_label, error)
        st.error(f"Cannot combine {first_label!r} and {second_label!r}: {error}")
    else:
        st.markdown(f"Cosine similarity of A and B, all layers concatenated: **{cosine:+.3f}**")
        composed_label = f"[{first_label}] {OPERATIONS[operation][1]} [{second_label}]"
        st.caption(f"Result: {steering_state.describe_vector(composed)}")
        st.button("Steer with the result", key="steer_compose", on_click=steering_state.use_vector,
                  args=(composed_label, composed),
                  help="Adds the result to the vector list and selects it in section 2.")

    same_hook = [label for label in labels if usable[label].hook_point == active.hook_point]
    if len(same_hook) >= 2:
        with st.expander(f"Cosine similarity of every {active.hook_point} vector"):
            matrix = cosine_matrix([usable[label] for label in same_hook]).tolist()
            st.plotly_chart(charts.cosine_heatmap(matrix, same_hook, title="Cosine similarity, all layers"),
                            key="cosine_matrix")


# -- 6. download ----------------------------------------------------------------------------

st.subheader("6. Download")
st.caption(
    f"The vector **{active_label}** at strength {strength:g}. The safetensors file records the strength "
    "in its metadata and loads with `SteeringVector.load`; the GGUF and PyTorch-hook files hold "
    "strength × scale × direction per layer. The GGUF file names the llama.cpp architecture gemma3 "
    "(`model_hint`), and llama.cpp never steers block 0, so that layer is left out."
)
file_stem = safe_name(active_label)
for column, fmt in zip(st.columns(len(FORMATS)), FORMATS):
    label, suffix = FORMAT_FILES[fmt]
    try:
        data = steering_state.exported_file(active_key, fmt, strength, active)
    except VectorError as error:
        logger.info("export of %r as %s rejected: %s", active_label, fmt, error)
        column.warning(f"{label}: {error}")
        continue
    column.download_button(f"Download {label}", data, file_name=f"{file_stem}{suffix}",
                           mime="application/octet-stream", key=f"steer_download_{fmt}", on_click="ignore")
