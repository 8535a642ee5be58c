"""Ordinal task sets for successor-head search.

The tasks follow "Successor Heads: Recurring, Interpretable Attention Heads In
The Wild" (Gould, Ong, Ogden, Conmy, ICLR 2024): numbers, number words,
ordinal words, days, day prefixes, months, month prefixes and letters.

A successor head maps one item's token to the next item's token, so every item
must be a single token in the model's tokenizer. ``tokenize_task`` tries each
item with a leading space first (the form a word takes inside running text) and
then without, keeps the first form that is one token, and records every item it
drops with the reason. A tokenizer that splits numbers into digits (Gemma,
Llama) keeps only the single digits of the numbers task.
"""

from __future__ import annotations

import calendar
import string
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class OrdinalTask:
    """A sequence of items in their natural order; ``cyclic`` tasks wrap (Sunday -> Monday)."""

    name: str
    items: tuple[str, ...]
    cyclic: bool = False


_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty"
).split()
_ORDINAL_WORDS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()

TASKS: dict[str, OrdinalTask] = {
    task.name: task
    for task in (
        OrdinalTask("numbers", tuple(str(i) for i in range(0, 101))),
        OrdinalTask("number_words", tuple(_NUMBER_WORDS)),
        OrdinalTask("ordinal_words", tuple(_ORDINAL_WORDS)),
        OrdinalTask("days", tuple(calendar.day_name), cyclic=True),
        OrdinalTask("day_prefixes", tuple(calendar.day_abbr), cyclic=True),
        OrdinalTask("months", tuple(calendar.month_name[1:]), cyclic=True),
        OrdinalTask("month_prefixes", tuple(calendar.month_abbr[1:]), cyclic=True),
        OrdinalTask("letters", tuple(string.ascii_uppercase)),
    )
}


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class TokenizedTask:
    """An ordinal task as tokenized by one model's tokenizer."""

    name: str
    items: tuple[str, ...]  # the kept items, in task order
    forms: tuple[str, ...]  # the exact string tokenized for each kept item (" Monday" or "Monday")
    token_ids: tuple[int, ...]
    positions: tuple[int, ...]  # each kept item's index in the full task
    cyclic: bool
    task_length: int  # number of items in the full task, kept or not
    dropped: tuple[dict[str, str], ...] = field(default_factory=tuple)

    def successor_pairs(self) -> list[tuple[int, int]]:
        """Return (i, j) index pairs into the kept items where item j follows item i in the task."""
        index_of = {position: i for i, position in enumerate(self.positions)}
        pairs = []
        for i, position in enumerate(self.positions):
            following = position + 1
            if following == self.task_length and self.cyclic:
                following = 0
            if following in index_of:
                pairs.append((i, index_of[following]))
        return pairs

    @property
    def chance(self) -> float:
        """Score of a head that picks a random task token: 1 / number of kept items."""
        return 1.0 / len(self.items) if self.items else 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizedTask":
        """Rebuild a task from its ``to_dict()`` form (as stored in result files)."""
        return cls(
            name=data["name"],
            items=tuple(data["items"]),
            forms=tuple(data["forms"]),
            token_ids=tuple(data["token_ids"]),
            positions=tuple(data["positions"]),
            cyclic=bool(data["cyclic"]),
            task_length=int(data["task_length"]),
            dropped=tuple(data.get("dropped", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chance"] = self.chance
        data["n_pairs"] = len(self.successor_pairs())
        return data


class TaskError(ValueError):
    """An ordinal task cannot be used as given."""


def get_tasks(names: list[str] | None = None) -> list[OrdinalTask]:
    """Return the named tasks (all when ``names`` is empty), raising on unknown names."""
    if not names:
        return list(TASKS.values())
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise TaskError(f"Unknown task(s) {', '.join(unknown)}; known tasks: {', '.join(TASKS)}.")
    return [TASKS[name] for name in names]


def tokenize_task(task: OrdinalTask, tokenizer: Tokenizer) -> TokenizedTask:
    """Keep the items of ``task`` that are one token, trying ``" item"`` before ``"item"``."""
    items, forms, token_ids, positions, dropped = [], [], [], [], []
    seen: dict[int, str] = {}

    for position, item in enumerate(task.items):
        chosen = None
        attempts = []
        for form in (" " + item, item):
            ids = tokenizer.encode(form, add_special_tokens=False)
            attempts.append(f"{form!r} -> {len(ids)} tokens")
            if len(ids) == 1:
                chosen = (form, ids[0])
                break

        if chosen is None:
            dropped.append({"item": item, "reason": "not a single token: " + "; ".join(attempts)})
            continue
        form, token_id = chosen
        if token_id in seen:
            dropped.append({"item": item, "reason": f"same token as {seen[token_id]!r}"})
            continue

        seen[token_id] = item
        items.append(item)
        forms.append(form)
        token_ids.append(token_id)
        positions.append(position)

    return TokenizedTask(
        name=task.name,
        items=tuple(items),
        forms=tuple(forms),
        token_ids=tuple(token_ids),
        positions=tuple(positions),
        cyclic=task.cyclic,
        task_length=len(task.items),
        dropped=tuple(dropped),
    )


def task_from_token_ids(name: str, token_ids: list[int], cyclic: bool = False) -> TokenizedTask:
    """Build a task straight from token ids, for models without a tokenizer (native models)."""
    if len(set(token_ids)) != len(token_ids):
        raise TaskError(f"Task {name!r} repeats a token id; each item needs its own token.")
    labels = tuple(str(token_id) for token_id in token_ids)
    return TokenizedTask(
        name=name,
        items=labels,
        forms=labels,
        token_ids=tuple(token_ids),
        positions=tuple(range(len(token_ids))),
        cyclic=cyclic,
        task_length=len(token_ids),
    )
