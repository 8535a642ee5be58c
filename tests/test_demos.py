"""Demonstration sets: the shipped files, malformed rows, errors and the demonstration hash."""

import csv
import json
import logging

import pytest

from probes.demos import (
    DemoError,
    DemoPair,
    DemoSet,
    demos_hash,
    load_demos,
    load_inputs,
    shipped_demos,
    shipped_heldout,
)

STYLE_TASKS = ("sentiment", "formality", "politeness")
FV_TASKS = (
    "fv_country_capital",
    "fv_country_capital_upper",
    "fv_antonym",
    "fv_antonym_upper",
    "fv_lower_upper",
    "fv_successor",
)
MIN_STYLE_PAIRS = 48
MIN_HELDOUT_INPUTS = 48
MIN_FV_PAIRS = 40
MIN_WORDS, MAX_WORDS = 5, 20


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Shipped files


def test_shipped_demos_lists_every_task():
    shipped = shipped_demos()
    for name in STYLE_TASKS + FV_TASKS:
        assert name in shipped
        assert shipped[name].is_file()


@pytest.mark.parametrize("name", STYLE_TASKS + FV_TASKS)
def test_shipped_file_loads_cleanly(name, caplog):
    with caplog.at_level(logging.WARNING, logger="probes.demos"):
        demos = load_demos(shipped_demos()[name])

    assert demos.name == name
    assert demos.problems == []
    assert caplog.records == []  # no repeated pair and no pair with x == y
    minimum = MIN_FV_PAIRS if name.startswith("fv_") else MIN_STYLE_PAIRS
    assert len(demos.pairs) >= minimum


@pytest.mark.parametrize("name", STYLE_TASKS)
def test_style_sentences_have_5_to_20_words(name):
    demos = load_demos(shipped_demos()[name])
    sentences = [text for pair in demos.pairs for text in (pair.x, pair.y)]
    sentences += load_inputs(shipped_heldout(name))
    out_of_range = [sentence for sentence in sentences if not MIN_WORDS <= len(sentence.split()) <= MAX_WORDS]
    assert out_of_range == []


@pytest.mark.parametrize("name", STYLE_TASKS)
def test_style_pairs_change_text(name):
    for pair in load_demos(shipped_demos()[name]).pairs:
        assert pair.x != pair.y


@pytest.mark.parametrize("name", STYLE_TASKS)
def test_heldout_disjoint_from_pairs(name):
    inputs = load_inputs(shipped_heldout(name))
    xs = {pair.x.casefold() for pair in load_demos(shipped_demos()[name]).pairs}

    assert len(inputs) >= MIN_HELDOUT_INPUTS
    assert len(set(inputs)) == len(inputs)
    assert [text for text in inputs if text.casefold() in xs] == []


@pytest.mark.parametrize("name", FV_TASKS)
def test_fv_items_are_single_words(name):
    for pair in load_demos(shipped_demos()[name]).pairs:
        assert pair.x.split() == [pair.x]
        assert pair.y.split() == [pair.y]


@pytest.mark.parametrize(("base", "upper"), [
    ("fv_country_capital", "fv_country_capital_upper"),
    ("fv_antonym", "fv_antonym_upper"),
])
def test_analogy_grid_rows_match(base, upper):
    base_pairs = load_demos(shipped_demos()[base]).pairs
    upper_pairs = load_demos(shipped_demos()[upper]).pairs

    assert [pair.x for pair in upper_pairs] == [pair.x for pair in base_pairs]
    assert [pair.y for pair in upper_pairs] == [pair.y.upper() for pair in base_pairs]
    assert all(pair.y != pair.y.upper() for pair in base_pairs)


def test_lower_upper_words_outside_grid():
    pairs = load_demos(shipped_demos()["fv_lower_upper"]).pairs
    grid_words = set()
    for name in FV_TASKS:
        if name != "fv_lower_upper":
            grid_words |= {word.lower() for pair in load_demos(shipped_demos()[name]).pairs for word in pair}

    for pair in pairs:
        assert pair.x == pair.x.lower()
        assert pair.y == pair.x.upper()
    assert {pair.x for pair in pairs} & grid_words == set()


def test_successor_digits_increase_by_one():
    pairs = load_demos(shipped_demos()["fv_successor"]).pairs
    digit_pairs = [pair for pair in pairs if pair.x.isdigit()]

    assert len(digit_pairs) >= 10
    for pair in digit_pairs:
        assert int(pair.y) == int(pair.x) + 1
    assert DemoPair("three", "four") in pairs
    assert DemoPair("Sunday", "Monday") in pairs
    assert DemoPair("December", "January") in pairs


