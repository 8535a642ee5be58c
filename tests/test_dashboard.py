"""Tests of the Streamlit dashboard in app/.

Three layers: the result-file helpers of ``app/state.py`` without a model,
the pages under Streamlit's ``AppTest`` on the default model, and the whole
app in a real headless Chromium. Everything runs on 127.0.0.1 with the
Hugging Face hub switched off.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from streamlit.testing.v1 import AppTest

from analysis.batch import RESULT_FORMAT_VERSION, HeadsJob, run_heads_for_model
from analysis.models import DEFAULT_MODEL
from analysis.successor import METHODS
from probes.ordinal import TASKS, OrdinalTask, get_tasks

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "app"
HOME_PAGE = APP_DIR / "Home.py"
SUCCESSOR_PAGE = "pages/1_Successor_heads.py"  # relative to Home.py, as AppTest.switch_page expects
SUCCESSOR_URL_PATH = "Successor_heads"  # Streamlit's URL for pages/1_Successor_heads.py
TIMEOUT_S = 300  # a model load plus the head search took 20-45 s on a quiet 2-core CPU, several times that on a busy one

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server",  # the page is on loopback; a proxy from the environment must not see it
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- helpers --------------------------------------------------------------------


def _load_state_module() -> ModuleType:
    """Import app/state.py under its own name, so sys.path keeps no bare ``state`` entry."""
    spec = importlib.util.spec_from_file_location("dashboard_state", APP_DIR / "state.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def restore_main_module() -> Iterator[None]:
    """Put pytest's ``__main__`` module back after each test.

    Streamlit's script runner installs each page as ``sys.modules["__main__"]``
    and AppTest leaves it there. A later test that starts processes with the
    "spawn" method would then make each child re-run app/Home.py, which fails.
    """
    main_module = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main_module


@pytest.fixture(scope="module")
def state() -> ModuleType:
    return _load_state_module()


def _write_result(folder: Path, stem: str, *, name: str, source: str, fingerprint: str = "ab" * 32,
                  tasks: tuple[str, ...] = ("days",), complete: bool = True) -> Path:
    """Write a minimal result file with the keys that ``analysis.batch.read_result`` checks."""
    path = folder / f"{stem}.heads.json"
    data = {
        "format_version": RESULT_FORMAT_VERSION,
        "complete": complete,
        "model": {"name": name, "source": source, "fingerprint": fingerprint, "path": None},
        "job": {"tasks": list(tasks), "methods": list(METHODS), "top": 10},
        "seconds": 1.5,
        "scores": {method: {} for method in METHODS},
    }
    path.write_text(json.dumps(data))
    return path


def _home() -> AppTest:
    return AppTest.from_file(str(HOME_PAGE), default_timeout=TIMEOUT_S).run(timeout=TIMEOUT_S)


def _successor_page() -> AppTest:
    app = _home()
    assert not app.exception, app.exception
    return app.switch_page(SUCCESSOR_PAGE).run(timeout=TIMEOUT_S)


def _model_table(app: AppTest) -> str | None:
    """Return the Home page's markdown table of the loaded model, or None when it is not shown."""
    tables = [block.value for block in app.markdown if block.value.startswith("| Name | Source")]
    return tables[0] if tables else None


def _chart_spec(app: AppTest, key: str) -> dict:
    """Return the plotly figure JSON of the chart with ``key`` (AppTest has no typed plotly element)."""
    charts = [chart for chart in app.get("plotly_chart") if key in chart.proto.id]
    assert charts, f"no plotly chart with key {key!r}"
    return json.loads(charts[0].proto.spec)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_health(port: int, server: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Poll Streamlit's health endpoint until it returns 200; fail early if the server exits."""
    # An empty ProxyHandler ignores http_proxy and friends, so the request stays on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with code {server.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer {url} within {timeout_s} s:\n{log_path.read_text(errors='replace')}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server started by this test, by its own process handle."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        logger.warning("streamlit (pid %d) ignored SIGTERM; killing it", server.pid)
        server.kill()
        server.wait(timeout=15)


# -- state helpers, no model ------------------------------------------------------


def test_result_files_flag_unusable(tmp_path: Path, state: ModuleType) -> None:
    _write_result(tmp_path, "gemma-3-270m", name="gemma-3-270m", source="embedded-gguf")
    _write_result(tmp_path, "partial", name="partial", source="hub", complete=False)
    (tmp_path / "broken.heads.json").write_text("{")

    results = {result.path.name: result for result in state.list_result_files(tmp_path)}

    assert sorted(results) == ["broken.heads.json", "gemma-3-270m.heads.json", "partial.heads.json"]
    assert results["gemma-3-270m.heads.json"].usable
    assert results["gemma-3-270m.heads.json"].tasks == ("days",)
    assert not results["partial.heads.json"].usable
    assert not results["broken.heads.json"].usable


def test_result_files_missing_folder(tmp_path: Path, state: ModuleType) -> None:
    assert state.list_result_files(tmp_path / "absent") == []


def test_model_choices_only_reloadable(tmp_path: Path, state: ModuleType) -> None:
    model_folder = tmp_path / "my-model"
    model_folder.mkdir()
    results_folder = tmp_path / "results"
    results_folder.mkdir()
    _write_result(results_folder, "hub", name="org/model", source="hub")
    _write_result(results_folder, "gguf", name="tiny", source="gguf")
    _write_result(results_folder, "folder", name=str(model_folder), source="hf-folder")
    _write_result(results_folder, "gone", name=str(tmp_path / "deleted"), source="hf-folder")
    _write_result(results_folder, "default", name=DEFAULT_MODEL, source="embedded-gguf")

    choices = state.model_choices(state.list_result_files(results_folder))

    assert choices[0] == DEFAULT_MODEL
    assert choices.count(DEFAULT_MODEL) == 1
    assert "org/model" in choices
    assert str(model_folder) in choices
    assert "tiny" not in choices  # a .gguf stem cannot be loaded again
    assert str(tmp_path / "deleted") not in choices


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"model": {"fingerprint": "other"}}, "other weights"),
        ({"job": {"tasks": ["days"]}}, "other tasks"),
        ({"scores": {"ov_mlp0": {}}}, "lacks the method"),
        ({"scores": {method: {"days": []} for method in METHODS}}, "no scores for the task(s) months"),
    ],
)
def test_result_mismatch_reason(state: ModuleType, change: dict, reason: str | None) -> None:
    names = ("days", "months")
    data = {
        "model": {"fingerprint": "same"},
        "job": {"tasks": list(names)},
        "scores": {method: {name: [] for name in names} for method in METHODS},
    }
    data.update(change)

    mismatch = state._result_mismatch(data, "same", names)

    if reason is None:
        assert mismatch is None
    else:
        assert reason in mismatch


# -- pages under AppTest, default model -------------------------------------------


@pytest.mark.integration
def test_home_shows_loaded_model(results_dir: Path, hub_offline: None) -> None:
    app = _home()

    assert not app.exception, app.exception
    assert not app.error, [error.value for error in app.error]
    assert app.title[0].value == "interp-workbench"
    model_table = _model_table(app)
    assert model_table is not None, "no table of the loaded model"
    assert f"`{DEFAULT_MODEL}`" in model_table
    assert "embedded-gguf" in model_table
    assert re.search(r"\| `[0-9a-f]{12}` \| \d+ x \d+ \|", model_table), model_table
    assert any("No result files" in info.value for info in app.info)


@pytest.mark.integration
def test_home_rejects_missing_path(tmp_path: Path, results_dir: Path, hub_offline: None) -> None:
    app = _home()
    app.text_input[0].set_value(str(tmp_path / "missing.gguf")).run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert len(app.error) == 1
    assert "No file or folder" in app.error[0].value
    assert _model_table(app) is None  # the page stopped before showing a model


