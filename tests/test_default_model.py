"""The whole head search on the default model (gemma-3-270m), checked against hand-checked values."""

import json

import pytest
from typer.testing import CliRunner

from analysis.cli import app

pytestmark = pytest.mark.integration

# Measured on the dequantized Q4_K_M weights and checked by hand (see docs/successor-heads.md).
EXPECTED_TOP = {"ov_own_layer": "L13H0", "contextual_dla": "L11H2"}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("heads")
    run = CliRunner().invoke(app, ["heads", "--model", "gemma-3-270m", "--out", str(out)],
                             catch_exceptions=False)
    assert run.exit_code == 0, run.output
    return json.loads((out / "gemma-3-270m.heads.json").read_text())


def test_result_names_the_model(result):
    assert result["model"]["name"] == "gemma-3-270m"
    assert len(result["model"]["fingerprint"]) == 64


def test_digits_kept_and_numbers_dropped(result):
    numbers = next(task for task in result["tasks"] if task["name"] == "numbers")
    assert numbers["items"] == [str(i) for i in range(10)]
    assert len(numbers["dropped"]) == 91
    assert numbers["chance"] == pytest.approx(0.1)


def test_every_head_scored(result):
    for method, per_task in result["scores"].items():
        assert len(per_task) == 8
        for grid in per_task.values():
            assert len(grid) == 18
            assert all(len(row) == 4 for row in grid)


@pytest.mark.parametrize("method", sorted(EXPECTED_TOP))
def test_top_head_regression(result, method):
    assert result["ranking"][method][0]["label"] == EXPECTED_TOP[method]


def test_top_own_layer_head_beats_chance(result):
    top = result["ranking"]["ov_own_layer"][0]
    mean_chance = sum(result["chance"].values()) / len(result["chance"])
    assert top["mean_score"] > 2 * mean_chance
