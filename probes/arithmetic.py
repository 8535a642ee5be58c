"""Integer multiplication problems as token sequences, in the formats of two papers.

Sources: "Dissecting Multiplication in Transformers: Insights into LLMs" (Qiu, Li,
Su, Zhang, Chen, 2024) trains on n x n-digit products with the answer reversed and
a share of "simple" problems; "Positional Description Matters for Transformers
Arithmetic" (Shen et al., 2023) pads operands and product to fixed widths so that
every digit keeps its position.

A sequence is ``a * b = answer <pad>``, one token per character. The vocabulary
is the ten digits, ``*``, ``=`` and a padding token; the first padding token after
the answer ends it (the model has to predict it, which matters when the product
width varies), and padding fills the rest of the fixed-length row.

Formats (``ArithFormat``):

* ``reverse_product``: the product is written least significant digit first.
* ``pad_operands``: operands are zero-padded to their full width (``007*042=``).
* ``pad_product``: the product is zero-padded to ``n_a + n_b`` digits.
* ``separate_digits``: the text form puts a space between tokens (``1 2 * 3 4 =``),
  the form a BPE tokenizer needs to see one digit per token. Our vocabulary has
  one token per character already, so the token ids are the same as without it.

Operands are drawn uniformly from ``[0, 10**n)``. A fixed test set is drawn with
its own seed; ``TrainSampler`` redraws every training problem that is in it, so
the two never overlap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor

DIGITS = "0123456789"
TIMES = "*"
EQUALS = "="
PAD = "_"  # the padding token's text form; never part of a number
VOCAB: tuple[str, ...] = (*DIGITS, TIMES, EQUALS, PAD)
TOKEN_ID = {token: index for index, token in enumerate(VOCAB)}
TIMES_ID = TOKEN_ID[TIMES]
EQUALS_ID = TOKEN_ID[EQUALS]
PAD_ID = TOKEN_ID[PAD]
MAX_DIGITS = 9  # a * 10**n_b + b must fit in int64 for the test-set keys


class ArithmeticDataError(ValueError):
    """An invalid problem specification, format name or token sequence."""


@dataclass(frozen=True)
class ArithFormat:
    """How a problem is written out; see the module docstring for each flag."""

    reverse_product: bool = False
    pad_operands: bool = False
    pad_product: bool = False
    separate_digits: bool = False

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)


FORMATS: dict[str, ArithFormat] = {
    "plain": ArithFormat(),
    "reversed": ArithFormat(reverse_product=True),
    "padded": ArithFormat(pad_operands=True, pad_product=True),
    "padded-reversed": ArithFormat(reverse_product=True, pad_operands=True, pad_product=True),
    "separated": ArithFormat(separate_digits=True),
    "separated-padded-reversed": ArithFormat(True, True, True, True),
}


def get_format(name: str) -> ArithFormat:
    """Return the named format, raising with the list of names if it is unknown."""
    if name not in FORMATS:
        raise ArithmeticDataError(f"Unknown arithmetic format {name!r}; use one of {', '.join(FORMATS)}.")
    return FORMATS[name]


def format_name(fmt: ArithFormat) -> str:
    """Return the name under which ``fmt`` is registered, or a description of its flags."""
    for name, known in FORMATS.items():
        if known == fmt:
            return name
    return ",".join(key for key, value in fmt.to_dict().items() if value) or "plain"


@dataclass(frozen=True)
class ProblemSpec:
    """An ``n_a`` x ``n_b``-digit multiplication task in one format.

    ``simple_share`` is the fraction of training problems whose multiplier ``b``
    is a single nonzero digit times a power of ten (45% is the share reported for
    the released code of Qiu et al. 2024). The test set never contains simple
    problems, so it measures the full task.
    """

    n_a: int = 3
    n_b: int = 3
    format: ArithFormat = ArithFormat()
    simple_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_a", "n_b"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= MAX_DIGITS:
                raise ArithmeticDataError(f"{name}={value!r} is invalid; use an integer from 1 to {MAX_DIGITS}.")
        if not 0.0 <= self.simple_share <= 1.0:
            raise ArithmeticDataError(f"simple_share={self.simple_share!r} is invalid; use a fraction in [0, 1].")

    @property
    def n_places(self) -> int:
        """Maximum number of product digits."""
        return self.n_a + self.n_b

    @property
    def seq_len(self) -> int:
        """Row length: both operands, ``*``, ``=``, the widest product and its end token."""
        return self.n_a + self.n_b + 2 + self.n_places + 1

    @property
    def n_pairs(self) -> int:
        return 10 ** (self.n_a + self.n_b)

    def to_dict(self) -> dict[str, Any]:
        return {"n_a": self.n_a, "n_b": self.n_b, "format": self.format.to_dict(),
                "format_name": format_name(self.format), "simple_share": self.simple_share}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProblemSpec":
        return cls(int(data["n_a"]), int(data["n_b"]), ArithFormat(**data["format"]),
                   float(data.get("simple_share", 0.0)))

    def with_format(self, fmt: ArithFormat) -> "ProblemSpec":
        return replace(self, format=fmt)


# -- text form ---------------------------------------------------------------


def _check_operands(a: int, b: int, spec: ProblemSpec) -> None:
    for name, value, width in (("a", a, spec.n_a), ("b", b, spec.n_b)):
        if not 0 <= value < 10**width:
            raise ArithmeticDataError(
                f"Operand {name}={value} does not fit a {spec.n_a}x{spec.n_b}-digit problem; "
                f"use 0 <= {name} < {10**width}."
            )


def answer_text(product: int, spec: ProblemSpec) -> str:
    """Return the product's digits as the format writes them (without separators)."""
    digits = str(product).zfill(spec.n_places) if spec.format.pad_product else str(product)
    return digits[::-1] if spec.format.reverse_product else digits


