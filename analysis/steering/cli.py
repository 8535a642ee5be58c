"""CLI commands for steering vectors: ``icv build``, ``steer``, ``vectors ...`` and ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
icv_app = typer.Typer(help="Build in-context vectors from demonstration pairs.", no_args_is_help=True)
vectors_app = typer.Typer(help="Vector arithmetic on saved steering vectors.", no_args_is_help=True)


def _fail(error: Exception) -> None:
    console.print(f"[red]{error}[/red]")
    raise typer.Exit(code=1) from error


def _load(path: Path):
    from analysis.steering.vector import SteeringVector, VectorError

    try:
        return SteeringVector.load(path)
    except VectorError as error:
        _fail(error)


def _save(vector, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    vector.save(out)
    console.print(f"wrote {out} ({vector.method}, norm {vector.norm:.3g})")


@icv_app.command("build")
def icv_build(
    model: str = typer.Option("gemma-3-270m", "--model", help="Model alias, hub id, folder or .gguf file."),
    demos: Path = typer.Option(..., "--demos", help="Demonstration pairs: .jsonl ({\"x\", \"y\"}) or .csv (x,y)."),
    out: Path = typer.Option(..., "--out", help="Output .safetensors file."),
    variant: str = typer.Option("paper", "--variant", help="'paper' (default) or 'released' (authors' code)."),
) -> None:
    """Build an in-context vector from demonstration pairs (x, y)."""
    from analysis.models import ModelLoadError, load_model
    from analysis.steering.icv import build_icv
    from analysis.steering.vector import VectorError
    from analysis.store import StoreError
    from probes.demos import DemoError, demos_hash, load_demos

    try:
        demo_set = load_demos(demos)
        for problem in demo_set.problems:
            console.print(f"[yellow]{demos}: {problem} (row skipped)[/yellow]")
        bridge = load_model(model)
        pairs = [(pair.x, pair.y) for pair in demo_set.pairs]
        vector = build_icv(bridge, pairs, variant=variant, demos_hash=demos_hash(demo_set.pairs))
    except (DemoError, ModelLoadError, VectorError, StoreError) as error:
        _fail(error)
    _save(vector, out)
    console.print(f"{len(pairs)} pairs; first component explains "
                  f"{100 * vector.extra['explained_variance']:.1f}% of the variance")


@icv_app.command("report")
def icv_report(
    model: str = typer.Option("gemma-3-270m", "--model", help="Model alias, hub id, folder or .gguf file."),
    out: Path = typer.Option(Path("results/steering-report.json"), "--out", help="Output JSON file."),
    n_pairs: int = typer.Option(24, "--pairs", help="Demonstration pairs per vector."),
    n_inputs: int = typer.Option(8, "--inputs", help="Held-out inputs per measurement."),
) -> None:
    """Run the steering experiments (sweep, composition, analogy, inhibition) and write JSON."""
    import logging

    from analysis.models import ModelLoadError, load_model
    from analysis.steering.report import steering_report

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        bridge = load_model(model)
    except ModelLoadError as error:
        _fail(error)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = steering_report(bridge, out, n_pairs, n_inputs)
    console.print(f"wrote {out} in {report['seconds']:.0f} s")


def steer(
    model: str = typer.Option("gemma-3-270m", "--model", help="Model alias, hub id, folder or .gguf file."),
    vector: Path = typer.Option(..., "--vector", help="Steering vector (.safetensors)."),
    strength: float = typer.Option(1.0, "--strength", help="Multiple of the vector's scale to add."),
    prompt: str = typer.Option(..., "--prompt", help="Prompt text."),
    max_new_tokens: int = typer.Option(20, "--max-new-tokens", help="Tokens to generate (each reruns the "
                                       "whole sequence on models without a working KV cache)."),
) -> None:
    """Generate greedily with and without the vector and print both."""
    from analysis.models import ModelLoadError, load_model
    from analysis.steering.steer import generate
    from analysis.steering.vector import VectorError

    loaded = _load(vector)
    try:
        bridge = load_model(model)
        plain = generate(bridge, prompt, max_new_tokens)
        steered = generate(bridge, prompt, max_new_tokens, vector=loaded, strength=strength)
    except (ModelLoadError, VectorError) as error:
        _fail(error)
    console.print(f"[bold]unsteered:[/bold] {prompt}{plain.text}")
    console.print(f"[bold]strength {strength:g}:[/bold] {prompt}{steered.text}")


def _binary(first: Path, second: Path, out: Path, operation: str) -> None:
    from analysis.steering.vector import VectorError

    a, b = _load(first), _load(second)
    try:
        result = {"add": lambda: a + b, "sub": lambda: a - b, "project": lambda: a.project_out(b)}[operation]()
    except VectorError as error:
        _fail(error)
    _save(result, out)


@vectors_app.command("add")
def vectors_add(first: Path, second: Path, out: Path = typer.Option(..., "--out", help="Output file.")) -> None:
    """FIRST + SECOND."""
    _binary(first, second, out, "add")


@vectors_app.command("sub")
def vectors_sub(first: Path, second: Path, out: Path = typer.Option(..., "--out", help="Output file.")) -> None:
    """FIRST - SECOND."""
    _binary(first, second, out, "sub")


@vectors_app.command("project")
def vectors_project(first: Path, second: Path, out: Path = typer.Option(..., "--out", help="Output file.")) -> None:
    """FIRST with its component along SECOND removed (per layer)."""
    _binary(first, second, out, "project")


@vectors_app.command("scale")
def vectors_scale(vector: Path, factor: float, out: Path = typer.Option(..., "--out", help="Output file.")) -> None:
    """FACTOR * VECTOR."""
    _save(factor * _load(vector), out)


@vectors_app.command("compare")
def vectors_compare(vectors: list[Path]) -> None:
    """Print the cosine-similarity matrix of two or more vectors."""
    from analysis.steering.vector import VectorError, cosine_matrix

    if len(vectors) < 2:
        raise typer.BadParameter("give at least two vector files", param_hint="VECTORS")
    loaded = [_load(path) for path in vectors]
    try:
        matrix = cosine_matrix(loaded)
    except VectorError as error:
        _fail(error)
    table = Table(title="cosine similarity (all layers concatenated)")
    table.add_column("")
    for path in vectors:
        table.add_column(path.stem)
    for path, row in zip(vectors, matrix.tolist()):
        table.add_row(path.stem, *(f"{value:+.3f}" for value in row))
    console.print(table)


def export(
    vector: Path = typer.Option(..., "--vector", help="Steering vector (.safetensors)."),
    fmt: str = typer.Option(..., "--format", help="gguf (llama.cpp), safetensors, or torch (plain PyTorch hooks)."),
    out: Path = typer.Option(..., "--out", help="Output file name, inside --out-dir."),
    out_dir: Path = typer.Option(Path("."), "--out-dir", help="Folder the output must stay in."),
    strength: Optional[float] = typer.Option(None, "--strength", help="Strength baked into gguf/torch files."),
    model_hint: str = typer.Option("gemma3", "--model-hint", help="llama.cpp architecture name of the model."),
) -> None:
    """Export a steering vector for another tool."""
    from analysis.steering.export import export_vector, output_path
    from analysis.steering.vector import VectorError

    loaded = _load(vector)
    if fmt in ("safetensors", "torch") and out.suffix != ".safetensors":
        console.print(f"[yellow]note: the {fmt} export is a safetensors file; name it *.safetensors "
                      "(torch.load cannot read it)[/yellow]")
    try:
        target = output_path(out_dir, str(out))
        target.parent.mkdir(parents=True, exist_ok=True)
        written = export_vector(loaded, fmt, target, strength=strength, model_hint=model_hint)
    except (VectorError, ValueError) as error:
        _fail(error)
    console.print(f"wrote {written} ({fmt})")
