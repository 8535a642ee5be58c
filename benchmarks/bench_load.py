"""First load versus warm load of the default model, each in a fresh process.

The first load starts from an empty cache folder: it reassembles the GGUF file
from its PyPI packages, dequantizes it and writes the float cache. The warm
load reads that cache. Imports are excluded from both times. Target: warm load
at least 10x faster.

Usage: python benchmarks/bench_load.py [--model NAME]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = """
import time
from analysis.models import load_model
started = time.perf_counter()
load_model({name!r})
print(time.perf_counter() - started)
"""


def timed_load(name: str, home: str) -> float:
    env = dict(os.environ, INTERP_WORKBENCH_HOME=home, HF_HUB_OFFLINE="1")
    output = subprocess.run([sys.executable, "-c", CHILD.format(name=name)], env=env, check=True,
                            capture_output=True, text=True).stdout
    return float(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-load-") as home:
        first = timed_load(args.model, home)
        warm = min(timed_load(args.model, home) for _ in range(2))
    print(f"model {args.model}")
    print(f"first load (empty cache): {first:.1f} s")
    print(f"warm load (best of 2):    {warm:.1f} s")
    print(f"ratio first / warm: {first / warm:.1f}x (target: >= 10x)")


if __name__ == "__main__":
    main()
