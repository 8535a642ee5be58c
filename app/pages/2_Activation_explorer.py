"""Activation explorer: one prompt's tokens, attention patterns, logit lens and per-head logit attribution."""

from __future__ import annotations

# Run this page through app/Home.py (`workbench dashboard`): Streamlit then puts
# app/ on sys.path, which the `charts`, `state` and `explorer_state` imports need.
import hashlib
import logging

import pandas as pd
import streamlit as st

import charts
import explorer_state
import state
from analysis.models import model_info

logger = logging.getLogger(__name__)

EXAMPLE_PROMPTS = (
    "Monday Tuesday Wednesday Thursday",
    "The capital of France is",
    "When Mary and John went to the store, John gave a drink to",
    "one two three four five",
    "January February March April",
)
EXAMPLE_KEY = "explorer_example"
PROMPT_KEY = "explorer_prompt"
PROMPT_SOURCE_KEY = "explorer_prompt_example"  # the example the prompt box was last filled from
MAX_TOP_K = 10

st.set_page_config(page_title="Activation explorer · interp-workbench", layout="wide")
st.title("Activation explorer")
st.markdown(
    "One prompt inside the model: the tokens it sees, each head's attention pattern, what every "
    "layer would predict if it were the last (the logit lens), and how much each head's output "
    "raises the logit of a token you choose (direct logit attribution). Activations are kept in "
    "the activation store, so a prompt seen before is read from disk without a forward pass."
)


# -- model and prompt -----------------------------------------------------------

model_name = state.selected_model()
model = state.load_model_or_stop(model_name)
info = model_info(model)
st.caption(f"Model: **{info.name}** ({info.source}, fingerprint {info.fingerprint[:12]}).")
st.page_link("Home.py", label="Change the model on Home", icon=":material/home:")

example = st.selectbox("Example prompt", EXAMPLE_PROMPTS, key=EXAMPLE_KEY,
                       help="Choosing an example replaces the text in the prompt box.")
# The prompt box gets its text through session_state, not `value=`: a changed
# `value=` makes Streamlit build a new widget and drop what the user typed.
if PROMPT_KEY not in st.session_state or st.session_state.get(PROMPT_SOURCE_KEY) != example:
    st.session_state[PROMPT_KEY] = example
    st.session_state[PROMPT_SOURCE_KEY] = example
prompt = st.text_area("Prompt", key=PROMPT_KEY, height=80,
                      help="Text without a BOS token; the model's BOS token is added in front.")

if not prompt.strip():
    st.info("Enter a prompt, or choose an example above.")
    st.stop()
n_tokens = explorer_state.prompt_token_count(model, prompt)
if n_tokens > explorer_state.MAX_PROMPT_TOKENS:
    st.error(
        f"The prompt has {n_tokens} tokens (BOS not counted), more than the {explorer_state.MAX_PROMPT_TOKENS} this page "
        "shows (its heatmaps have one row or column per token). Shorten the prompt."
    )
    st.stop()

view = state.run_or_stop(explorer_state.prompt_view, model_name, prompt)
labels = [repr(token) for token in view.tokens]
# Widget keys below include the prompt's digest, so the selectors return to their
# defaults (last position, top prediction) whenever the prompt changes.
prompt_digest = hashlib.sha256(prompt.encode()).hexdigest()[:16]


# -- tokens -----------------------------------------------------------------------

st.subheader("Tokens")
# Both rows as strings: a column that mixes str and int cannot be converted to Arrow for display.
tokens_frame = pd.DataFrame([labels, [str(token_id) for token_id in view.token_ids]], index=["token", "id"],
                            columns=[str(position) for position in range(len(labels))])
st.dataframe(tokens_frame)
st.caption(f"{len(labels)} tokens, BOS included, each decoded alone and quoted so leading spaces show. "
           f"Activation-store entry `{view.entry_id[:12]}`.")


# -- attention patterns -----------------------------------------------------------

