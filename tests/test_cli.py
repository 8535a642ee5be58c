"""The `workbench heads` batch job on a local model folder."""

import json

import pytest
from typer.testing import CliRunner

from analysis.cli import app
from native_models import write_tiny_llama_folder

WORDS = [str(i) for i in range(10)] + ["Monday", "Tuesday", "Wednesday", "A", "B", "C"]
runner = CliRunner()


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return write_tiny_llama_folder(tmp_path_factory.mktemp("models") / "tiny-llama", WORDS)


def run_heads(*args):
    return runner.invoke(app, ["heads", *args], catch_exceptions=False)


def test_heads_writes_json_and_csv(llama_folder, tmp_path):
    out = tmp_path / "out"
    result = run_heads("--model", str(llama_folder), "--tasks", "numbers,days", "--out", str(out))
    assert result.exit_code == 0, result.output

    files = sorted(path.name for path in out.iterdir())
    assert len(files) == 2
    data = json.loads((out / [f for f in files if f.endswith(".json")][0]).read_text())
    assert data["complete"] is True
    assert data["model"]["source"] == "hf-folder"
    assert [task["name"] for task in data["tasks"]] == ["numbers", "days"]
    numbers = data["tasks"][0]
    assert numbers["items"][:10] == [str(i) for i in range(10)]
    assert len(numbers["items"]) + len(numbers["dropped"]) == 101
    for method in ("ov_mlp0", "ov_own_layer", "contextual_dla"):
        grid = data["scores"][method]["numbers"]
        assert len(grid) == 2 and len(grid[0]) == 4
        assert data["ranking"][method][0]["label"].startswith("L")
    assert "rank" in (out / [f for f in files if f.endswith(".csv")][0]).read_text().splitlines()[0]


def test_complete_result_is_skipped(llama_folder, tmp_path):
    args = ("--model", str(llama_folder), "--tasks", "days", "--out", str(tmp_path))
    run_heads(*args)
    json_path = next(tmp_path.glob("*.json"))
    first_mtime = json_path.stat().st_mtime_ns
    second = run_heads(*args)
    assert "skipped" in second.output
    assert json_path.stat().st_mtime_ns == first_mtime


def test_other_tasks_need_force(llama_folder, tmp_path):
    run_heads("--model", str(llama_folder), "--tasks", "days", "--out", str(tmp_path))
    refused = run_heads("--model", str(llama_folder), "--tasks", "letters", "--out", str(tmp_path))
    assert refused.exit_code == 1
    assert "--force" in refused.output
    json_path = next(tmp_path.glob("*.json"))
    assert json.loads(json_path.read_text())["job"]["tasks"] == ["days"]

    forced = run_heads("--model", str(llama_folder), "--tasks", "letters", "--out", str(tmp_path), "--force")
    assert forced.exit_code == 0
    assert json.loads(json_path.read_text())["job"]["tasks"] == ["letters"]


def test_incomplete_result_is_recomputed(llama_folder, tmp_path):
    run_heads("--model", str(llama_folder), "--tasks", "days", "--out", str(tmp_path))
    json_path = next(tmp_path.glob("*.json"))
    json_path.write_text(json_path.read_text()[:100])  # as if cut off by a crash
    second = run_heads("--model", str(llama_folder), "--tasks", "days", "--out", str(tmp_path))
    assert "skipped" not in second.output
    assert json.loads(json_path.read_text())["complete"] is True


def test_bad_model_does_not_stop_the_others(llama_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_heads("--models", f"missing/model,{llama_folder}", "--tasks", "days", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "missing/model" in result.output
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_unknown_task_is_rejected(llama_folder, tmp_path):
    result = runner.invoke(app, ["heads", "--model", str(llama_folder), "--tasks", "weekdays",
                                 "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "weekdays" in result.output