@pytest.mark.integration
@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        (None, "config.json"),  # ModelLoadError, whose message names the missing file
        ("{not json", "not a valid JSON"),  # an error transformers raises, shown the same way
    ],
)
def test_home_reports_load_error(tmp_path: Path, results_dir: Path, hub_offline: None,
                                 config_text: str | None, expected: str) -> None:
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    if config_text is not None:
        (not_a_model / "config.json").write_text(config_text)
    app = _home()
    app.text_input[0].set_value(str(not_a_model)).run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert len(app.error) == 1
    assert "Could not load model" in app.error[0].value
    assert expected in app.error[0].value


@pytest.mark.integration
def test_home_keeps_edit_after_error(tmp_path: Path, results_dir: Path, hub_offline: None) -> None:
    plain_file = tmp_path / "notes.txt"
    plain_file.write_text("not a model")
    app = _home()
    app.text_input[0].set_value(str(plain_file)).run(timeout=TIMEOUT_S)
    app.text_input[0].set_value(str(tmp_path / "second.gguf")).run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert app.text_input[0].value == str(tmp_path / "second.gguf")
    assert len(app.error) == 1
    assert "second.gguf" in app.error[0].value


@pytest.mark.integration
def test_successor_page_renders(results_dir: Path, hub_offline: None) -> None:
    app = _successor_page()

    assert not app.exception, app.exception
    assert not app.error, [error.value for error in app.error]
    heatmap = _chart_spec(app, "heatmap")
    assert heatmap["data"][0]["type"] == "heatmap"
    assert "share of items" in heatmap["layout"]["title"]["text"]
    assert "chance = " in heatmap["layout"]["title"]["text"]
    assert _chart_spec(app, "top_heads")["data"][0]["type"] == "bar"
    table = app.dataframe[0].value
    assert {"item", "expected", "expected rank", "top 1"} <= set(table.columns)
    assert any("no result file" in caption.value for caption in app.caption)
    assert app.expander[0].label.startswith("Items dropped")


@pytest.mark.integration
def test_successor_page_task_change(results_dir: Path, hub_offline: None) -> None:
    app = _successor_page()
    app.selectbox(key="task").set_value("months").run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    title = _chart_spec(app, "heatmap")["layout"]["title"]["text"]
    assert title.startswith("months:")
    assert "chance = 0.083" in title  # 12 months, all single tokens in Gemma's tokenizer
    assert list(app.dataframe[0].value["item"])[:2] == ["January", "February"]


@pytest.mark.integration
def test_successor_page_dla_method(results_dir: Path, hub_offline: None) -> None:
    app = _successor_page()
    app.selectbox(key="method").set_value("contextual_dla").run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    title = _chart_spec(app, "heatmap")["layout"]["title"]["text"]
    assert "(logits)" in title
    assert "chance" not in title
    assert any("this table uses `ov_mlp0`" in caption.value for caption in app.caption)


@pytest.mark.integration
def test_successor_page_task_without_items(monkeypatch: pytest.MonkeyPatch, results_dir: Path,
                                           hub_offline: None) -> None:
    # These nonsense words are several tokens each in Gemma's tokenizer, so the task keeps no item.
    unsplittable = OrdinalTask("unsplittable", ("qzxjvkwqp", "vqxzjkwpq", "jxqvzkpwq"))
    monkeypatch.setitem(TASKS, unsplittable.name, unsplittable)
    app = _successor_page()
    app.selectbox(key="task").set_value(unsplittable.name).run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert any("no successor pair" in warning.value for warning in app.warning)
    assert any("kept no items" in info.value for info in app.info)
    assert _chart_spec(app, "heatmap")["data"][0]["type"] == "heatmap"
    assert not [chart for chart in app.get("plotly_chart") if "top_heads" in chart.proto.id]