def render(a: int, b: int, spec: ProblemSpec) -> str:
    """Return the text form of ``a * b = product`` followed by the end token."""
    _check_operands(a, b, spec)
    fmt = spec.format
    left = str(a).zfill(spec.n_a) if fmt.pad_operands else str(a)
    right = str(b).zfill(spec.n_b) if fmt.pad_operands else str(b)
    text = f"{left}{TIMES}{right}{EQUALS}{answer_text(a * b, spec)}{PAD}"
    return " ".join(text) if fmt.separate_digits else text


def encode(text: str) -> list[int]:
    """Return token ids of a text form; spaces are digit separators and are dropped."""
    ids = []
    for char in text:
        if char == " ":
            continue
        if char not in TOKEN_ID:
            raise ArithmeticDataError(
                f"Character {char!r} in {text!r} is not in the vocabulary; use digits, "
                f"{TIMES!r}, {EQUALS!r}, {PAD!r} and spaces."
            )
        ids.append(TOKEN_ID[char])
    return ids


def decode(ids: list[int] | Tensor) -> str:
    """Return the text of token ids (without separators)."""
    values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    for value in values:
        if not 0 <= value < len(VOCAB):
            raise ArithmeticDataError(f"Token id {value} is out of range; ids run from 0 to {len(VOCAB) - 1}.")
    return "".join(VOCAB[value] for value in values)


def parse_problem(text: str, spec: ProblemSpec) -> tuple[int, int, int]:
    """Read ``(a, b, product)`` back from a text form, undoing reversal and padding."""
    compact = decode(encode(text))
    if TIMES not in compact or EQUALS not in compact:
        raise ArithmeticDataError(f"{text!r} is not a problem; expected 'a{TIMES}b{EQUALS}answer'.")
    left, rest = compact.split(TIMES, 1)
    right, answer = rest.split(EQUALS, 1)
    answer = answer.split(PAD, 1)[0]
    if not (left.isdigit() and right.isdigit() and answer.isdigit()):
        raise ArithmeticDataError(f"{text!r} has an operand or answer without digits.")
    product_digits = answer[::-1] if spec.format.reverse_product else answer
    return int(left), int(right), int(product_digits)


# -- batches -----------------------------------------------------------------


