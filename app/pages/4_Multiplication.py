"""Multiplication: a small transformer trained on n-digit products, dissected digit by digit.

A thin view over ``analysis.arithmetic``: the shipped runs' learning curves and
precomputed dissections are read from ``data/arith``, and the model itself only
runs for the interactive panel.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.arithmetic import checkpoint, curves, dissect
from analysis.arithmetic.attention import explain_product
from probes.arithmetic import FORMATS

st.set_page_config(page_title="Multiplication", layout="wide")
st.title("Multiplication circuits")


@st.cache_resource(show_spinner="Loading the checkpoint…")
def load_run(run: str):
    # Keyed by the run folder's path string, never by an object.
    return checkpoint.load_run(Path(run))


@st.cache_data
def read_parts(run: str) -> dict:
    return dissect.read_dissection(Path(run) / "dissect")


def heatmap(values, x, y, title: str, colorscale: str = "Viridis") -> go.Figure:
    figure = go.Figure(go.Heatmap(z=values, x=x, y=y, colorscale=colorscale))
    figure.update_layout(title=title, height=360, margin=dict(l=40, r=20, t=50, b=40))
    return figure


# The shipped runs, then those `workbench arith train` writes by default (runs/ in the
# working folder), then one folder the user types.
runs = [str(path) for folder in (checkpoint.SHIPPED_RUNS, Path("runs")) for path in checkpoint.list_runs(folder)]
typed = st.text_input("Another run folder (optional)", key="arith_run_path",
                      help="A folder written by `workbench arith train`, e.g. runs/arith-cpu-3x3.").strip()
if typed:
    if (Path(typed) / "config.json").is_file():
        runs.insert(0, typed)
    else:
        st.error(f"{typed} has no config.json, so it is not a run folder; pass a folder written by "
                 "`workbench arith train`.")
if not runs:
    st.error("No trained runs found in data/arith or runs/. Train one with `workbench arith train`.")
    st.stop()
run = st.selectbox("Run", runs, format_func=lambda path: path if Path(path).parent != checkpoint.SHIPPED_RUNS
                   else Path(path).name)
config, model = load_run(run)
spec = config.problem
format_name = next((name for name, fmt in FORMATS.items() if fmt == spec.format), "custom")
st.caption(f"{spec.n_a}x{spec.n_b} digits, format {format_name}; "
           f"{config.model.n_layers} layers x {config.model.n_heads} heads, d_model {config.model.d_model}.")
final = checkpoint.read_eval(run)
if final is not None:
    hardware = final.get("hardware", {})
    where = f" on {hardware['device']} ({hardware['torch_threads']} thread(s))" if hardware else ""
    source = f", fine-tuned from {Path(config.train.init_from).name}" if config.train.init_from else ""
    st.markdown(f"Greedy exact match **{final['exact_match_greedy']:.2%}**, teacher-forced "
                f"{final['exact_match_teacher_forced']:.2%}, on {final['n_problems']:,} held-out problems; "
                f"step {final['step']:,}, {final['train_time_s'] / 60:.0f} min of training{where}{source}.")

st.header("Learning curves")
if config.train.init_from:
    # A fine-tuning run starts from a trained model, so its curves begin near the end.
    st.info(f"This run was fine-tuned from {Path(config.train.init_from).name}, so its curves start "
            "from a trained model. Select that run above to see how the digits were learned from random weights.")
learning = curves.learning_curves(Path(run))
st.plotly_chart(curves.learning_curve_figure(learning), key="curves")
order = curves.learning_order(learning).to_dict()
st.write("Step at which each answer digit (place 0 = units) reached "
         f"{order['accuracy_threshold']:.0%} accuracy, and each subtask's loss fell below {order['loss_threshold']}:")
st.dataframe(pd.DataFrame({"digit place": list(order["digits"]), "step": list(order["digits"].values())}))
st.dataframe(pd.DataFrame({"subtask": list(order["subtasks"]), "step": list(order["subtasks"].values())}))

parts = read_parts(run)
if "carries" in parts:
    st.header("Accuracy by carries")
    carries = parts["carries"]
    left, right = st.columns(2)
    left.plotly_chart(go.Figure(go.Bar(x=[row["value"] for row in carries["by_carry_count"]],
                                       y=[row["accuracy"] for row in carries["by_carry_count"]]))
                      .update_layout(title="exact match by number of carries", height=320), key="carry_count")
    right.plotly_chart(go.Figure(go.Bar(x=[row["value"] for row in carries["by_cascade_length"]],
                                        y=[row["accuracy"] for row in carries["by_cascade_length"]]))
                       .update_layout(title="exact match by longest carry cascade", height=320), key="cascade")

if "attention" in parts:
    st.header("Which operand digits each answer digit reads")
    attention = parts["attention"]
    layer = st.number_input("Layer", 0, config.model.n_layers - 1, 0, key="attn_layer")
    head = st.number_input("Head", 0, config.model.n_heads - 1, 0, key="attn_head")
    st.plotly_chart(heatmap(attention["weights"][layer][head], attention["slot_labels"],
                            [f"place {place}" for place in attention["places"]],
                            f"mean attention L{layer}H{head}: answer digit (rows) to operand digit"),
                    key="attention_map")

patching = sorted(name for name in parts if name.startswith("patching_"))
if patching:
    st.header("Activation patching")
    chosen = st.selectbox("Corrupted operand digit", patching, format_func=lambda name: name.split("_")[1])
    result = parts[chosen]
    place = st.selectbox("Answer digit (place)", result["places"], key="patch_place")
    index = result["places"].index(place)
    residual = [[row[index] for row in hook_rows] for hook_rows in result["residual"]]
    st.plotly_chart(heatmap(residual, [str(position) for position in result["positions"]], result["hooks"],
                            f"recovered logit difference of place {place}, residual stream", "RdBu"),
                    key="patch_resid")
    heads = [[row[index] for row in layer_rows] for layer_rows in result["heads"]]
    st.plotly_chart(heatmap(heads, [f"H{h}" for h in range(len(heads[0]))],
                            [f"L{layer}" for layer in range(len(heads))],
                            f"recovered logit difference of place {place}, per head output", "RdBu"),
                    key="patch_heads")

st.header("Try two numbers")
left, right = st.columns(2)
a = left.number_input("a", 0, 10**spec.n_a - 1, min(123, 10**spec.n_a - 1), key="a")
b = right.number_input("b", 0, 10**spec.n_b - 1, min(456, 10**spec.n_b - 1), key="b")
explanation = explain_product(model, spec, int(a), int(b))
verdict = "correct" if explanation.correct else f"wrong (true product {explanation.product})"
st.subheader(f"{a} x {b} -> {explanation.predicted}: {verdict}")
steps = [step for step in explanation.steps if step.place >= 0]
st.dataframe(pd.DataFrame([{"place": s.place, "model": s.token, "probability": round(s.probability, 3),
                            "expected": s.expected} for s in steps]))
if steps:
    step = st.selectbox("Digit", steps, format_func=lambda s: f"place {s.place}: {s.token}", key="digit")
    rows = [f"L{layer}H{head}" for layer in range(len(step.attention)) for head in range(len(step.attention[layer]))]
    values = [row for layer_rows in step.attention for row in layer_rows]
    keys = explanation.tokens[: len(values[0])]
    st.plotly_chart(heatmap(values, [f"{i}:{token}" for i, token in enumerate(keys)], rows,
                            f"attention of the position that wrote place {step.place}"), key="digit_attention")