def test_shipped_heldout_unknown_task():
    with pytest.raises(DemoError, match="No held-out inputs for task 'nope'.*sentiment"):
        shipped_heldout("nope")


# Malformed rows


def test_jsonl_bad_rows_reported_by_line(tmp_path, caplog):
    path = write_lines(tmp_path / "mixed.jsonl", [
        '{"x": "good one", "y": "fine one"}',
        '{"x": "broken", "y": ',
        '["x", "y"]',
        '{"x": "no output here"}',
        '{"x": 3, "y": "number input"}',
        '{"x": "   ", "y": "blank input"}',
        '',
        '{"input": "other keys", "output": "also fine"}',
        '{"text": "unknown keys"}',
        '{"x": "good two", "y": "fine two", "note": "extra keys are ignored"}',
    ])

    with caplog.at_level(logging.WARNING, logger="probes.demos"):
        demos = load_demos(path)

    assert demos.pairs == [
        DemoPair("good one", "fine one"),
        DemoPair("other keys", "also fine"),
        DemoPair("good two", "fine two"),
    ]
    assert demos.problems[0].startswith("line 2: invalid JSON")
    assert demos.problems[1] == "line 3: expected a JSON object, found list"
    assert demos.problems[2] == "line 4: missing key 'y'"
    assert demos.problems[3] == "line 5: value of 'x' is int, expected a string"
    assert demos.problems[4] == "line 6: value of 'x' is empty"
    assert demos.problems[5].startswith("line 9: missing keys")
    assert len(demos.problems) == 6
    assert "skipped 6 malformed row(s)" in caplog.text


def test_jsonl_keeps_unicode_line_separator(tmp_path):
    # json.dumps(..., ensure_ascii=False) leaves U+2028 unescaped, so the loader must not split on it.
    path = tmp_path / "separator.jsonl"
    path.write_text(json.dumps({"x": "one\u2028two", "y": "three"}, ensure_ascii=False) + "\n", encoding="utf-8")

    demos = load_demos(path)

    assert demos.pairs == [DemoPair("one\u2028two", "three")]
    assert demos.problems == []


