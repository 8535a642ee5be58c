"""Dissection of multiplication models: attention maps, patching, carries, curves, CLI."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from analysis.arithmetic.attention import answer_operand_attention, explain_product, operand_labels
from analysis.arithmetic.carries import accuracy_by_carries, carry_probes
from analysis.arithmetic.curves import learning_curves, learning_order
from analysis.arithmetic.model import build_model
from analysis.arithmetic.patching import activation_patching, corrupt_operand, patched_logits, residual_hooks
from analysis.arithmetic.subtasks import cascade_length, subtask_masks
from analysis.arithmetic.metrics import token_logits
from analysis.arithmetic.training import held_out_batch, train
from analysis.cli import app
from arith_helpers import one_thread, tiny_config  # noqa: F401  (one_thread is an autouse fixture)
from probes.arithmetic import ArithmeticDataError, ProblemSpec, columns, get_format, make_batch

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2 x 2-digit run of 60 steps: enough for the log and the files, not for accuracy."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("arith") / "run"
    train(tiny_config(steps=60, eval_every=20, checkpoint_every=30), folder, progress=False)
    return folder


def test_self_patching_changes_nothing():
    config = tiny_config()
    model = build_model(config).eval()
    batch = make_batch(torch.tensor([12, 47, 90]), torch.tensor([34, 5, 99]), config.problem)
    clean = token_logits(model, batch.tokens)
    names = residual_hooks(model.cfg.n_layers) + ["blocks.0.attn.hook_z"]
    _, cache = model.run_with_cache(batch.tokens[:, :-1], names_filter=lambda name: name in names)
    for name in residual_hooks(model.cfg.n_layers):
        for position in range(batch.tokens.shape[1] - 1):
            patched = patched_logits(model, batch.tokens, name, cache[name], position=position)
            assert torch.allclose(patched, clean, atol=1e-6), (name, position)
    for head in range(model.cfg.n_heads):
        patched = patched_logits(model, batch.tokens, "blocks.0.attn.hook_z", cache["blocks.0.attn.hook_z"], head=head)
        assert torch.allclose(patched, clean, atol=1e-6), head


def test_patching_operand_at_layer_zero_recovers_all():
    config = tiny_config()
    model = build_model(config).eval()
    _, batch = held_out_batch(config, 60)
    result = activation_patching(model, config.problem, batch.a, batch.b, "a1", progress=False)
    position = result.positions.index("a1")
    for place in result.places:
        value = result.residual[0][position][place]
        if result.n_pairs[place]:
            assert value == pytest.approx(1.0, abs=1e-4), place
    # Positions before the corrupted digit carry nothing of it at the first layer.
    other = result.positions.index("b0")
    assert all(abs(v) < 1e-4 or math.isnan(v) for v in result.residual[0][other])


def test_patching_requires_fixed_layout():
    config = tiny_config("plain")
    model = build_model(config)
    with pytest.raises(ArithmeticDataError, match="padded"):
        activation_patching(model, config.problem, torch.tensor([12]), torch.tensor([34]), "a0", progress=False)


def test_corruption_changes_exactly_one_digit():
    spec = ProblemSpec(3, 3, get_format("padded-reversed"))
    a, b = torch.arange(100, 200), torch.arange(300, 400)
    new_a, new_b = corrupt_operand(a, b, spec, "a1", torch.Generator().manual_seed(0))
    assert torch.equal(new_b, b)
    assert bool(((new_a // 10) % 10 != (a // 10) % 10).all())
    assert torch.equal(new_a % 10, a % 10)
    assert torch.equal(new_a // 100, a // 100)


def test_unknown_slot_is_rejected():
    spec = ProblemSpec(2, 2, get_format("padded"))
    with pytest.raises(ArithmeticDataError, match="'c0'"):
        corrupt_operand(torch.tensor([1]), torch.tensor([2]), spec, "c0", torch.Generator())


def test_attention_map_rows_sum_to_one():
    config = tiny_config()
    model = build_model(config)
    _, batch = held_out_batch(config, 40)
    result = answer_operand_attention(model, config.problem, batch)
    assert result.slot_labels == [*operand_labels(config.problem), "other"]
    assert result.counts == [40] * config.problem.n_places
    for layer in result.weights:
        for head in layer:
            for row in head:
                assert sum(row) == pytest.approx(1.0, abs=1e-5)


def test_explain_product_reports_each_digit():
    config = tiny_config()
    model = build_model(config)
    explanation = explain_product(model, config.problem, 12, 34)
    assert explanation.product == 408
    assert [step.place for step in explanation.steps] == [0, 1, 2, 3, -1]
    assert [step.expected for step in explanation.steps] == ["8", "0", "4", "0", "_"]
    first = explanation.steps[0]
    assert len(first.attention) == 1  # layers
    assert len(first.attention[0]) == 2  # heads
    assert len(first.attention[0][0]) == 6  # keys: the query attends to "12*34=", itself included


def test_explain_product_rejects_wide_operand():
    config = tiny_config()
    model = build_model(config)
    with pytest.raises(ArithmeticDataError, match="a=123"):
        explain_product(model, config.problem, 123, 4)


def test_subtask_labels_on_known_columns():
    spec = ProblemSpec(2, 2)
    # 95 * 11: base sums [5, 14, 9, 0], carries in [0, 0, 1, 1]
    cols = columns(torch.tensor([95]), torch.tensor([11]), spec)
    masks = {name: mask[0].tolist() for name, mask in subtask_masks(cols).items()}
    assert masks["base"] == [True, False, False, False]
    assert masks["carry_out"] == [False, True, False, False]
    assert masks["use_carry"] == [False, False, True, True]
    assert masks["cascade"] == [False, False, True, False]
    assert masks["carry_on_zero"] == [False, False, False, True]
    assert cascade_length(cols).tolist() == [1]


def test_accuracy_by_carries_counts_every_problem():
    config = tiny_config()
    model = build_model(config)
    _, batch = held_out_batch(config, 80)
    result = accuracy_by_carries(model, config.problem, batch)
    assert sum(group.n_problems for group in result.by_carry_count) == 80
    assert sum(group.n_problems for group in result.by_cascade_length) == 80
    assert len(result.digit_by_carry_in) == config.problem.n_places


def test_carry_probe_grid_and_baseline():
    config = tiny_config()
    model = build_model(config)
    spec = config.problem
    a = torch.randint(0, 100, (400,), generator=torch.Generator().manual_seed(0))
    b = torch.randint(0, 100, (400,), generator=torch.Generator().manual_seed(1))
    train_batch, test_batch = make_batch(a[:300], b[:300], spec), make_batch(a[300:], b[300:], spec)
    result = carry_probes(model, spec, train_batch, test_batch, steps=50, progress=False)

    assert len(result.accuracy) == model.cfg.n_layers + 1
    assert all(math.isnan(row[0]) for row in result.accuracy)  # nothing carries into the units
    assert all(0.0 <= value <= 1.0 for row in result.accuracy for value in row[1:])
    carry_in = columns(a, b, spec).carry_in
    for place in range(1, spec.n_places):
        majority = int(carry_in[:300, place].mode().values)
        expected = float((carry_in[300:, place] == majority).float().mean())
        assert result.baseline[place] == pytest.approx(expected)


def test_learning_curves_and_order(trained_run):
    curves = learning_curves(trained_run)
    assert curves.steps == [20, 40, 60]
    assert set(curves.digit_series("digit_loss")) == {0, 1, 2, 3}
    assert set(curves.subtask_series()) == {"base", "carry_out", "use_carry", "cascade", "carry_on_zero"}
    order = learning_order(curves, accuracy_threshold=0.0, loss_threshold=100.0)
    assert set(order.digits.values()) == {20}
    assert sorted(order.digit_order()) == [0, 1, 2, 3]


def test_cli_eval_answers_problem(trained_run, tmp_path):
    out = tmp_path / "answer.json"
    result = runner.invoke(app, ["arith", "eval", "--run", str(trained_run), "--problem", "12*34", "--out", str(out)])
    assert result.exit_code == 0, result.output
    answer = json.loads(out.read_text())["problems"][0]
    assert answer["product"] == 408


def test_cli_dissect_writes_and_skips(trained_run, tmp_path):
    args = ["arith", "dissect", "--run", str(trained_run), "--out", str(tmp_path), "--problems", "40",
            "--parts", "attention,carries,patching", "--slots", "a0"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert {p.name for p in tmp_path.iterdir()} == {"attention.json", "carries.json", "patching_a0.json"}
    again = runner.invoke(app, args)
    assert again.output.count("skipped") == 3


def test_cli_rejects_unknown_part(trained_run):
    result = runner.invoke(app, ["arith", "dissect", "--run", str(trained_run), "--parts", "everything"])
    assert result.exit_code != 0
    assert "everything" in result.output


def test_cli_rejects_missing_run(tmp_path):
    result = runner.invoke(app, ["arith", "eval", "--run", str(tmp_path)])
    assert result.exit_code != 0
    assert "config.json" in result.output


def test_cli_train_resumes(tmp_path):
    args = ["arith", "train", "--preset", "tiny", "--steps", "40", "--out", str(tmp_path / "run")]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args[:5] + ["60"] + args[6:])
    assert again.exit_code == 0, again.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 60


def test_cli_train_rejects_bad_digits(tmp_path):
    result = runner.invoke(app, ["arith", "train", "--digits", "3by3", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "3by3" in result.output


def test_cli_train_fine_tunes_from_run(trained_run, tmp_path):
    args = ["arith", "train", "--init-from", str(trained_run), "--preset", "tiny", "--steps", "10",
            "--batch-size", "8", "--lr", "1e-4", "--min-lr-ratio", "0", "--out", str(tmp_path / "tuned")]
    result = runner.invoke(app, args)  # the fixture's run has the tiny preset's problem and model
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["train"]["init_from"] == str(trained_run)
    assert config["train"]["batch_size"] == 8
    assert config["train"]["min_lr_ratio"] == 0


def test_cli_train_rejects_missing_init_run(tmp_path):
    result = runner.invoke(app, ["arith", "train", "--preset", "tiny", "--init-from", str(tmp_path / "nowhere"),
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "nowhere" in result.output
    assert "config.json" in result.output


def test_cli_train_sets_simple_share(tmp_path):
    args = ["arith", "train", "--preset", "tiny", "--steps", "10", "--simple-share", "0.45",
            "--out", str(tmp_path / "run")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["problem"]["simple_share"] == 0.45


def test_cli_force_keeps_foreign_folder(tmp_path):
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    (folder / "pytorch_model.bin").write_text("weights")
    result = runner.invoke(app, ["arith", "train", "--preset", "tiny", "--steps", "2", "--out", str(folder), "--force"])
    assert result.exit_code != 0
    assert "not a run folder" in result.output
    assert (folder / "pytorch_model.bin").read_text() == "weights"


def test_cli_rejects_zero_digits(tmp_path):
    result = runner.invoke(app, ["arith", "train", "--preset", "tiny", "--digits", "0x3", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert not (tmp_path / "r" / "config.json").exists()


def test_cli_rejects_non_ascii_digits(trained_run):
    result = runner.invoke(app, ["arith", "eval", "--run", str(trained_run), "--problem", "²*3"])
    assert result.exit_code == 2
    assert "digits only" in result.output


def test_cli_init_from_takes_source_config(trained_run, tmp_path):
    # No --preset: the fine-tuned run keeps the source's problem and model, whatever preset made it.
    result = runner.invoke(app, ["arith", "train", "--init-from", str(trained_run), "--steps", "5",
                                 "--out", str(tmp_path / "tuned")])
    assert result.exit_code == 0, result.output
    tuned = json.loads((tmp_path / "tuned" / "config.json").read_text())
    source = json.loads((trained_run / "config.json").read_text())
    assert tuned["problem"] == source["problem"]
    assert tuned["model"] == source["model"]
    assert tuned["train"]["steps"] == 5


def test_cli_dissect_skips_patching_unpadded(tmp_path):
    run = tmp_path / "plain"
    train(tiny_config("plain", steps=10), run, progress=False)
    result = runner.invoke(app, ["arith", "dissect", "--run", str(run), "--problems", "20", "--parts", "attention"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["arith", "dissect", "--run", str(run), "--problems", "20"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps lines at the terminal width
    assert "Skipping patching" in output
    assert "--force recomputes" in output  # attention.json was there already
    assert not list((run / "dissect").glob("patching_*.json"))


def test_cli_compare_force_starts_over(tmp_path):
    first = ["arith", "compare", "--preset", "tiny", "--steps", "10", "--formats", "plain", "--out", str(tmp_path)]
    assert runner.invoke(app, first).exit_code == 0
    other = ["arith", "compare", "--preset", "compare-3x3", "--steps", "2", "--formats", "plain", "--out", str(tmp_path)]
    refused = runner.invoke(app, other)
    assert refused.exit_code == 1
    assert "another configuration" in refused.output
    again = runner.invoke(app, other + ["--force"])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["preset"] == "compare-3x3"
