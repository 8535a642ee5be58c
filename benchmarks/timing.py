"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(function: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Return the median wall time of ``repeats`` calls, after one untimed call when ``warmup``."""
    if warmup:
        function()  # first calls allocate buffers and fill caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
