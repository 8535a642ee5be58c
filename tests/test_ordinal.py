"""Ordinal tasks as a tokenizer sees them."""

import pytest
from transformers import AutoTokenizer

from native_models import write_word_tokenizer
from probes.ordinal import TASKS, OrdinalTask, TaskError, get_tasks, tokenize_task

WORDS = [str(i) for i in range(10)] + ["Monday", "Tuesday"]


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    write_word_tokenizer(folder, WORDS)
    return AutoTokenizer.from_pretrained(folder)


def test_leading_space_form_is_preferred(word_tokenizer):
    task = tokenize_task(OrdinalTask("digits", tuple(str(i) for i in range(10))), word_tokenizer)
    assert task.forms[1] == " 1"
    assert len(task.items) == 10


def test_space_and_bare_digit_are_different_tokens(word_tokenizer):
    spaced = word_tokenizer.encode(" 1", add_special_tokens=False)
    bare = word_tokenizer.encode("1", add_special_tokens=False)
    assert len(spaced) == len(bare) == 1
    assert spaced != bare


def test_multi_token_word_is_dropped_with_reason(word_tokenizer):
    task = tokenize_task(OrdinalTask("mixed", ("Monday", "Tuesday", "Wednesdayzzq")), word_tokenizer)
    assert task.items == ("Monday", "Tuesday")
    assert task.dropped[0]["item"] == "Wednesdayzzq"
    assert "not a single token" in task.dropped[0]["reason"]


def test_gaps_break_successor_pairs(word_tokenizer):
    task = tokenize_task(OrdinalTask("gap", ("1", "2", "xqzv", "4")), word_tokenizer)
    # "2" -> "4" is not succession; only "1" -> "2" counts.
    assert task.successor_pairs() == [(0, 1)]


def test_no_bos_in_task_tokens(word_tokenizer):
    task = tokenize_task(TASKS["days"], word_tokenizer)
    assert word_tokenizer.bos_token_id not in task.token_ids
    assert all("<bos>" not in form for form in task.forms)


def test_unknown_task_names_the_known_ones():
    with pytest.raises(TaskError, match="known tasks: numbers"):
        get_tasks(["weekdays"])


def test_chance_is_one_over_items(word_tokenizer):
    task = tokenize_task(OrdinalTask("d", ("1", "2", "3", "4")), word_tokenizer)
    assert task.chance == 0.25
