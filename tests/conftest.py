"""Fixtures shared by several test modules. Each fixture stands alone, so add new ones below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Return an empty results folder, set as ``INTERP_WORKBENCH_RESULTS`` until the session ends."""
    folder = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INTERP_WORKBENCH_RESULTS", str(folder))
        yield folder


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set ``HF_HUB_OFFLINE=1`` for one test, so a model name that is not local fails at once.

    ``analysis.models.hub_is_reachable`` reads the variable on each call, and
    without it an unknown model name opens a connection to huggingface.co.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