@dataclass
class Batch:
    """A batch of problems as fixed-length rows.

    ``tokens`` [batch, seq_len] holds the whole sequence. ``target_mask`` marks the
    positions whose token the model is trained to predict (the answer digits and
    the end token). ``place`` [batch, seq_len] is the power of ten of each answer
    digit (-1 elsewhere), and ``operand_slot`` is ``i`` for digit ``10**i`` of
    ``a``, ``n_a + j`` for digit ``10**j`` of ``b`` and -1 elsewhere.
    """

    a: Tensor
    b: Tensor
    tokens: Tensor
    target_mask: Tensor
    answer_start: Tensor
    place: Tensor
    operand_slot: Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def subset(self, index: Tensor | slice) -> "Batch":
        return Batch(*(getattr(self, name)[index] for name in
                       ("a", "b", "tokens", "target_mask", "answer_start", "place", "operand_slot")))


def make_batch(a: Tensor | list[int], b: Tensor | list[int], spec: ProblemSpec) -> Batch:
    """Encode operand pairs as a ``Batch`` in ``spec``'s format."""
    a = torch.as_tensor(a, dtype=torch.long).reshape(-1)
    b = torch.as_tensor(b, dtype=torch.long).reshape(-1)
    if a.shape != b.shape:
        raise ArithmeticDataError(f"Got {a.numel()} values of a and {b.numel()} of b; pass one b per a.")

    size, length = a.numel(), spec.seq_len
    tokens = torch.full((size, length), PAD_ID, dtype=torch.long)
    target_mask = torch.zeros((size, length), dtype=torch.bool)
    place = torch.full((size, length), -1, dtype=torch.long)
    operand_slot = torch.full((size, length), -1, dtype=torch.long)
    answer_start = torch.zeros(size, dtype=torch.long)

    for row, (left, right) in enumerate(zip(a.tolist(), b.tolist())):
        ids = encode(render(left, right, spec))
        tokens[row, : len(ids)] = torch.tensor(ids)

        times_at = ids.index(TIMES_ID)
        equals_at = ids.index(EQUALS_ID)
        width_a, width_b = times_at, equals_at - times_at - 1
        operand_slot[row, :times_at] = torch.arange(width_a - 1, -1, -1)
        operand_slot[row, times_at + 1 : equals_at] = spec.n_a + torch.arange(width_b - 1, -1, -1)

        start = equals_at + 1
        n_answer = len(ids) - start - 1  # the last id is the end token
        places = torch.arange(n_answer) if spec.format.reverse_product else torch.arange(n_answer - 1, -1, -1)
        place[row, start : start + n_answer] = places
        target_mask[row, start : len(ids)] = True
        answer_start[row] = start

    return Batch(a, b, tokens, target_mask, answer_start, place, operand_slot)


