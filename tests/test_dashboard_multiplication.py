"""The Multiplication dashboard page on the shipped checkpoint."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = Path(__file__).resolve().parent.parent / "app" / "pages" / "4_Multiplication.py"


@pytest.fixture
def app():
    return AppTest.from_file(str(PAGE), default_timeout=120).run(timeout=120)


def test_page_renders_without_exception(app):
    assert not app.exception
    assert len(app.get("plotly_chart")) >= 4


def test_typed_numbers_are_answered(app):
    app.number_input(key="a").set_value(12).run(timeout=120)
    app.number_input(key="b").set_value(34).run(timeout=120)
    assert not app.exception
    assert any("12 x 34" in subheader.value for subheader in app.subheader)
