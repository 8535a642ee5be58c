"""The multiplication data generator: formats, batches, the train/test split, column carries."""

import pytest
import torch

from arith_helpers import one_thread  # noqa: F401  (autouse fixture)
from probes.arithmetic import (
    FORMATS,
    PAD_ID,
    ArithmeticDataError,
    ProblemSpec,
    TrainSampler,
    columns,
    decode,
    encode,
    get_format,
    make_batch,
    make_test_set,
    parse_problem,
    render,
)

CASES = [(0, 0), (7, 42), (999, 999), (100, 10), (123, 456), (5, 0), (10, 999)]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_decodes_to_product(name):
    spec = ProblemSpec(3, 3, get_format(name))
    for a, b in CASES:
        assert parse_problem(render(a, b, spec), spec) == (a, b, a * b)


def test_reversed_product_is_units_first():
    assert render(7, 42, ProblemSpec(3, 3, get_format("reversed"))) == "7*42=492_"


def test_padding_fixes_operand_and_product_width():
    assert render(7, 42, ProblemSpec(3, 3, get_format("padded"))) == "007*042=000294_"
    assert render(7, 42, ProblemSpec(3, 3, get_format("padded-reversed"))) == "007*042=492000_"


def test_separated_digits_are_one_token_each():
    spec = ProblemSpec(3, 3, get_format("separated"))
    text = render(12, 34, spec)
    assert text == "1 2 * 3 4 = 4 0 8 _"
    assert encode(text) == encode("12*34=408_")
    assert decode(encode(text)) == "12*34=408_"


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_batch_places_rebuild_product(name):
    spec = ProblemSpec(3, 3, get_format(name))
    a = torch.tensor([a for a, _ in CASES])
    b = torch.tensor([b for _, b in CASES])
    batch = make_batch(a, b, spec)
    for row in range(len(batch)):
        digits = batch.tokens[row][batch.place[row] >= 0]
        places = batch.place[row][batch.place[row] >= 0]
        assert int((digits * 10**places).sum()) == int(a[row] * b[row])
        # The last target token is the end token.
        last = batch.target_mask[row].nonzero().max()
        assert int(batch.tokens[row, last]) == PAD_ID


def test_batch_operand_slots_rebuild_operands():
    spec = ProblemSpec(3, 3, get_format("plain"))
    batch = make_batch(torch.tensor([7, 305]), torch.tensor([42, 1]), spec)
    for row, (a, b) in enumerate([(7, 42), (305, 1)]):
        slots = batch.operand_slot[row]
        digits = batch.tokens[row]
        value_a = sum(int(digits[t]) * 10 ** int(slots[t]) for t in range(len(slots)) if 0 <= slots[t] < 3)
        value_b = sum(int(digits[t]) * 10 ** (int(slots[t]) - 3) for t in range(len(slots)) if slots[t] >= 3)
        assert (value_a, value_b) == (a, b)


def test_test_set_is_distinct_and_seeded():
    spec = ProblemSpec(3, 3)
    first = make_test_set(spec, 500, seed=3)
    again = make_test_set(spec, 500, seed=3)
    assert len(set(first.keys.tolist())) == 500
    assert torch.equal(first.keys, again.keys)
    assert torch.equal(first.a * 1000 + first.b, first.keys)


def test_train_sampler_never_draws_test_problem():
    # 2 x 2 digits: 10,000 problems, a quarter of them in the test set, so clashes are frequent.
    spec = ProblemSpec(2, 2, get_format("padded-reversed"), simple_share=0.45)
    test_set = make_test_set(spec, 2500)
    sampler = TrainSampler(spec, test_set, seed=0)
    test_keys = set(test_set.keys.tolist())
    drawn = set()
    for _ in range(50):
        a, b = sampler.sample_operands(256)
        drawn.update((a * 100 + b).tolist())
    assert not drawn & test_keys
    assert len(drawn) > 3000


def test_simple_share_makes_single_digit_multipliers():
    spec = ProblemSpec(3, 3, simple_share=1.0)
    sampler = TrainSampler(spec, make_test_set(spec, 10), seed=0)
    _, b = sampler.sample_operands(1000)
    nonzero_digits = ((b.reshape(-1, 1) // torch.tensor([1, 10, 100])) % 10 != 0).sum(dim=1)
    assert bool((nonzero_digits == 1).all())


def test_sampler_state_replays_batches():
    spec = ProblemSpec(3, 3)
    sampler = TrainSampler(spec, make_test_set(spec, 100), seed=5)
    state = sampler.state()
    first = sampler.sample_operands(64)
    sampler.load_state(state)
    again = sampler.sample_operands(64)
    assert torch.equal(first[0], again[0])
    assert torch.equal(first[1], again[1])


def test_columns_match_long_multiplication():
    spec = ProblemSpec(3, 3)
    a = torch.randint(0, 1000, (500,), generator=torch.Generator().manual_seed(0))
    b = torch.randint(0, 1000, (500,), generator=torch.Generator().manual_seed(1))
    cols = columns(a, b, spec)
    rebuilt = (cols.digit * 10 ** torch.arange(6)).sum(dim=1)
    assert torch.equal(rebuilt, a * b)
    assert int(cols.carry_out[:, -1].max()) == 0


def test_columns_of_999_squared():
    cols = columns(torch.tensor([999]), torch.tensor([999]), ProblemSpec(3, 3))
    assert cols.base_sum.tolist() == [[81, 162, 243, 162, 81, 0]]
    assert cols.carry_in.tolist() == [[0, 8, 17, 26, 18, 9]]


@pytest.mark.parametrize("kwargs, word", [
    ({"n_a": 0}, "n_a=0"),
    ({"n_b": 12}, "n_b=12"),
    ({"simple_share": 1.5}, "simple_share=1.5"),
])
def test_invalid_spec_names_value(kwargs, word):
    with pytest.raises(ArithmeticDataError, match=word):
        ProblemSpec(**kwargs)


def test_unknown_format_lists_names():
    with pytest.raises(ArithmeticDataError, match="padded-reversed"):
        get_format("backwards")


def test_operand_too_wide_is_rejected():
    with pytest.raises(ArithmeticDataError, match="a=1000"):
        render(1000, 1, ProblemSpec(3, 3))


def test_unknown_character_is_rejected():
    with pytest.raises(ArithmeticDataError, match="'x'"):
        encode("12x3")


def test_oversized_test_set_is_rejected():
    with pytest.raises(ArithmeticDataError, match="Test-set size 60"):
        make_test_set(ProblemSpec(1, 1), 60)