def operand_digits(values: Tensor, width: int) -> Tensor:
    """Return digits [batch, width], least significant first."""
    powers = 10 ** torch.arange(width, dtype=torch.long)
    return (values.reshape(-1, 1) // powers) % 10


def _keys(a: Tensor, b: Tensor, spec: ProblemSpec) -> Tensor:
    return a * 10**spec.n_b + b


def _draw(spec: ProblemSpec, size: int, generator: torch.Generator, simple_share: float) -> tuple[Tensor, Tensor]:
    a = torch.randint(0, 10**spec.n_a, (size,), generator=generator)
    b = torch.randint(0, 10**spec.n_b, (size,), generator=generator)
    if simple_share > 0:
        simple = torch.rand(size, generator=generator) < simple_share
        digit = torch.randint(1, 10, (size,), generator=generator)
        shift = torch.randint(0, spec.n_b, (size,), generator=generator)
        b = torch.where(simple, digit * 10**shift, b)
    return a, b


@dataclass(frozen=True)
class TestSet:
    """A fixed set of distinct problems that training never draws."""

    __test__ = False  # not a pytest test class

    a: Tensor
    b: Tensor
    keys: Tensor  # a * 10**n_b + b, in draw order (so any prefix is a uniform sample)

    def __len__(self) -> int:
        return int(self.a.numel())


def make_test_set(spec: ProblemSpec, size: int, seed: int = 1234) -> TestSet:
    """Draw ``size`` distinct uniform problems (no simple share) with their own seed."""
    if size < 1 or size > spec.n_pairs // 2:
        raise ArithmeticDataError(
            f"Test-set size {size} is invalid for {spec.n_a}x{spec.n_b} digits ({spec.n_pairs} problems); "
            f"use 1 to {spec.n_pairs // 2} so that training keeps at least half of the problems."
        )
    generator = torch.Generator().manual_seed(seed)
    chosen: dict[int, None] = {}  # insertion-ordered, so the set depends only on the seed
    while len(chosen) < size:
        a, b = _draw(spec, size, generator, simple_share=0.0)
        for key in _keys(a, b, spec).tolist():
            if len(chosen) < size:
                chosen.setdefault(key)
    keys = torch.tensor(list(chosen), dtype=torch.long)
    a, b = keys // 10**spec.n_b, keys % 10**spec.n_b
    return TestSet(a, b, keys)


class TrainSampler:
    """Fresh random training problems, with every test-set problem redrawn.

    The generator state is part of a checkpoint (``state``/``load_state``), so a
    resumed run draws the same batches as an uninterrupted one.
    """

    def __init__(self, spec: ProblemSpec, test_set: TestSet, seed: int) -> None:
        self.spec = spec
        self.test_keys = test_set.keys
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, size: int) -> Batch:
        a, b = self.sample_operands(size)
        return make_batch(a, b, self.spec)

    def sample_operands(self, size: int) -> tuple[Tensor, Tensor]:
        a, b = _draw(self.spec, size, self.generator, self.spec.simple_share)
        for _ in range(1000):
            clash = torch.isin(_keys(a, b, self.spec), self.test_keys)
            if not clash.any():
                return a, b
            new_a, new_b = _draw(self.spec, int(clash.sum()), self.generator, self.spec.simple_share)
            a[clash], b[clash] = new_a, new_b
        raise ArithmeticDataError("Could not draw training problems outside the test set; make the test set smaller.")

    def state(self) -> Tensor:
        return self.generator.get_state()

    def load_state(self, state: Tensor) -> None:
        self.generator.set_state(state)


# -- column arithmetic ---------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """Long multiplication column by column, each tensor [batch, n_a + n_b], place 0 first.

    ``base_sum[k]`` is the sum of the digit products ``a_i * b_j`` with ``i + j = k``;
    ``carry_in[k]`` is what column ``k - 1`` passes on; ``digit[k] = (base_sum +
    carry_in) % 10`` and ``carry_out[k] = (base_sum + carry_in) // 10``.
    """

    base_sum: Tensor
    carry_in: Tensor
    carry_out: Tensor
    digit: Tensor


def columns(a: Tensor, b: Tensor, spec: ProblemSpec) -> Columns:
    """Return the column sums and carries of ``a * b``."""
    a = torch.as_tensor(a, dtype=torch.long).reshape(-1)
    b = torch.as_tensor(b, dtype=torch.long).reshape(-1)
    digits_a = operand_digits(a, spec.n_a)
    digits_b = operand_digits(b, spec.n_b)
    products = digits_a[:, :, None] * digits_b[:, None, :]  # [batch, n_a, n_b]
    place_of = (torch.arange(spec.n_a)[:, None] + torch.arange(spec.n_b)[None, :]).reshape(-1)
    base_sum = torch.zeros(a.numel(), spec.n_places, dtype=torch.long)
    base_sum.index_add_(1, place_of, products.reshape(a.numel(), -1))

    carry_in = torch.zeros_like(base_sum)
    carry_out = torch.zeros_like(base_sum)
    for k in range(spec.n_places):
        total = base_sum[:, k] + (carry_out[:, k - 1] if k else 0)
        carry_in[:, k] = carry_out[:, k - 1] if k else 0
        carry_out[:, k] = total // 10
    digit = (base_sum + carry_in) % 10
    return Columns(base_sum, carry_in, carry_out, digit)
