"""Demonstration pairs (x, y) for in-context vectors, and held-out inputs to steer.

An in-context vector (Liu, Ye, Xing, Zou, "In-context Vectors: Making In Context
Learning More Effective and Controllable Through Latent Space Steering", 2023)
is built from pairs where x has an attribute (negative, informal, rude) and y
keeps the meaning of x without it. The function-vector tasks (``fv_*``) pair
single words with a known answer (country -> capital, word -> antonym).

Pairs come from ``.jsonl`` files, one object ``{"x": ..., "y": ...}`` per line
(``"input"``/``"output"`` also work), or from ``.csv`` files whose header names
the columns ``x,y`` or ``input,output``. ``load_demos`` skips each malformed
row, records why in ``DemoSet.problems`` with its line number, and keeps
every valid row. The files shipped with the project are in ``data/demos``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

DEMOS_DIR = Path(__file__).resolve().parent.parent / "data" / "demos"

PAIR_EXTENSIONS = (".jsonl", ".csv")
HELDOUT_SUFFIX = "_heldout.txt"

# Accepted column names, in order of preference: (input column, output column).
KEY_NAMES = (("x", "y"), ("input", "output"))

# How many items one error or warning message lists before it only counts the rest.
MAX_LISTED_PROBLEMS = 5


class DemoError(ValueError):
    """A demonstration or held-out file cannot be used as given."""


@dataclass(frozen=True)
class DemoPair:
    """One demonstration: input ``x`` and the output ``y`` that the task maps it to."""

    x: str
    y: str

    def __iter__(self) -> Iterator[str]:
        # Lets a pair unpack as ``x, y = pair``, like the (x, y) tuples other code takes.
        return iter((self.x, self.y))


@dataclass
class DemoSet:
    """The valid pairs of one file, with one message per skipped row."""

    name: str  # file name without extension, e.g. "sentiment"
    pairs: list[DemoPair]
    problems: list[str] = field(default_factory=list)  # e.g. "line 7: missing key 'y'"


# A parsed row: (line number, the pair or None, the problem or None).
Row = tuple[int, DemoPair | None, str | None]


def load_demos(path: str | Path) -> DemoSet:
    """Read demonstration pairs from a ``.jsonl`` or ``.csv`` file, skipping malformed rows.

    Raises DemoError when the file is missing, has another extension, or
    contains no valid pair. Logs a warning for repeated pairs and for pairs
    whose x equals y, but keeps them.
    """
    path = Path(path)
    _require_file(path)
    suffix = path.suffix.lower()
    if suffix not in PAIR_EXTENSIONS:
        raise DemoError(
            f"Unsupported demonstration file extension {path.suffix!r} for {path}; "
            f"use one of {', '.join(PAIR_EXTENSIONS)}."
        )

    text = _read_text(path)
    rows = _parse_jsonl(text) if suffix == ".jsonl" else _parse_csv(text, path)
    numbered_pairs = [(line, pair) for line, pair, _ in rows if pair is not None]
    problems = [f"line {line}: {problem}" for line, _, problem in rows if problem is not None]

    if not numbered_pairs:
        raise DemoError(_no_pairs_message(path, problems))
    if problems:
        logger.warning("%s: skipped %d malformed row(s): %s", path, len(problems), _summarize(problems))

    _warn_about_duplicates(path, numbered_pairs)
    _warn_about_identical(path, numbered_pairs)
    return DemoSet(name=path.stem, pairs=[pair for _, pair in numbered_pairs], problems=problems)


def load_inputs(path: str | Path) -> list[str]:
    """Read held-out inputs from a text file, one per line, skipping blank lines.

    Each input is stripped of surrounding whitespace. Raises DemoError when the
    file is missing or contains no inputs.
    """
    path = Path(path)
    _require_file(path)
    text = _read_text(path)
    inputs = [line.strip() for line in text.splitlines() if line.strip()]
    if not inputs:
        raise DemoError(f"Held-out file {path} contains no inputs; write one input per line.")
    return inputs


def shipped_demos() -> dict[str, Path]:
    """Map each task name shipped in ``data/demos`` (e.g. "sentiment", "fv_antonym") to its file."""
    _require_demos_dir()
    files = sorted(path for path in DEMOS_DIR.iterdir() if path.suffix in PAIR_EXTENSIONS)
    return {path.stem: path for path in files}


def shipped_heldout(name: str) -> Path:
    """Return the held-out inputs file shipped for task ``name``, e.g. ``data/demos/sentiment_heldout.txt``."""
    _require_demos_dir()
    path = DEMOS_DIR / f"{name}{HELDOUT_SUFFIX}"
    if not path.is_file():
        known = sorted(heldout.name.removesuffix(HELDOUT_SUFFIX) for heldout in DEMOS_DIR.glob(f"*{HELDOUT_SUFFIX}"))
        raise DemoError(f"No held-out inputs for task {name!r}; tasks with held-out inputs: {', '.join(known)}.")
    return path


def demos_hash(pairs: Iterable[DemoPair | tuple[str, str]]) -> str:
    """Return the sha256 hex digest of the pairs, in order, for steering-vector metadata.

    The hashed bytes are the UTF-8 encoding of
    ``json.dumps([{"x": x, "y": y}, ...], ensure_ascii=False, separators=(",", ":"))``,
    so any other tool can recompute the digest. Reordering the pairs changes it.
    """
    records = [{"x": x, "y": y} for x, y in pairs]
    canonical = json.dumps(records, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DemoError(f"File not found: {path}. Check the path, or use shipped_demos() for the shipped sets.")


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet programs put at the start of CSV files.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DemoError(f"File {path} is not valid UTF-8 ({error}); save it as UTF-8.") from error


def _require_demos_dir() -> None:
    if not DEMOS_DIR.is_dir():
        # NOTE: data/demos is not package data, so only a source checkout (or an editable install) has it.
        raise DemoError(
            f"Demonstration folder {DEMOS_DIR} not found; run from a source checkout of interp-workbench."
        )


def _parse_jsonl(text: str) -> list[Row]:
    rows: list[Row] = []
    # Split on "\n" only: str.splitlines would also split on U+2028 and other separators
    # that json.dumps(..., ensure_ascii=False) leaves unescaped inside a string.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue

        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            rows.append((line_number, None, f"invalid JSON ({error.msg} at column {error.colno})"))
            continue
        if not isinstance(record, dict):
            rows.append((line_number, None, f"expected a JSON object, found {type(record).__name__}"))
            continue

        pair, problem = _pair_from_record(record)
        rows.append((line_number, pair, problem))
    return rows


def _pair_from_record(record: dict[str, object]) -> tuple[DemoPair | None, str | None]:
    keys = next(((x_key, y_key) for x_key, y_key in KEY_NAMES if x_key in record or y_key in record), None)
    if keys is None:
        expected = ", or ".join(f"'{x_key}' and '{y_key}'" for x_key, y_key in KEY_NAMES)
        return None, f"missing keys, expected {expected}"

    values = []
    for key in keys:
        if key not in record:
            return None, f"missing key {key!r}"
        problem = _value_problem(key, record[key])
        if problem:
            return None, problem
        values.append(record[key])
    return DemoPair(*values), None


def _value_problem(key: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"value of {key!r} is {type(value).__name__}, expected a string"
    if not value.strip():
        return f"value of {key!r} is empty"
    return None


def _parse_csv(text: str, path: Path) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = _read_csv_header(reader, path)
    x_index, y_index = _csv_columns(header, path)

    rows: list[Row] = []
    while True:
        # A quoted field may span lines, so a row starts on the line after the previous row ended.
        line_number = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            rows.append((line_number, None, f"invalid CSV ({error})"))
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue

        rows.append((line_number, *_pair_from_csv_row(row, header, x_index, y_index)))
    return rows


def _read_csv_header(reader: Iterator[list[str]], path: Path) -> list[str]:
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise DemoError(f"CSV file {path} has an invalid header row ({error}).") from error
    if header is None:
        raise DemoError(f"CSV file {path} is empty; it needs a header row x,y or input,output.")
    return [name.strip().lower() for name in header]


def _csv_columns(header: list[str], path: Path) -> tuple[int, int]:
    for x_key, y_key in KEY_NAMES:
        if x_key in header and y_key in header:
            return header.index(x_key), header.index(y_key)
    expected = " or ".join(f"{x_key},{y_key}" for x_key, y_key in KEY_NAMES)
    raise DemoError(f"CSV file {path} has header {','.join(header)}; the header must name the columns {expected}.")


def _pair_from_csv_row(
    row: list[str], header: list[str], x_index: int, y_index: int
) -> tuple[DemoPair | None, str | None]:
    if len(row) != len(header):
        return None, f"expected {len(header)} columns, found {len(row)}"

    for index in (x_index, y_index):
        problem = _value_problem(header[index], row[index])
        if problem:
            return None, problem
    return DemoPair(row[x_index], row[y_index]), None


def _no_pairs_message(path: Path, problems: list[str]) -> str:
    if not problems:
        return f"Demonstration file {path} contains no pairs; write one pair (x, y) per row."

    return f"Demonstration file {path} contains no valid pairs: {_summarize(problems)}."


def _warn_about_duplicates(path: Path, numbered_pairs: list[tuple[int, DemoPair]]) -> None:
    first_line: dict[DemoPair, int] = {}
    repeats = []
    for line_number, pair in numbered_pairs:
        if pair in first_line:
            repeats.append(f"line {line_number} repeats line {first_line[pair]}")
        else:
            first_line[pair] = line_number

    if repeats:
        logger.warning("%s: kept %d repeated pair(s): %s", path, len(repeats), _summarize(repeats))


def _warn_about_identical(path: Path, numbered_pairs: list[tuple[int, DemoPair]]) -> None:
    lines = [f"line {line_number}" for line_number, pair in numbered_pairs if pair.x == pair.y]
    if lines:
        logger.warning(
            "%s: kept %d pair(s) whose x equals y, so their difference h(y) - h(x) is zero: %s",
            path, len(lines), _summarize(lines),
        )


def _summarize(items: list[str]) -> str:
    # Lists at most MAX_LISTED_PROBLEMS items, so one message stays short on a large file.
    listed = "; ".join(items[:MAX_LISTED_PROBLEMS])
    more = len(items) - MAX_LISTED_PROBLEMS
    return f"{listed}; and {more} more" if more > 0 else listed