@pytest.mark.integration
def test_successor_page_store_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, results_dir: Path,
                                      hub_offline: None) -> None:
    app = _home()  # loads the model while the cache folder still works
    assert not app.exception, app.exception

    # A new task set misses the in-process score cache, so the search runs and opens the store.
    extra = OrdinalTask("store_probe", ("one", "two", "three"))
    monkeypatch.setitem(TASKS, extra.name, extra)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("INTERP_WORKBENCH_HOME", str(blocker / "home"))  # mkdir below a file fails
    app.switch_page(SUCCESSOR_PAGE).run(timeout=TIMEOUT_S)

    assert not app.exception, app.exception
    assert len(app.error) == 1
    assert "activation store failed" in app.error[0].value
    assert "INTERP_WORKBENCH_HOME" in app.error[0].value
    assert not app.get("plotly_chart")


@pytest.mark.integration
def test_successor_page_reads_result_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          hub_offline: None) -> None:
    tasks = get_tasks()
    job = HeadsJob(tuple(task.name for task in tasks), METHODS, top=5)
    run_heads_for_model(DEFAULT_MODEL, tasks, job, tmp_path)  # what `workbench heads --out` writes
    monkeypatch.setenv("INTERP_WORKBENCH_RESULTS", str(tmp_path))

    app = _home()
    listed = app.dataframe[0].value
    app.switch_page(SUCCESSOR_PAGE).run(timeout=TIMEOUT_S)

    assert list(listed["status"]) == ["complete"]
    assert not app.exception, app.exception
    assert any(caption.value.startswith("Scores read from") for caption in app.caption)
    assert _chart_spec(app, "heatmap")["data"][0]["type"] == "heatmap"


# -- the whole app in a browser ----------------------------------------------------


@pytest.mark.browser
@pytest.mark.integration
def test_browser_renders_heatmap(tmp_path: Path, results_dir: Path) -> None:
    chromium = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if chromium is None:
        pytest.skip(f"Chromium not found at {CHROMIUM} or on PATH; "
                    "install it with `apt-get install chromium chromium-driver` (as root).")
    sync_api = pytest.importorskip("playwright.sync_api", reason="install the test extra: pip install -e '.[test]'")

    port = _free_port()
    log_path = tmp_path / "streamlit.log"
    screenshot = tmp_path / "successor_heads.png"
    env = dict(os.environ, INTERP_WORKBENCH_RESULTS=str(results_dir), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "streamlit", "run", str(HOME_PAGE),
               "--server.address", "127.0.0.1", "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    try:
        _wait_for_health(port, server, log_path, timeout_s=120)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 3000})
                page.goto(f"http://127.0.0.1:{port}/{SUCCESSOR_URL_PATH}", timeout=60_000)
                page.wait_for_selector(".js-plotly-plot", timeout=TIMEOUT_S * 1000)
                page.wait_for_selector("[data-testid='stDataFrame']", timeout=TIMEOUT_S * 1000)
                # The status widget shows while the script runs; hidden means the page is complete.
                page.wait_for_selector("[data-testid='stStatusWidget']", state="hidden", timeout=TIMEOUT_S * 1000)
                plotly_charts = page.locator("[data-testid='stPlotlyChart'] .js-plotly-plot").count()
                exceptions = page.locator("[data-testid='stException']").count()
                # Streamlit scrolls inside its own container, so the tall viewport, not
                # full_page, is what gets the whole page into the screenshot.
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
    finally:
        _stop(server)

    log_text = log_path.read_text(errors="replace")
    watcher_errors = [line for line in log_text.splitlines()
                      if "watch" in line.lower() and ("error" in line.lower() or "limit" in line.lower())]
    png = screenshot.read_bytes()
    assert plotly_charts >= 2  # the heatmap and the top-heads bar chart
    assert exceptions == 0
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 10_000  # a blank page of this size compresses to far less
    assert "Traceback" not in log_text, log_text
    assert not watcher_errors, watcher_errors
