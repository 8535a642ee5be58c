"""Training, evaluation and checkpoints of multiplication models on tiny configurations."""

import json
import os
import signal
from dataclasses import replace

import pytest
import torch

from analysis.arithmetic.checkpoint import load_run
from analysis.arithmetic.config import ConfigError, ModelConfig, RunConfig, TrainConfig, get_preset
from analysis.arithmetic.metrics import answer_loss, evaluate, greedy_answers, token_logits
from analysis.arithmetic.model import build_model
from analysis.arithmetic.training import learning_rate, make_optimizer, train, train_step
from arith_helpers import one_thread, tiny_config  # noqa: F401  (one_thread is an autouse fixture)
from probes.arithmetic import ProblemSpec, TrainSampler, get_format, make_batch, make_test_set


def test_tiny_model_overfits_fixed_set():
    torch.manual_seed(0)
    config = RunConfig(ProblemSpec(2, 2, get_format("padded-reversed")),
                       ModelConfig(n_layers=2, n_heads=4, d_model=64, d_mlp=256), TrainConfig(seed=0), "test")
    spec = config.problem
    a = torch.randint(0, 100, (32,))
    b = torch.randint(0, 100, (32,))
    batch = make_batch(a, b, spec)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)

    for _ in range(200):
        train_step(model, optimizer, batch, grad_clip=1.0)

    result = evaluate(model, batch, spec)
    assert result.exact_match_greedy == 1.0
    assert result.exact_match_teacher_forced == 1.0


def test_greedy_leaves_prompt_untouched():
    config = tiny_config()
    model = build_model(config)
    batch = make_batch(torch.tensor([12, 99]), torch.tensor([34, 1]), config.problem)
    generated = greedy_answers(model, batch)
    prompt = ~batch.target_mask
    assert torch.equal(generated[prompt], batch.tokens[prompt])


def test_greedy_handles_plain_format_offsets():
    config = replace(tiny_config(), problem=ProblemSpec(2, 2, get_format("plain")))
    model = build_model(config)
    batch = make_batch(torch.tensor([1, 99]), torch.tensor([2, 99]), config.problem)
    generated = greedy_answers(model, batch)
    assert generated.shape == batch.tokens.shape
    assert torch.equal(generated[:, :3], batch.tokens[:, :3])


