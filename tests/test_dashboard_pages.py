"""Tests of the Activation explorer and Steering pages of the dashboard.

Both pages run under Streamlit's ``AppTest`` on the default model, and once
each in a real headless Chromium. Steering runs set "Pairs to use" and "New
tokens" through ``session_state`` before the page opens, because greedy
generation on a CPU takes seconds per token. Everything runs on 127.0.0.1
with the Hugging Face hub switched off; the activation store and the model
cache stay in the usual ``$INTERP_WORKBENCH_HOME``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import streamlit
from streamlit.testing.v1 import AppTest

import analysis.activations
from analysis.models import DEFAULT_MODEL
from analysis.steering.vector import SteeringVector
from test_dashboard import (  # noqa: F401  (restore_main_module is an autouse fixture)
    CHROMIUM,
    CHROMIUM_ARGS,
    HOME_PAGE,
    PNG_SIGNATURE,
    ROOT,
    _chart_spec,
    _free_port,
    _home,
    _stop,
    _wait_for_health,
    restore_main_module,
)

EXPLORER_PAGE = "pages/2_Activation_explorer.py"  # relative to Home.py, as AppTest.switch_page expects
STEERING_PAGE = "pages/3_Steering.py"
EXPLORER_URL_PATH = "Activation_explorer"  # Streamlit's URL for pages/2_Activation_explorer.py
STEERING_URL_PATH = "Steering"
# A build plus three 4-token generations took 30-60 s on a loaded 2-core CPU. The
# in-context run with its 8-shot prompt is the slowest part, and this limit leaves room for it.
TIMEOUT_S = 600
FAST_STEERING = {"steer_pairs": 8, "steer_new_tokens": 4}  # session_state values set before the page opens
EXPLORER_CHARTS = ("attention_head", "attention_grid", "logit_lens", "head_attribution")
DAYS_PROMPT = "Monday Tuesday Wednesday Thursday"  # the page's first example prompt


# -- helpers --------------------------------------------------------------------


def _open(page: str, **session_values: object) -> AppTest:
    """Open Home, set ``session_values`` (widget keys) and switch to ``page``."""
    app = _home()
    assert not app.exception, app.exception
    for key, value in session_values.items():
        app.session_state[key] = value
    return app.switch_page(page).run(timeout=TIMEOUT_S)


def _chart_keys(app: AppTest) -> list[str]:
    """Return the keys of the page's plotly charts (a chart's element id ends with its key)."""
    keys = []
    for chart in app.get("plotly_chart"):
        keys += [key for key in EXPLORER_CHARTS + ("sweep_chart", "cosine_matrix") if chart.proto.id.endswith(key)]
    return keys


def _errors(app: AppTest) -> list[str]:
    return [error.value for error in app.error]


def _page_state_module():
    """Return the ``state`` module that the pages import (app/ is on sys.path while they run)."""
    module = sys.modules.get("state")
    assert module is not None, "no page has imported app/state.py yet"
    return module


def _count_model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Empty the cached model and record every later call of the pages' loader; return the record."""
    page_state = _page_state_module()
    calls: list[str] = []
    real_loader = page_state.load_model

    def counting_loader(name: str, *args, **kwargs):
        calls.append(name)
        return real_loader(name, *args, **kwargs)

    monkeypatch.setattr(page_state, "load_model", counting_loader)
    page_state.get_model.clear()
    return calls


def _generation_outputs(app: AppTest) -> list[str]:
    """Return the three cut outputs shown side by side (the code blocks before the expander's)."""
    return [block.value for block in app.code][:3]


def _measure_tables(app: AppTest) -> list[str]:
    return [block.value for block in app.markdown if block.value.startswith("| sentiment | offensive")]


def _chromium_or_skip() -> str:
    chromium = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if chromium is None:
        pytest.skip(f"Chromium not found at {CHROMIUM} or on PATH; "
                    "install it with `apt-get install chromium chromium-driver` (as root).")
    return chromium


