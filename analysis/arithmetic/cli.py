"""``workbench arith``: train, evaluate and dissect multiplication models."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

arith_app = typer.Typer(help="Train small transformers on multiplication and dissect them digit by digit.",
                        no_args_is_help=True)
console = Console()

DISSECTIONS = ("curves", "attention", "carries", "probes", "patching")


def _setup(verbose: bool, threads: int) -> None:
    import torch

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    if threads < 1:
        raise typer.BadParameter(f"--threads {threads} is invalid; use 1 or more.", param_hint="--threads")
    torch.set_num_threads(threads)


def _split(value: Optional[str]) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _digits(value: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    if value is None:
        return None, None
    parts = value.lower().split("x")
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() for part in parts):
        raise typer.BadParameter(f"{value!r} is not of the form NxM (for example 3x3).", param_hint="--digits")
    n_a, n_b = int(parts[0]), int(parts[1])
    if not (1 <= n_a <= 9 and 1 <= n_b <= 9):
        raise typer.BadParameter(f"{value!r} is invalid; each operand has 1 to 9 digits.", param_hint="--digits")
    return n_a, n_b


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _print_eval(title: str, result) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("problems", str(result.n_problems))
    table.add_row("exact match, greedy", _percent(result.exact_match_greedy))
    table.add_row("exact match, teacher-forced", _percent(result.exact_match_teacher_forced))
    table.add_row("loss on answer tokens (nats)", f"{result.loss:.4f}")
    for place, value in enumerate(result.digit_accuracy_greedy):
        table.add_row(f"digit 10^{place} accuracy, greedy", _percent(value))
    for name, value in result.subtask_loss.items():
        table.add_row(f"subtask loss: {name}", f"{value:.4f}")
    console.print(table)


@arith_app.command("train")
def train_command(
    preset: Optional[str] = typer.Option(None, "--preset", help="Named configuration: qiu2024, cpu-3x3, "
                                         "compare-3x3, cpu-4x4 or tiny (default: cpu-3x3, or with --init-from "
                                         "the source run's configuration)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/arith-PRESET)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: the preset's)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Data format: plain, reversed, padded, "
                                      "padded-reversed, separated, separated-padded-reversed."),
    digits: Optional[str] = typer.Option(None, "--digits", help="Problem size as NxM, e.g. 4x4."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the initialisation and the data."),
    stop_at: Optional[float] = typer.Option(None, "--stop-at", help="Stop once greedy exact match on the "
                                            "periodic evaluation reaches this fraction (e.g. 0.995)."),
    simple_share: Optional[float] = typer.Option(None, "--simple-share", help="Fraction of training problems "
                                                 "whose multiplier is one nonzero digit (0.45 in Qiu et al.)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Fine-tune: start from the final "
                                             "weights of this finished run folder, with its problem and model."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: the preset's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Problems per step (default: the "
                                             "preset's)."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="Steps of linear warm-up."),
    min_lr_ratio: Optional[float] = typer.Option(None, "--min-lr-ratio", help="Final learning rate of the "
                                                 "cosine schedule as a fraction of --lr (0 decays to zero)."),
    force: bool = typer.Option(False, "--force", help="Delete an existing run in --out and start over."),
    threads: int = typer.Option(1, "--threads", help="Torch intra-op threads."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log evaluations and checkpoints."),
) -> None:
    """Train a model, or resume the run already in --out."""
    import shutil

    from analysis.arithmetic.config import ConfigError, get_preset
    from analysis.arithmetic.training import train
    from probes.arithmetic import ArithmeticDataError, get_format

    from analysis.arithmetic.checkpoint import CheckpointError, latest_checkpoint, read_config

    _setup(verbose, threads)
    try:
        if preset is None and init_from is not None:
            # Fine-tuning keeps the source's problem and model, so its whole configuration is the base.
            try:
                config = read_config(init_from)
            except (CheckpointError, ConfigError) as error:
                raise ConfigError(f"--init-from {init_from}: {error}") from error
            preset = config.preset
        else:
            preset = preset or "cpu-3x3"
            config = get_preset(preset)
        n_a, n_b = _digits(digits)
        config = config.updated(steps=steps, fmt=get_format(fmt) if fmt else None, n_a=n_a, n_b=n_b, seed=seed,
                                simple_share=simple_share, lr=lr, batch_size=batch_size, warmup_steps=warmup_steps,
                                min_lr_ratio=min_lr_ratio,
                                init_from=str(init_from.resolve()) if init_from else None)
    except (ConfigError, ArithmeticDataError, CheckpointError) as error:
        raise typer.BadParameter(str(error)) from error
    if config.train.warmup_steps >= config.train.steps:
        console.print(f"[yellow]Warm-up ({config.train.warmup_steps} steps) is not shorter than the run "
                      f"({config.train.steps} steps), so the learning rate never reaches --lr; "
                      "pass a smaller --warmup-steps.[/yellow]")
    if stop_at is not None and not 0 < stop_at <= 1:
        raise typer.BadParameter(f"--stop-at {stop_at} is invalid; use a fraction in (0, 1].", param_hint="--stop-at")

    run_dir = out or Path("runs") / f"arith-{preset}"
    if force and run_dir.exists():
        _check_deletable(run_dir)
        shutil.rmtree(run_dir)
    stored_steps = read_config(run_dir).train.steps if (run_dir / "config.json").is_file() else None
    if (run_dir / "eval.json").is_file() and stored_steps == config.train.steps:
        console.print(f"{run_dir} has finished its {config.train.steps} steps, so it is evaluated again. "
                      "Pass more --steps to train further.")
    elif run_dir.is_dir() and latest_checkpoint(run_dir) is not None:
        console.print(f"Resuming {run_dir} from its checkpoint.")
        if stored_steps != config.train.steps:
            # The cosine schedule is a function of the total, so the learning rate changes from here on.
            console.print(f"The schedule now spans {config.train.steps} steps instead of {stored_steps}, "
                          "so the learning rate from here on differs from the first run's.")
    try:
        result = train(config, run_dir, stop_at_exact_match=stop_at)
    except ConfigError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(code=1) from error
    except KeyboardInterrupt:
        console.print(f"Interrupted; rerun the same command to resume from {run_dir}/checkpoint.")
        raise typer.Exit(code=130)
    _print_eval(f"{run_dir}: step {result.steps}, {result.elapsed_s:.0f} s of training, full test set", result.final)
    console.print(f"Wrote {run_dir}/model.safetensors, eval.json and metrics.jsonl")


def _check_deletable(run_dir: Path) -> None:
    """Raise unless ``run_dir`` is a folder that ``arith train`` wrote, so --force deletes nothing else."""
    from analysis.arithmetic.checkpoint import CheckpointError, read_config
    from analysis.arithmetic.config import ConfigError

    if not run_dir.is_dir():
        raise typer.BadParameter(f"{run_dir} is not a folder; --force deletes only run folders.", param_hint="--out")
    try:
        read_config(run_dir)
    except (CheckpointError, ConfigError, ValueError) as error:
        raise typer.BadParameter(f"{run_dir} is not a run folder ({error}); --force deletes only runs written by "
                                 "`workbench arith train`.", param_hint="--out") from error
    expected = {"config.json", "metrics.jsonl", "model.safetensors", "eval.json", "checkpoint",
                "checkpoint.previous", "dissect"}
    foreign = sorted(path.name for path in run_dir.iterdir()
                     if path.name not in expected and not path.name.startswith("."))
    if foreign:
        raise typer.BadParameter(f"{run_dir} contains files that `arith train` does not write "
                                 f"({', '.join(foreign[:5])}); --force deletes only run folders, so move them "
                                 "or delete the folder yourself.", param_hint="--out")


def _load(run: Path):
    from analysis.arithmetic.checkpoint import CheckpointError, load_run

    try:
        return load_run(run)
    except CheckpointError as error:
        raise typer.BadParameter(str(error), param_hint="--run") from error


@arith_app.command("eval")
def eval_command(
    run: Path = typer.Option(..., "--run", help="Run folder written by `arith train` (or a shipped one in data/arith)."),
    problem: Optional[list[str]] = typer.Option(None, "--problem", help="Answer one problem such as 123*456 "
                                                "digit by digit instead (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the results to this JSON file."),
    threads: int = typer.Option(1, "--threads", help="Torch intra-op threads."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what each step does."),
) -> None:
    """Evaluate a trained model on its whole test set, or on given problems."""
    from analysis.arithmetic.attention import explain_product
    from analysis.arithmetic.carries import accuracy_by_carries
    from analysis.arithmetic.metrics import evaluate, json_safe
    from analysis.arithmetic.training import held_out_batch
    from analysis.paths import atomic_write_json
    from probes.arithmetic import ArithmeticDataError

    _setup(verbose, threads)
    if out is not None and out.is_dir():
        raise typer.BadParameter(f"{out} is a folder; pass a JSON file name such as {out / 'eval.json'}.",
                                 param_hint="--out")
    config, model = _load(run)
    if problem:
        answers = []
        for text in problem:
            left, sep, right = text.partition("*")
            left, right = left.strip(), right.strip()
            if not sep or not (left + right).isascii() or not left.isdigit() or not right.isdigit():
                raise typer.BadParameter(f"{text!r} is not of the form A*B with digits only.", param_hint="--problem")
            try:
                explanation = explain_product(model, config.problem, int(left), int(right))
            except ArithmeticDataError as error:
                raise typer.BadParameter(str(error), param_hint="--problem") from error
            mark = "[green]correct[/green]" if explanation.correct else f"[red]wrong, expected {explanation.product}[/red]"
            steps = ", ".join(f"10^{s.place}:{s.token} (p={s.probability:.2f})"
                              for s in explanation.steps if s.place >= 0)
            console.print(f"{left}*{right} = {explanation.predicted} {mark}   {steps}")
            answers.append(explanation.to_dict())
        if out:
            atomic_write_json(out, json_safe({"run": str(run), "problems": answers}))
            console.print(f"Wrote {out}")
        return

    _, batch = held_out_batch(config)
    with console.status(f"Evaluating {run} on {len(batch.a):,} test problems (greedy and teacher-forced)…"):
        result = evaluate(model, batch, config.problem)
        carries = accuracy_by_carries(model, config.problem, batch)
    _print_eval(f"{run}: full test set", result)
    table = Table(title="greedy exact match by number of columns receiving a carry")
    table.add_column("carries")
    table.add_column("problems", justify="right")
    table.add_column("exact match", justify="right")
    for group in carries.by_carry_count:
        table.add_row(str(group.value), str(group.n_problems), _percent(group.accuracy))
    console.print(table)
    if out:
        atomic_write_json(out, json_safe({"run": str(run), "eval": result.to_dict(), "carries": carries.to_dict()}))
        console.print(f"Wrote {out}")


@arith_app.command("dissect")
def dissect_command(
    run: Path = typer.Option(..., "--run", help="Run folder written by `arith train` (or a shipped one in data/arith)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the results (default: RUN/dissect)."),
    parts: Optional[str] = typer.Option(None, "--parts", help=f"Comma-separated parts (default: all of "
                                        f"{', '.join(DISSECTIONS)})."),
    problems: int = typer.Option(1000, "--problems", help="Test problems used for attention, carries and patching."),
    slots: Optional[str] = typer.Option(None, "--slots", help="Operand digits to corrupt for patching, "
                                        "e.g. a0,b1 (default: every digit)."),
    force: bool = typer.Option(False, "--force", help="Recompute parts whose result file exists."),
    threads: int = typer.Option(1, "--threads", help="Torch intra-op threads."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what each step does."),
) -> None:
    """Compute the dissection of a trained model; each part is one JSON file, skipped if present."""
    from analysis.arithmetic import dissect

    _setup(verbose, threads)
    chosen = _split(parts) or list(DISSECTIONS)
    unknown = [part for part in chosen if part not in DISSECTIONS]
    if unknown:
        raise typer.BadParameter(f"unknown part(s) {', '.join(unknown)}; use {', '.join(DISSECTIONS)}",
                                 param_hint="--parts")
    if problems < 10:
        raise typer.BadParameter(f"--problems {problems} is too few; use at least 10.", param_hint="--problems")
    config, model = _load(run)
    layout = config.problem.format
    if parts is None and not (layout.pad_operands and layout.pad_product):
        chosen.remove("patching")
        console.print("Skipping patching: it needs every digit at a fixed position, and this run's format "
                      "does not pad operands and product.")
    if problems > config.train.test_size:
        console.print(f"The run has {config.train.test_size:,} test problems; using all of them.")
    folder = out or run / "dissect"
    try:
        written = dissect.run_dissection(run, config, model, folder, chosen, n_problems=problems,
                                         slots=_split(slots) or None, force=force)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    for path, status in written:
        console.print(f"{status:8} {path}")
    if any(status == "skipped" for _, status in written):
        console.print("Skipped parts were computed before, possibly with other options; --force recomputes them.")


@arith_app.command("compare")
def compare_command(
    preset: str = typer.Option("compare-3x3", "--preset", help="Configuration shared by every format."),
    formats: str = typer.Option("plain,reversed,padded,padded-reversed", "--formats",
                                help="Comma-separated formats to train."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps per format (default: the preset's)."),
    out: Path = typer.Option(Path("runs/arith-compare"), "--out", help="Folder with one run per format."),
    force: bool = typer.Option(False, "--force", help="Delete the runs of these formats in --out and start over."),
    threads: int = typer.Option(1, "--threads", help="Torch intra-op threads."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what each step does."),
) -> None:
    """Train the same model for the same steps on several formats and print the accuracy table."""
    from analysis.arithmetic.compare import compare_formats
    from analysis.arithmetic.config import ConfigError, get_preset
    from probes.arithmetic import ArithmeticDataError, get_format

    _setup(verbose, threads)
    names = tuple(_split(formats))
    try:
        for name in names:
            get_format(name)
        base = get_preset(preset).updated(steps=steps)
    except (ConfigError, ArithmeticDataError) as error:
        raise typer.BadParameter(str(error)) from error
    if force:
        import shutil

        for name in names:
            if (out / name).exists():
                _check_deletable(out / name)
                shutil.rmtree(out / name)
    try:
        rows = compare_formats(base, out, names)
    except ConfigError as error:
        # The message ends with the remedies, which are the same for compare: another --out, or --force.
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(code=1) from error
    table = Table(title=f"Exact match by format: {base.problem.n_a}x{base.problem.n_b} digits, "
                        f"{base.train.steps} steps each, {base.train.test_size} test problems")
    for column in ("format", "greedy", "teacher-forced", "test loss", "time (s)"):
        table.add_column(column, no_wrap=column == "format")
    for row in rows:
        table.add_row(row.format, _percent(row.exact_match_greedy), _percent(row.exact_match_teacher_forced),
                      f"{row.test_loss:.4f}", f"{row.train_time_s:.0f}")
    console.print(table)
    console.print(f"Wrote {out}/comparison.json")