def test_resume_gives_identical_next_losses(tmp_path):
    config = tiny_config(steps=20, checkpoint_every=10)
    straight = train(config, tmp_path / "straight", progress=False)

    def interrupt(row):
        if row["step"] == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=False, on_eval=interrupt)
    resumed = train(config, tmp_path / "resumed", progress=False)

    weights_a = load_run(straight.run_dir)[1].state_dict()
    weights_b = load_run(resumed.run_dir)[1].state_dict()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    log_a = [json.loads(line) for line in (straight.run_dir / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log_b] == [10, 20]
    assert log_a[1]["train_loss"] == log_b[1]["train_loss"]
    assert log_a[1]["loss"] == log_b[1]["loss"]


def test_next_step_loss_after_checkpoint_load(tmp_path):
    """Loading a checkpoint reproduces the weights, optimiser and data stream exactly."""
    from analysis.arithmetic.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    config = tiny_config()
    spec = config.problem
    test_set = make_test_set(spec, config.train.test_size, config.train.test_seed)
    model = build_model(config)
    optimizer = make_optimizer(model, config)
    sampler = TrainSampler(spec, test_set, seed=1)
    for _ in range(5):
        train_step(model, optimizer, sampler.sample(16), grad_clip=1.0)
    save_checkpoint(tmp_path, model, optimizer, sampler.state(), step=5, elapsed_s=0.0)
    expected = [train_step(model, optimizer, sampler.sample(16), grad_clip=1.0) for _ in range(3)]

    weights, state = load_checkpoint(latest_checkpoint(tmp_path))
    model2 = build_model(replace(config, train=replace(config.train, seed=99)))  # other init on purpose
    model2.load_state_dict(weights)
    optimizer2 = make_optimizer(model2, config)
    optimizer2.load_state_dict(state.optimizer)
    sampler2 = TrainSampler(spec, test_set, seed=123)
    sampler2.load_state(state.sampler_state)
    got = [train_step(model2, optimizer2, sampler2.sample(16), grad_clip=1.0) for _ in range(3)]
    assert state.step == 5
    assert got == expected


def test_same_seed_same_weights():
    config = tiny_config()
    first = build_model(config).state_dict()
    second = build_model(config).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_train_writes_run_folder(tmp_path):
    result = train(tiny_config(), tmp_path, progress=False)
    names = {path.name for path in tmp_path.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoint", "model.safetensors", "eval.json"} <= names
    assert not [name for name in names if name.endswith(".tmp")]
    final = json.loads((tmp_path / "eval.json").read_text())
    assert final["n_problems"] == 100
    assert final["exact_match_greedy"] == result.final.exact_match_greedy
    assert final["hardware"]["device"] == "cpu"
    assert final["hardware"]["torch_threads"] == 1
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"digit_accuracy_greedy_0", "subtask_loss_cascade", "exact_match_teacher_forced"} <= set(row)


def test_resume_rejects_other_config(tmp_path):
    train(tiny_config(), tmp_path, progress=False)
    other = replace(tiny_config(), model=ModelConfig(n_layers=2, n_heads=2, d_model=32, d_mlp=64))
    with pytest.raises(ConfigError, match="model.n_layers"):
        train(other, tmp_path, progress=False)


def test_answer_loss_covers_answer_tokens_only():
    config = tiny_config()
    model = build_model(config)
    batch = make_batch(torch.tensor([12, 34]), torch.tensor([56, 78]), config.problem)
    logits = token_logits(model, batch.tokens)
    answer_only = torch.nn.functional.cross_entropy(logits[batch.target_mask], batch.tokens[batch.target_mask])
    assert answer_loss(model, batch).item() == pytest.approx(answer_only.item())
    assert int(batch.target_mask.sum()) == 2 * 5  # four product digits and the end token per row


def test_learning_rate_warms_up_then_decays():
    config = tiny_config(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert learning_rate(config, 0) == pytest.approx(0.1)
    assert learning_rate(config, 9) == pytest.approx(1.0)
    assert learning_rate(config, 99) == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize("kwargs, word", [
    ({"n_heads": 3}, "n_heads=3"),
    ({"act_fn": "tanh"}, "act_fn='tanh'"),
    ({"n_layers": 0}, "n_layers=0"),
])
def test_invalid_model_config_names_value(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        ModelConfig(**{"n_layers": 1, "n_heads": 2, "d_model": 32, "d_mlp": 64, **kwargs})


def test_unknown_preset_lists_names():
    with pytest.raises(ConfigError, match="cpu-3x3"):
        get_preset("huge")


def test_config_round_trips_through_json():
    config = get_preset("qiu2024")
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_init_from_starts_at_source_weights(tmp_path):
    # Fine-tuning with zero learning-rate steps must leave the source's weights as they were.
    source = train(tiny_config(), tmp_path / "source", progress=False)
    _, source_model = load_run(source.run_dir)

    config = tiny_config(steps=1, warmup_steps=0, lr=1e-12, init_from=str(source.run_dir))
    tuned = train(config, tmp_path / "tuned", progress=False)
    _, tuned_model = load_run(tuned.run_dir)
    for (name, before), after in zip(source_model.state_dict().items(), tuned_model.state_dict().values()):
        assert torch.allclose(before, after, atol=1e-6), name
    assert tuned.final.exact_match_greedy == pytest.approx(source.final.exact_match_greedy)
    assert json.loads((tuned.run_dir / "config.json").read_text())["train"]["init_from"] == str(source.run_dir)


def test_init_from_rejects_other_model_or_missing_run(tmp_path):
    source = train(tiny_config(), tmp_path / "source", progress=False)
    wider = replace(tiny_config(init_from=str(source.run_dir)), model=ModelConfig(n_layers=1, n_heads=2,
                                                                                   d_model=64, d_mlp=64))
    with pytest.raises(ConfigError, match=r"model.d_model \(32 there, 64 here\)"):
        train(wider, tmp_path / "wider", progress=False)
    assert not (tmp_path / "wider" / "config.json").exists()  # a rejected source leaves the folder unused
    with pytest.raises(ConfigError, match="no config.json"):
        train(tiny_config(init_from=str(tmp_path / "nowhere")), tmp_path / "missing", progress=False)


def test_min_lr_ratio_must_be_a_fraction():
    with pytest.raises(ConfigError, match="min_lr_ratio=1.5"):
        TrainConfig(min_lr_ratio=1.5)


def test_ctrl_c_resume_matches_uninterrupted(tmp_path):
    # A real SIGINT during an evaluation: the run must stop at a step boundary, and the
    # resumed run must log the same rows and end with the same weights as one without a stop.
    config = tiny_config(steps=40, eval_every=5, checkpoint_every=20)
    whole = train(config, tmp_path / "whole", progress=False)

    def interrupt_at_15(row):
        if row["step"] == 15:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", progress=False, on_eval=interrupt_at_15)
    resumed = train(config, tmp_path / "cut", progress=False)

    def rows(run):
        return [{key: value for key, value in json.loads(line).items() if key != "time_s"}
                for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]

    assert rows(resumed) == rows(whole)
    _, whole_model = load_run(whole.run_dir)
    _, resumed_model = load_run(resumed.run_dir)
    for (name, expected), actual in zip(whole_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(expected, actual), name


def test_resume_rejects_fewer_steps(tmp_path):
    train(tiny_config(steps=20), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="already at step 20, past --steps 10"):
        train(tiny_config(steps=10), tmp_path, progress=False)


def test_train_rejects_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty and is not a run folder"):
        train(tiny_config(), tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="is a file"):
        train(tiny_config(), tmp_path / "notes.txt", progress=False)


def test_run_files_readable_by_group(tmp_path):
    train(tiny_config(), tmp_path, progress=False)
    umask = os.umask(0)
    os.umask(umask)
    for path in [tmp_path / "model.safetensors", tmp_path / "checkpoint", tmp_path / "checkpoint" / "model.safetensors"]:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == expected, path


def test_init_from_allows_other_simple_share(tmp_path):
    source = train(tiny_config(), tmp_path / "source", progress=False)
    config = tiny_config(init_from=str(source.run_dir), steps=5)
    config = replace(config, problem=replace(config.problem, simple_share=0.45))
    assert train(config, tmp_path / "tuned", progress=False).steps == 5