def _start_server(tmp_path: Path, results_dir: Path) -> tuple[subprocess.Popen, int, Path]:
    """Start ``streamlit run app/Home.py`` on a free loopback port; return the process, port and log path."""
    port = _free_port()
    log_path = tmp_path / "streamlit.log"
    env = dict(os.environ, INTERP_WORKBENCH_RESULTS=str(results_dir), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "streamlit", "run", str(HOME_PAGE),
               "--server.address", "127.0.0.1", "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return server, port, log_path


@contextmanager
def _browser_page(tmp_path: Path, results_dir: Path, height: int, **page_options) -> Iterator[tuple]:
    """Start the dashboard on loopback, open a headless Chromium page on it, and yield
    ``(page, port, log_path)``. The browser and the server are stopped on exit."""
    chromium = _chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api", reason="install the test extra: pip install -e '.[test]'")
    server, port, log_path = _start_server(tmp_path, results_dir)
    try:
        _wait_for_health(port, server, log_path, timeout_s=120)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                yield browser.new_page(viewport={"width": 1400, "height": height}, **page_options), port, log_path
            finally:
                browser.close()
    finally:
        _stop(server)


def _wait_until_complete(page, timeout_s: float) -> None:
    """Wait until Streamlit's status widget is hidden, which means the script run has finished."""
    page.wait_for_selector("[data-testid='stStatusWidget']", state="hidden", timeout=timeout_s * 1000)


# -- explorer under AppTest -------------------------------------------------------


@pytest.mark.integration
def test_explorer_renders_days_prompt(results_dir: Path, hub_offline: None) -> None:
    app = _open(EXPLORER_PAGE)

    assert not app.exception, app.exception
    assert not _errors(app), _errors(app)
    tokens = app.dataframe[0].value
    assert list(tokens.loc["token"]) == ["'<bos>'", "'Monday'", "' Tuesday'", "' Wednesday'", "' Thursday'"]
    assert sorted(_chart_keys(app)) == sorted(EXPLORER_CHARTS)

    head = _chart_spec(app, "attention_head")
    assert head["data"][0]["type"] == "heatmap"
    assert len(head["data"][0]["z"]) == 5  # one row per query token, BOS included
    assert head["layout"]["xaxis"]["ticktext"][1] == "'Monday'"
    grid = _chart_spec(app, "attention_grid")
    assert len(grid["data"]) == 4  # one heatmap per head of the default model's layers

    lens = _chart_spec(app, "logit_lens")
    assert len(lens["data"][0]["z"]) == 18  # one row per layer
    assert lens["data"][0]["text"][-1][-1] == "' Friday'"  # the model's own prediction after Thursday

    assert app.text_input[0].value == " Friday"  # the target defaults to that prediction
    attribution = _chart_spec(app, "head_attribution")
    assert "' Friday'" in attribution["layout"]["title"]["text"]
    assert len(attribution["data"][0]["z"]) == 18


@pytest.mark.integration
def test_explorer_rejects_multi_token_target(results_dir: Path, hub_offline: None) -> None:
    app = _open(EXPLORER_PAGE)
    app.text_input[0].set_value(" New York").run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert len(app.error) == 1
    assert "' New York'" in app.error[0].value
    assert "2 tokens" in app.error[0].value
    assert "head_attribution" not in _chart_keys(app)
    assert "logit_lens" in _chart_keys(app)  # everything above the target still shows


@pytest.mark.integration
def test_explorer_other_prompt_and_target(results_dir: Path, hub_offline: None) -> None:
    app = _open(EXPLORER_PAGE)
    app.selectbox(key="explorer_example").set_value("The capital of France is").run(timeout=TIMEOUT_S)
    app.text_input[0].set_value(" Paris").run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert not _errors(app), _errors(app)
    assert app.text_area(key="explorer_prompt").value == "The capital of France is"
    assert list(app.dataframe[0].value.loc["token"])[-1] == "' is'"
    title = _chart_spec(app, "head_attribution")["layout"]["title"]["text"]
    assert "' Paris'" in title
    assert "position 5" in title  # the last position by default


@pytest.mark.integration
def test_explorer_loads_model_once(monkeypatch: pytest.MonkeyPatch, results_dir: Path, hub_offline: None) -> None:
    app = _home()
    assert not app.exception, app.exception
    calls = _count_model_loads(monkeypatch)
    app.switch_page(EXPLORER_PAGE).run(timeout=TIMEOUT_S)
    for layer in (1, 2, 3, 4, 5):  # five clicks, each a rerun of the whole page
        app.selectbox(key="explorer_layer").set_value(layer).run(timeout=TIMEOUT_S)
        assert not app.exception, app.exception

    assert calls == [DEFAULT_MODEL]
    assert _chart_spec(app, "attention_head")["layout"]["title"]["text"].startswith("L5H0")
    assert _chart_spec(app, "attention_grid")["layout"]["title"]["text"].startswith("Layer 5")


@pytest.mark.integration
def test_explorer_reads_store_after_restart(monkeypatch: pytest.MonkeyPatch, results_dir: Path,
                                            hub_offline: None) -> None:
    app = _open(EXPLORER_PAGE)  # puts the first example's activations in the store
    assert not app.exception, app.exception

    forward_passes: list[int] = []

    def forbidden_forward(model, token_ids, *args, **kwargs):
        forward_passes.append(len(token_ids))
        raise AssertionError("the explorer ran the model although the activation store has the prompt")

    monkeypatch.setattr(analysis.activations, "run_and_collect", forbidden_forward)
    streamlit.cache_data.clear()  # what a server restart does to the in-memory caches
    reopened = _open(EXPLORER_PAGE)

    assert forward_passes == []
    assert not reopened.exception, reopened.exception
    assert sorted(_chart_keys(reopened)) == sorted(EXPLORER_CHARTS)


@pytest.mark.integration
def test_explorer_empty_and_long_prompts(results_dir: Path, hub_offline: None) -> None:
    app = _open(EXPLORER_PAGE)
    app.text_area(key="explorer_prompt").set_value("   ").run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert any("Enter a prompt" in info.value for info in app.info)
    assert not _chart_keys(app)

    app.text_area(key="explorer_prompt").set_value(" ".join(["word"] * 100)).run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert len(app.error) == 1
    assert "100 tokens" in app.error[0].value
    assert "Shorten the prompt" in app.error[0].value
    assert not _chart_keys(app)


# -- steering under AppTest ---------------------------------------------------------


@pytest.mark.integration
def test_steering_builds_and_generates(results_dir: Path, hub_offline: None) -> None:
    app = _open(STEERING_PAGE, **FAST_STEERING)

    assert not app.exception, app.exception
    assert not _errors(app), _errors(app)
    assert any(caption.value.startswith("Built **sentiment, 8 pairs, paper**") for caption in app.caption)
    assert app.selectbox(key="steer_active").value == "sentiment, 8 pairs, paper"

    titles = ["**Unsteered**", "**In-context (8 demonstrations)**", "**Steered (strength 1)**"]
    assert [block.value for block in app.markdown if block.value in titles][:3] == titles
    assert len(_generation_outputs(app)) == 3
    assert all("\n" not in output for output in _generation_outputs(app))  # each cut at its first newline
    assert len(_measure_tables(app)) == 3

    prompt = app.text_area(key="steer_prompt").value
    assert prompt.startswith("Input: ")
    assert prompt.endswith("\nOutput:")
    in_context_prompt = [block.value for block in app.code][4]  # the expander: unsteered, then in-context
    assert in_context_prompt.count("Input: ") == 9  # 8 demonstrations, then the input

    downloads = [button.label for button in app.download_button]
    assert downloads == ["Download safetensors (workbench)", "Download GGUF (llama.cpp control vector)",
                         "Download PyTorch hooks (safetensors)"]
    assert any("Build a second vector" in info.value for info in app.info)


@pytest.mark.integration
def test_steering_released_variant_exports(results_dir: Path, hub_offline: None) -> None:
    app = _open(STEERING_PAGE, **FAST_STEERING)
    app.radio(key="steer_variant").set_value("released").run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert app.selectbox(key="steer_active").value == "sentiment, 8 pairs, released"
    assert [button.label for button in app.download_button] == ["Download safetensors (workbench)"]
    warnings = [warning.value for warning in app.warning]
    assert len(warnings) == 2  # gguf and torch need a resid_post vector
    assert all("Only resid_post vectors" in warning for warning in warnings)
    # The library now holds a paper and a released vector, which steer different hook points.
    assert any("hook_point 'resid_post' vs 'mlp_out'" in error for error in _errors(app))


@pytest.mark.integration
def test_steering_composes_vectors(results_dir: Path, hub_offline: None) -> None:
    app = _open(STEERING_PAGE, **FAST_STEERING)
    app.number_input(key="steer_pairs").set_value(6).run(timeout=TIMEOUT_S)
    app.radio(key="steer_operation").set_value("sub").run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert app.selectbox(key="steer_first").value == "sentiment, 8 pairs, paper"
    assert app.selectbox(key="steer_second").value == "sentiment, 6 pairs, paper"
    assert any(block.value.startswith("Cosine similarity of A and B") for block in app.markdown)
    assert "cosine_matrix" in _chart_keys(app)

    app.button(key="steer_compose").click().run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert not _errors(app), _errors(app)
    composed = "[sentiment, 8 pairs, paper] − [sentiment, 6 pairs, paper]"
    assert app.selectbox(key="steer_active").value == composed
    assert any(composed in caption.value for caption in app.caption)  # the download caption names it
    assert len(_generation_outputs(app)) == 3


@pytest.mark.integration
def test_steering_sweep_on_request(results_dir: Path, hub_offline: None) -> None:
    app = _open(STEERING_PAGE, steer_pairs=8, steer_new_tokens=2)
    app.number_input(key="steer_sweep_inputs").set_value(1)
    app.multiselect(key="steer_sweep_strengths").set_value([1.0]).run(timeout=TIMEOUT_S)

    assert "sweep_chart" not in _chart_keys(app)  # nothing runs before the button

    app.button(key="steer_sweep").click().run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert not _errors(app), _errors(app)
    sweep = _chart_spec(app, "sweep_chart")
    assert sweep["data"][0]["x"] == [1.0]
    table = app.dataframe[-1].value
    assert list(table["condition"]) == ["none", "icl", "vector"]
    assert list(table["inputs"]) == [1, 1, 1]

    app.selectbox(key="steer_sweep_metric").set_value("similarity").run(timeout=TIMEOUT_S)

    assert _chart_spec(app, "sweep_chart")["layout"]["yaxis"]["title"]["text"] == "similarity"


@pytest.mark.integration
def test_steering_upload_skips_bad_rows(results_dir: Path, hub_offline: None) -> None:
    rows = [
        '{"x": "What a dull, grey morning.", "y": "What a bright, lovely morning."}',
        '{"x": 3, "y": "a number is not text"}',
        "not json",
        '{"x": "The coffee here is bitter and cold.", "y": "The coffee here is rich and hot."}',
        '{"input": "My flight got cancelled again.", "output": "My flight left right on time."}',
    ]
    app = _open(STEERING_PAGE, **FAST_STEERING)
    app.radio(key="steer_source").set_value("upload").run(timeout=TIMEOUT_S)
    assert any("Upload a .jsonl or .csv file" in info.value for info in app.info)

    upload = ("my pairs.jsonl", "\n".join(rows).encode(), "application/json")
    app.file_uploader(key="steer_upload").set_value(upload).run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert not _errors(app), _errors(app)
    warning = app.warning[0].value
    assert "Skipped 2 malformed row(s)" in warning
    assert "line 2: value of 'x' is int" in warning
    assert "line 3: invalid JSON" in warning
    assert any(caption.value.startswith("Built **my pairs (upload), 3 pairs, paper")
               for caption in app.caption)
    # No held-out file comes with an upload, so the inputs are the pairs' x.
    assert app.text_area(key="steer_prompt").value == "Input: What a dull, grey morning.\nOutput:"
    assert len(_generation_outputs(app)) == 3


@pytest.mark.integration
def test_steering_upload_without_pairs(results_dir: Path, hub_offline: None) -> None:
    app = _open(STEERING_PAGE, **FAST_STEERING)
    app.radio(key="steer_source").set_value("upload").run(timeout=TIMEOUT_S)
    upload = ("broken.csv", b"question,answer\nwhy,because\n", "text/csv")
    app.file_uploader(key="steer_upload").set_value(upload).run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert len(app.error) == 1
    assert "'broken.csv'" in app.error[0].value
    assert "header must name the columns x,y or input,output" in app.error[0].value
    assert not app.download_button


@pytest.mark.integration
def test_steering_loads_model_once(monkeypatch: pytest.MonkeyPatch, results_dir: Path, hub_offline: None) -> None:
    app = _home()
    assert not app.exception, app.exception
    calls = _count_model_loads(monkeypatch)
    for key, value in FAST_STEERING.items():
        app.session_state[key] = value
    app.switch_page(STEERING_PAGE).run(timeout=TIMEOUT_S)
    for metric in ("offensive", "similarity", "perplexity", "sentiment", "similarity"):  # five reruns
        app.selectbox(key="steer_sweep_metric").set_value(metric).run(timeout=TIMEOUT_S)
        assert not app.exception, app.exception

    assert calls == [DEFAULT_MODEL]


# -- both pages in a browser ----------------------------------------------------------


@pytest.mark.browser
@pytest.mark.integration
def test_browser_explorer_page(tmp_path: Path, results_dir: Path) -> None:
    screenshot = tmp_path / "activation_explorer.png"
    with _browser_page(tmp_path, results_dir, 4200) as (page, port, log_path):
        page.goto(f"http://127.0.0.1:{port}/{EXPLORER_URL_PATH}", timeout=60_000)
        page.wait_for_selector("[data-testid='stPlotlyChart'] .js-plotly-plot", timeout=TIMEOUT_S * 1000)
        _wait_until_complete(page, TIMEOUT_S)
        plotly_charts = page.locator("[data-testid='stPlotlyChart'] .js-plotly-plot").count()
        exceptions = page.locator("[data-testid='stException']").count()
        errors = page.locator("[data-testid='stAlertContentError']").count()
        page_text = page.locator("[data-testid='stMain']").inner_text()
        page.screenshot(path=str(screenshot), full_page=True)

    log_text = log_path.read_text(errors="replace")
    png = screenshot.read_bytes()
    assert plotly_charts == len(EXPLORER_CHARTS)
    assert exceptions == 0
    assert errors == 0
    assert "Direct logit attribution per head" in page_text
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 10_000  # a blank page of this size compresses to far less
    assert "Traceback" not in log_text, log_text


@pytest.mark.browser
@pytest.mark.integration
def test_browser_steering_page(tmp_path: Path, results_dir: Path) -> None:
    screenshot = tmp_path / "steering.png"
    downloaded = tmp_path / "downloaded.safetensors"
    with _browser_page(tmp_path, results_dir, 4200, accept_downloads=True) as (page, port, log_path):
        # The URL sets the bound widgets, so the first run builds from 8 pairs and generates 4 tokens.
        page.goto(f"http://127.0.0.1:{port}/{STEERING_URL_PATH}?steer_pairs=8&steer_new_tokens=4",
                  timeout=60_000)
        page.wait_for_selector("[data-testid='stDownloadButton']", timeout=TIMEOUT_S * 1000)
        _wait_until_complete(page, TIMEOUT_S)
        outputs = page.locator("[data-testid='stCode']").count()
        exceptions = page.locator("[data-testid='stException']").count()
        errors = page.locator("[data-testid='stAlertContentError']").count()
        page_text = page.locator("[data-testid='stMain']").inner_text()
        page_url = page.url
        page.screenshot(path=str(screenshot), full_page=True)
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Download safetensors (workbench)").click()
        download.value.save_as(downloaded)

    log_text = log_path.read_text(errors="replace")
    png = screenshot.read_bytes()
    vector = SteeringVector.load(downloaded)
    assert outputs >= 3  # the three generations side by side
    assert exceptions == 0
    assert errors == 0
    assert "Built sentiment, 8 pairs, paper" in page_text
    assert "steer_pairs=8" in page_url  # the bound widget keeps its query parameter
    assert "In-context (8 demonstrations)" in page_text
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 10_000
    assert "Traceback" not in log_text, log_text
    assert vector.model_id == DEFAULT_MODEL
    assert vector.method == "icv-paper"
    assert vector.extra["n_pairs"] == 8
    assert vector.strength == 1.0  # the slider's default, recorded by the export