def test_csv_quoting_and_bad_rows(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(
        "x,y\n"
        '"Hello, world","She said ""hi"""\n'
        '"first line\nsecond line",wrapped\n'
        "only one column\n"
        "a,b,c\n"
        ",empty input\n"
        "\n"
        "last input,last output\n",
        encoding="utf-8",
    )

    demos = load_demos(path)

    assert demos.pairs == [
        DemoPair("Hello, world", 'She said "hi"'),
        DemoPair("first line\nsecond line", "wrapped"),
        DemoPair("last input", "last output"),
    ]
    assert demos.problems == [
        "line 5: expected 2 columns, found 1",
        "line 6: expected 2 columns, found 3",
        "line 7: value of 'x' is empty",
    ]


def test_csv_oversized_field_skipped(tmp_path):
    # The csv module raises csv.Error for a field over csv.field_size_limit() (131072 characters by default).
    oversized = "z" * (csv.field_size_limit() + 1)
    path = write_lines(tmp_path / "large.csv", ["x,y", "a,b", f"{oversized},c", "d,e"])

    demos = load_demos(path)

    assert demos.pairs == [DemoPair("a", "b"), DemoPair("d", "e")]
    assert len(demos.problems) == 1
    assert demos.problems[0].startswith("line 3: invalid CSV (field larger than field limit")


def test_csv_input_output_header(tmp_path):
    path = tmp_path / "named.csv"
    path.write_text("\ufeffOutput, Input ,note\nafter,before,a note\n", encoding="utf-8")

    demos = load_demos(path)

    assert demos.pairs == [DemoPair("before", "after")]
    assert demos.problems == []


def test_csv_header_without_columns(tmp_path):
    path = write_lines(tmp_path / "wrong.csv", ["source,target", "a,b"])
    with pytest.raises(DemoError, match="header source,target.*x,y or input,output"):
        load_demos(path)


def test_repeats_and_identical_pairs_warn(tmp_path, caplog):
    path = write_lines(tmp_path / "repeats.jsonl", [
        '{"x": "same", "y": "pair"}',
        '{"x": "echo", "y": "echo"}',
        '{"x": "same", "y": "pair"}',
    ])

    with caplog.at_level(logging.WARNING, logger="probes.demos"):
        demos = load_demos(path)

    assert len(demos.pairs) == 3
    assert "line 3 repeats line 1" in caplog.text
    assert "whose x equals y" in caplog.text
    assert "line 2" in caplog.text


# Errors


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.jsonl"
    with pytest.raises(DemoError, match="File not found") as raised:
        load_demos(path)
    assert str(path) in str(raised.value)


def test_missing_inputs_file_names_path(tmp_path):
    path = tmp_path / "absent.txt"
    with pytest.raises(DemoError, match="File not found") as raised:
        load_inputs(path)
    assert str(path) in str(raised.value)


def test_unknown_extension_lists_supported(tmp_path):
    path = write_lines(tmp_path / "pairs.tsv", ["x\ty", "a\tb"])
    with pytest.raises(DemoError, match=r"'\.tsv'.*\.jsonl, \.csv"):
        load_demos(path)


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.csv"])
def test_empty_file_raises(tmp_path, name):
    path = tmp_path / name
    path.write_text("", encoding="utf-8")
    with pytest.raises(DemoError, match="empty|no pairs") as raised:
        load_demos(path)
    assert str(path) in str(raised.value)


def test_header_only_csv_raises(tmp_path):
    path = write_lines(tmp_path / "header.csv", ["x,y"])
    with pytest.raises(DemoError, match="contains no pairs"):
        load_demos(path)


def test_no_valid_rows_lists_problems(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ['{"x": "a"}'] + ["not json"] * 7)
    with pytest.raises(DemoError, match="no valid pairs") as raised:
        load_demos(path)

    message = str(raised.value)
    assert str(path) in message
    assert "line 1: missing key 'y'" in message
    assert "and 3 more" in message


def test_invalid_utf8_raises(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"x": "caf\u00e9", "y": "bar"}\n'.encode("latin-1"))
    with pytest.raises(DemoError, match="not valid UTF-8"):
        load_demos(path)


def test_error_is_value_error():
    assert issubclass(DemoError, ValueError)


# Held-out inputs


def test_load_inputs_skips_blank_lines(tmp_path):
    path = write_lines(tmp_path / "inputs.txt", ["first input", "", "   ", "  second input  "])
    assert load_inputs(path) == ["first input", "second input"]


def test_load_inputs_blank_file_raises(tmp_path):
    path = write_lines(tmp_path / "blank.txt", ["", "  "])
    with pytest.raises(DemoError, match="contains no inputs"):
        load_inputs(path)


# Hash


def test_demos_hash_is_stable():
    pairs = [DemoPair("a", "b"), DemoPair("c", "d")]
    digest = demos_hash(pairs)

    assert digest == demos_hash([DemoPair("a", "b"), DemoPair("c", "d")])
    assert digest == demos_hash([("a", "b"), ("c", "d")])
    # sha256 of the documented canonical JSON '[{"x":"a","y":"b"},{"x":"c","y":"d"}]'.
    assert digest == "132a1b90c598bee20b996e0ce95f7f1bf1e12a4c232dec7bc22784214b85ebde"


def test_demos_hash_keeps_non_ascii():
    # ensure_ascii=False: the hashed JSON contains "café" as UTF-8, not "caf\u00e9".
    digest = demos_hash([DemoPair("caf\u00e9", "b")])
    assert digest == "b9768d35348d2f1252f0c2d0c777710dc596934f7f5886dcbb5bbb0cc756c4a4"


def test_demos_hash_is_order_sensitive():
    pairs = [DemoPair("a", "b"), DemoPair("c", "d")]
    assert demos_hash(pairs) != demos_hash(list(reversed(pairs)))


def test_demos_hash_separates_x_and_y():
    assert demos_hash([DemoPair("ab", "c")]) != demos_hash([DemoPair("a", "bc")])
    assert demos_hash([DemoPair("a", "b")]) != demos_hash([DemoPair("b", "a")])


def test_demo_pair_unpacks_as_tuple():
    x, y = DemoPair("in", "out")
    assert (x, y) == ("in", "out")


def test_demo_set_fields():
    demos = DemoSet(name="tiny", pairs=[DemoPair("a", "b")], problems=[])
    assert demos.name == "tiny"
    assert demos.pairs[0].y == "b"
