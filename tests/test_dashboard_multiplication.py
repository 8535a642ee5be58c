"""The Multiplication dashboard page on the shipped checkpoint: under ``AppTest``,
and once in a real headless Chromium on 127.0.0.1."""

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from analysis.arithmetic.training import train
from arith_helpers import tiny_config

from test_dashboard import PNG_SIGNATURE, TIMEOUT_S
from test_dashboard_pages import _browser_page, _wait_until_complete

PAGE = Path(__file__).resolve().parent.parent / "app" / "pages" / "4_Multiplication.py"


@pytest.fixture
def app():
    return AppTest.from_file(str(PAGE), default_timeout=120).run(timeout=120)


def test_page_renders_without_exception(app):
    assert not app.exception
    assert len(app.get("plotly_chart")) >= 4


def test_page_states_measured_accuracy(app):
    summary = [block.value for block in app.markdown if block.value.startswith("Greedy exact match")]
    assert len(summary) == 1
    assert "held-out problems" in summary[0]


def test_typed_run_folder_is_shown(app, tmp_path):
    # A 2 x 2-digit run the user trained: the page opens it, and the number inputs fit its size.
    torch.set_num_threads(1)
    run = tmp_path / "my-run"
    train(tiny_config(steps=10), run, progress=False)
    app.text_input(key="arith_run_path").set_value(str(run)).run(timeout=120)
    assert not app.exception
    assert app.selectbox[0].value == str(run)
    assert app.number_input(key="a").value == 99
    assert any("2x2 digits" in caption.value for caption in app.caption)


def test_typed_folder_without_run_is_an_error(app, tmp_path):
    app.text_input(key="arith_run_path").set_value(str(tmp_path)).run(timeout=120)
    assert not app.exception
    assert any("not a run folder" in error.value for error in app.error)


def test_typed_numbers_are_answered(app):
    app.number_input(key="a").set_value(12).run(timeout=120)
    app.number_input(key="b").set_value(34).run(timeout=120)
    assert not app.exception
    assert any("12 x 34" in subheader.value for subheader in app.subheader)


# -- the page in a browser ---------------------------------------------------------


@pytest.mark.browser
@pytest.mark.integration
def test_browser_multiplication_page(tmp_path: Path) -> None:
    screenshot = tmp_path / "multiplication.png"
    with _browser_page(tmp_path, tmp_path, 5000) as (page, port, log_path):
        page.goto(f"http://127.0.0.1:{port}/Multiplication", timeout=60_000)
        page.wait_for_selector("[data-testid='stPlotlyChart'] .js-plotly-plot", timeout=TIMEOUT_S * 1000)
        _wait_until_complete(page, TIMEOUT_S)

        # Type two numbers as a user would: each Enter reruns the page, which
        # then names the new problem in its subheader.
        for label, value, problem in (("a", "12", "12 x 456"), ("b", "34", "12 x 34")):
            field = page.get_by_label(label, exact=True)
            field.fill(value)
            field.press("Enter")
            page.locator("h3", has_text=problem).wait_for(timeout=TIMEOUT_S * 1000)
        _wait_until_complete(page, TIMEOUT_S)

        plotly_charts = page.locator("[data-testid='stPlotlyChart'] .js-plotly-plot").count()
        exceptions = page.locator("[data-testid='stException']").count()
        errors = page.locator("[data-testid='stAlertContentError']").count()
        page_text = page.locator("[data-testid='stMain']").inner_text()
        page.screenshot(path=str(screenshot), full_page=True)

    log_text = log_path.read_text(errors="replace")
    png = screenshot.read_bytes()
    # Learning curves, two carry charts, attention map, two patching maps, digit attention.
    assert plotly_charts >= 7, page_text
    assert exceptions == 0
    assert errors == 0
    assert "12 x 34 → 408: correct" in page_text  # Streamlit's markdown turns "->" into an arrow
    assert "Accuracy by carries" in page_text
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 10_000  # a blank page of this size compresses to far less
    assert "Traceback" not in log_text, log_text
