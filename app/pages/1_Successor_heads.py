"""Successor heads: every head's succession score per task, the top heads, and one head's OV readout."""

from __future__ import annotations

# Run this page through app/Home.py (`workbench dashboard`): Streamlit then puts
# app/ on sys.path, which the `charts` and `state` imports need.
import pandas as pd
import streamlit as st

import charts
import state
from analysis.models import model_info
from analysis.successor import METHOD_UNITS, METHODS, OV_METHODS

TOP_HEADS = 10
METHOD_LABELS = {
    "ov_mlp0": "ov_mlp0: OV circuit on MLP0 embeddings",
    "ov_own_layer": "ov_own_layer: OV circuit on the head's own residual stream",
    "contextual_dla": "contextual_dla: direct logit attribution in a real sequence",
}
SCOPE_LABELS = {"vocab": "whole vocabulary", "task": "task tokens only"}

st.set_page_config(page_title="Successor heads · interp-workbench", layout="wide")
st.title("Successor heads")
st.markdown(
    "A successor head maps an item's token to the next item's token (Monday → Tuesday). "
    "The OV methods score a head by the share of items whose top-1 task token, read through "
    "the head's OV circuit, is the successor; `contextual_dla` measures the head's direct "
    "logit attribution to the next item in a sequence such as \"Monday Tuesday …\"."
)


# -- model and scores -----------------------------------------------------------

model_name = state.selected_model()
model = state.load_model_or_stop(model_name)
info = model_info(model)
st.caption(f"Model: **{info.name}** ({info.source}, fingerprint {info.fingerprint[:12]}).")
st.page_link("Home.py", label="Change the model on Home", icon=":material/home:")

task_names = state.task_names()
scores, origin = state.run_or_stop(state.head_scores, model_name, task_names)
st.caption(origin)
tasks = {task.name: task for task in scores.tasks}

left, right = st.columns(2)
method = left.selectbox("Method", METHODS, format_func=METHOD_LABELS.get, key="method")
task_name = right.selectbox("Task", task_names, key="task")

task = tasks[task_name]
units = METHOD_UNITS[method]
is_ov = method in OV_METHODS
n_pairs = len(task.successor_pairs())
st.caption(
    f"Task {task_name}: {len(task.items)} of {task.task_length} items kept as single tokens, "
    f"{n_pairs} successor pairs{', wrapping around' if task.cyclic else ''}."
)
if n_pairs == 0:
    st.warning(f"Task {task_name} has no successor pair for this tokenizer, so every score is 0.")


# -- heatmap and top heads ------------------------------------------------------

if is_ov:
    title = f"{task_name}: succession score by head, {method} ({units}); chance = {task.chance:.3f}"
else:
    title = f"{task_name}: mean direct logit attribution to the next item ({units})"
grid = scores.scores[method][task_name]
heatmap = charts.head_heatmap(grid, title=title, units=units, chance=task.chance if is_ov else None)
st.plotly_chart(heatmap, key="heatmap")

ranks = state.task_ranking(scores, method, task_name, TOP_HEADS)
if ranks:
    bar = charts.top_heads_bar(
        ranks,
        title=f"{task_name}: top {len(ranks)} heads by {method}",
        units=units,
        chance=task.chance if is_ov else None,
    )
    st.plotly_chart(bar, key="top_heads")


# -- one head's OV readout ------------------------------------------------------

st.subheader("One head's OV predictions per item")
table_method = method if is_ov else OV_METHODS[0]
if not is_ov:
    st.caption(f"`{method}` has no per-item readout of a head alone, so this table uses `{table_method}`.")

best = ranks[0] if ranks else None
columns = st.columns(4)
# Keys name the method and task, so the selectors jump to that pair's top head when either changes.
layer = columns[0].selectbox("Layer", range(scores.n_layers), index=best.layer if best else 0,
                             key=f"layer:{method}:{task_name}")
head = columns[1].selectbox("Head", range(scores.n_heads), index=best.head if best else 0,
                            key=f"head:{method}:{task_name}")
k = columns[2].slider("Top k", min_value=1, max_value=10, value=5, key="top_k")
scope = columns[3].radio("Rank over", tuple(SCOPE_LABELS), format_func=SCOPE_LABELS.get,
                         horizontal=True, key="scope")

if not task.items:
    st.info(f"Task {task_name} kept no items for this tokenizer, so there is nothing to read out.")
else:
    rows = state.run_or_stop(state.top_tokens, model_name, layer, head, task_name, table_method, k, scope)
    table = []
    for row in rows:
        record = {"item": row["item"], "expected": row["expected"]}
        # NOTE: a text match, because ov_top_tokens returns decoded strings. A token
        # that decodes to the expected item with other whitespace also counts.
        stripped = [token.strip() for token in row["top_tokens"]]
        record["expected rank"] = stripped.index(row["expected"]) + 1 if row["expected"] in stripped else None
        for rank, (token, logit) in enumerate(zip(row["top_tokens"], row["top_logits"]), start=1):
            record[f"top {rank}"] = f"{token!r} ({logit:.2f})"
        table.append(record)

    st.caption(
        f"L{layer}H{head} on {task_name}: top {k} tokens ({SCOPE_LABELS[scope]}) by logit, "
        f"read through `{table_method}`. Tokens are quoted so leading spaces show."
    )
    frame = pd.DataFrame(table)
    frame["expected rank"] = frame["expected rank"].astype("Int64")  # integers with gaps, not floats
    st.dataframe(frame, hide_index=True)


# -- dropped items --------------------------------------------------------------

dropped = [
    {"task": scored_task.name, "item": item["item"], "reason": item["reason"]}
    for scored_task in scores.tasks
    for item in scored_task.dropped
]
with st.expander(f"Items dropped from the tasks ({len(dropped)})"):
    if not dropped:
        st.write("None: every item of every task is a single token for this tokenizer.")
    else:
        for scored_task in scores.tasks:
            if scored_task.dropped:
                st.markdown(f"**{scored_task.name}**: kept {len(scored_task.items)} of "
                            f"{scored_task.task_length} items.")
        st.dataframe(pd.DataFrame(dropped), hide_index=True)