st.subheader("Attention patterns")
left, right = st.columns(2)
layer = left.selectbox("Layer", range(model.cfg.n_layers), format_func=lambda value: f"L{value}",
                       key="explorer_layer")
head = right.selectbox("Head", range(model.cfg.n_heads), format_func=lambda value: f"H{value}",
                       key="explorer_head")

head_chart, grid_chart = st.columns([2, 3])
with head_chart:
    st.plotly_chart(
        charts.attention_heatmap(view.patterns[layer][head], labels, title=f"L{layer}H{head}: attention"),
        key="attention_head",
    )
with grid_chart:
    st.plotly_chart(
        charts.attention_grid(view.patterns[layer], labels, title=f"Layer {layer}: every head (query down, key across)"),
        key="attention_grid",
    )


# -- logit lens -----------------------------------------------------------------

st.subheader("Logit lens")
k = st.slider("Top k tokens per cell", min_value=1, max_value=MAX_TOP_K, value=5, key="explorer_top_k")
lens = state.run_or_stop(explorer_state.lens_table, model_name, prompt, k)
st.plotly_chart(
    charts.logit_lens_heatmap(lens, labels, title="Top-1 next token read off each layer's residual stream"),
    key="logit_lens",
)
st.caption(
    "Each cell applies the final norm and the unembedding to the residual stream after one layer, at one "
    "position, and shows the most likely next token. Hover a cell for the top k. The last row is the "
    "model's own prediction."
)

last = len(labels) - 1
position = st.selectbox("Position", range(len(labels)), index=last,
                        format_func=lambda value: f"{value}: {labels[value]}",
                        key=f"explorer_position:{prompt_digest}",
                        help="The position read by the top-k table and by the head attribution below.")
lens_rows = [
    {"layer": f"L{lens_layer}"} | {
        f"top {rank}": f"{cell.token!r} ({cell.probability:.3f})"
        for rank, cell in enumerate(row[position], start=1)
    }
    for lens_layer, row in enumerate(lens)
]
st.dataframe(pd.DataFrame(lens_rows), hide_index=True)


# -- direct logit attribution -------------------------------------------------------

st.subheader("Direct logit attribution per head")
# NOTE: LensCell carries the decoded text only, so the default target is that text
# encoded again. A token that does not survive decode-then-encode (a byte-fallback
# piece decodes to '�') gets another id; the chart title names the id used.
top_prediction = lens[-1][position][0].token
target_key = f"explorer_target:{prompt_digest}:{position}"
if target_key not in st.session_state:
    st.session_state[target_key] = top_prediction
target_text = st.text_input(
    "Target token", key=target_key,
    help="One token of the model's vocabulary. Include a leading space where the token has one "
         "(' Paris', not 'Paris'). Defaults to the model's top prediction at the chosen position.",
)

target_ids = model.tokenizer.encode(target_text, add_special_tokens=False) if target_text else []
if len(target_ids) != 1:
    if not target_ids:
        st.error(f"The target {target_text!r} encodes to no token. Enter one token, for example {top_prediction!r}.")
    else:
        pieces = ", ".join(repr(model.tokenizer.decode([token])) for token in target_ids)
        st.error(
            f"The target {target_text!r} is {len(target_ids)} tokens ({pieces}), but head attribution needs a "
            f"single token. Enter one of them alone, or the model's prediction {top_prediction!r}."
        )
    logger.info("explorer target %r rejected: %d tokens", target_text, len(target_ids))
    st.stop()

(target_id,) = target_ids
attribution = state.run_or_stop(explorer_state.attribution_grid, model_name, prompt, target_id, position)
title = (f"Each head's direct logit attribution to {target_text!r} (id {target_id}) "
         f"at position {position} ({labels[position]})")
st.plotly_chart(charts.head_heatmap(attribution, title=title, units="logits", chance=None), key="head_attribution")
st.caption(
    "The head's output at this position, passed through the norms after it (linearized at this forward "
    "pass) and projected on the target token's unembedding column. Blue raises the target's logit, red "
    "lowers it."
)
