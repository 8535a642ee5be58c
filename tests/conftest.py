"""Fixtures shared by several test modules; each fixture is independent, so add new ones below."""

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


@pytest.fixture(scope="session")
def hub_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` until the session ends, so a name that is not local fails at once.

    ``analysis.models.hub_is_reachable`` reads the variable on each call, and
    without it an unknown model name opens a connection to huggingface.co.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield
