"""The ``workbench`` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="interp-workbench: successor heads, steering vectors, arithmetic circuits.",
                  no_args_is_help=True, add_completion=False)
console = Console()
APP_HOME = Path(__file__).resolve().parent.parent / "app" / "Home.py"


@app.callback()
def main() -> None:
    """interp-workbench: successor heads, steering vectors, arithmetic circuits."""
    # transformers draws a "Loading weights" bar on every load; ours are enough.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)


def _split(value: Optional[str]) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@app.command()
def heads(
    model: Optional[str] = typer.Option(None, "--model", help="One model: alias, hub id, folder or .gguf file."),
    models: Optional[str] = typer.Option(None, "--models", help="Several models, comma-separated."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated task names (default: all)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods (default: all)."),
    out: Path = typer.Option(Path("results"), "--out", help="Folder for the result files."),
    top: int = typer.Option(10, "--top", help="Heads shown per method and kept in the ranking."),
    force: bool = typer.Option(False, "--force", help="Recompute results that are already complete."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what each step does."),
) -> None:
    """Score every attention head of each model on every ordinal task and rank them."""
    from analysis.batch import HeadsJob, is_complete, read_result, result_paths, run_heads_for_model
    from analysis.models import DEFAULT_MODEL, ModelLoadError
    from analysis.successor import METHODS
    from probes.ordinal import TaskError, get_tasks

    _setup_logging(verbose)
    names = _split(models) + ([model] if model else [])
    names = list(dict.fromkeys(names)) or [DEFAULT_MODEL]
    try:
        task_list = get_tasks(_split(tasks))
    except TaskError as error:
        raise typer.BadParameter(str(error), param_hint="--tasks") from error
    method_list = tuple(_split(methods)) or METHODS
    unknown = [name for name in method_list if name not in METHODS]
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {', '.join(unknown)}; use {', '.join(METHODS)}",
                                 param_hint="--methods")
    if top < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--top")
    job = HeadsJob(tuple(task.name for task in task_list), method_list, top)
    out.mkdir(parents=True, exist_ok=True)

    failures = 0
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        overall = bar.add_task("models", total=len(names))
        for name in names:
            json_path, csv_path = result_paths(out, name)
            existing = read_result(json_path)
            if not force and is_complete(json_path, job):
                console.print(f"[dim]{name}: result already complete in {json_path}, skipped; "
                              "showing it (--force recomputes)[/dim]")
                _print_result(existing, json_path, csv_path, wrote=False)
                bar.advance(overall)
                continue
            if existing is not None and not force:
                # A complete result for other tasks or methods would be lost by overwriting it.
                console.print(f"[red]{name}: {json_path} contains a complete result for tasks "
                              f"{', '.join(existing['job']['tasks'])} and methods "
                              f"{', '.join(existing['job']['methods'])}; pass --force to replace it, "
                              "or use another --out folder.[/red]")
                failures += 1
                bar.advance(overall)
                continue
            else:
                def step(label: str, name: str = name) -> None:
                    bar.update(overall, description=f"{name}: {label}")
                try:
                    result = run_heads_for_model(name, task_list, job, out, progress=step)
                except ModelLoadError as error:
                    console.print(f"[red]{name}: {error}[/red]")
                    failures += 1
                    bar.advance(overall)
                    continue
            bar.advance(overall)
            _print_result(result, json_path, csv_path)

    if failures:
        raise typer.Exit(code=1)


def _print_result(result: dict, json_path: Path, csv_path: Path, wrote: bool = True) -> None:
    model_name = result["model"]["name"]
    for task in result["tasks"]:
        if task["dropped"]:
            console.print(f"{model_name}: task {task['name']}: kept {len(task['items'])}, "
                          f"dropped {len(task['dropped'])} items that are not one token")
    for method, ranks in result["ranking"].items():
        units = result["methods"][method]["units"]
        table = Table(title=f"{model_name}: top heads by {method} ({units}, mean over tasks)")
        table.add_column("rank", justify="right")
        table.add_column("head")
        table.add_column("mean", justify="right")
        table.add_column("best task")
        for rank, head in enumerate(ranks, start=1):
            best = max(head["per_task"], key=head["per_task"].get)
            table.add_row(str(rank), head["label"], f"{head['mean_score']:.3f}",
                          f"{best} ({head['per_task'][best]:.2f})")
        console.print(table)
    if wrote:
        console.print(f"Wrote {json_path} and {csv_path}")


cache_app = typer.Typer(help="Inspect and manage the activation store.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _store():
    from analysis.store import ActivationStore

    return ActivationStore()


@cache_app.command("ls")
def cache_ls() -> None:
    """List store entries, most recently used first."""
    store = _store()
    entries = store.entries()
    table = Table(title=f"activation store {store.root} (cap {store.max_bytes / 1e9:.1f} GB)")
    for column in ("id", "model", "prompts", "hooks", "positions", "MB", "created"):
        table.add_column(column)
    for entry in entries:
        key = entry.manifest.get("key", {})
        table.add_row(entry.id[:12], key.get("model_id", "?"), str(len(entry.token_ids)),
                      str(len(entry.manifest.get("tensors", {}))), str(key.get("positions", "?")),
                      f"{entry.nbytes / 1e6:.1f}", entry.manifest.get("created", "?"))
    console.print(table)
    console.print(f"{len(entries)} entries, {sum(e.nbytes for e in entries) / 1e6:.1f} MB")


@cache_app.command("verify")
def cache_verify(entry_id: Optional[str] = typer.Argument(None, help="Entry id prefix (default: all).")) -> None:
    """Check every file's size and content hash; exit 1 if any entry is damaged."""
    from analysis.store import StoreError

    store = _store()
    try:
        entries = [store.find(entry_id)] if entry_id else store.entries()
    except StoreError as error:
        raise typer.BadParameter(str(error), param_hint="ENTRY_ID") from error
    damaged = 0
    for entry in entries:
        problems = store.verify(entry)
        if problems:
            damaged += 1
            console.print(f"[red]{entry.path}: {'; '.join(problems)}[/red]")
        else:
            console.print(f"{entry.id[:12]} ok")
    if damaged:
        console.print(f"{damaged} damaged entries; `workbench cache rm ID` or `workbench cache gc` removes them")
        raise typer.Exit(code=1)


@cache_app.command("rm")
def cache_rm(entry_id: str = typer.Argument(..., help="Entry id prefix, as `cache ls` shows it.")) -> None:
    """Delete one entry."""
    from analysis.store import StoreError

    store = _store()
    try:
        entry = store.find(entry_id)
    except StoreError as error:
        raise typer.BadParameter(str(error), param_hint="ENTRY_ID") from error
    store.remove(entry)
    console.print(f"removed {entry.path}")


@cache_app.command("gc")
def cache_gc(max_gb: Optional[float] = typer.Option(None, "--max-gb", help="Size cap in GB (default: the store's cap).")) -> None:
    """Delete damaged entries, then least-recently-used ones until the store fits its cap."""
    store = _store()
    removed = store.gc(None if max_gb is None else int(max_gb * 1e9))
    console.print(f"removed {len(removed)} entries ({sum(e.nbytes for e in removed) / 1e6:.1f} MB)")


@cache_app.command("build")
def cache_build(
    model: str = typer.Option("gemma-3-270m", "--model", help="Model alias, hub id, folder or .gguf file."),
    prompts: Path = typer.Option(..., "--prompts", help="Text file, one prompt per line (blank lines skipped)."),
    hooks: str = typer.Option("blocks.*.hook_resid_post", "--hooks",
                              help="Comma-separated hook names or glob patterns."),
    positions: str = typer.Option("all", "--positions", help="'all', 'last', or comma-separated indices."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per forward pass."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16."),
) -> None:
    """Run prompts through a model and keep the chosen activations in the store."""
    from analysis.activations import cached_activations
    from analysis.models import ModelLoadError, load_model
    from analysis.store import StoreError

    try:
        texts = [line for line in prompts.read_text().splitlines() if line.strip()]
    except OSError as error:
        raise typer.BadParameter(f"cannot read {prompts}: {error.strerror}", param_hint="--prompts") from error
    if batch_size < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--batch-size")
    try:
        picked = positions if positions in ("all", "last") else [int(p) for p in _split(positions)]
    except ValueError as error:
        raise typer.BadParameter(f"{positions!r} is not 'all', 'last' or comma-separated integers",
                                 param_hint="--positions") from error
    try:
        bridge = load_model(model)
        entry = cached_activations(bridge, texts, _split(hooks), positions=picked, batch_size=batch_size,
                                   dtype=dtype)
    except (ModelLoadError, StoreError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(code=1) from error
    console.print(f"entry {entry.id[:12]}: {len(entry.token_ids)} prompts, {len(entry.hooks)} hooks, "
                  f"{entry.nbytes / 1e6:.1f} MB in {entry.path}")


@app.command()
def dashboard(
    port: int = typer.Option(8501, "--port", help="Port to listen on."),
    address: str = typer.Option("127.0.0.1", "--address", help="Interface to bind; 0.0.0.0 exposes it to the network."),
    results: Path = typer.Option(Path("results"), "--results", help="Folder of head-search results to show."),
) -> None:
    """Start the Streamlit dashboard, bound to 127.0.0.1 unless --address names another interface."""
    env = dict(os.environ, INTERP_WORKBENCH_RESULTS=str(results.resolve()))
    command = [sys.executable, "-m", "streamlit", "run", str(APP_HOME),
               "--server.address", address, "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    console.print(f"Dashboard on http://{address}:{port}")
    # Replace this process with Streamlit so that signals (SIGTERM from a job
    # runner, Ctrl-C) reach the server itself and no orphan keeps serving.
    os.execve(sys.executable, command, env)


from analysis.steering.cli import export, icv_app, steer, vectors_app  # noqa: E402

app.add_typer(icv_app, name="icv")
app.add_typer(vectors_app, name="vectors")
app.command()(steer)
app.command()(export)


from analysis.arithmetic.cli import arith_app  # noqa: E402
app.add_typer(arith_app, name="arith")
if __name__ == "__main__":
    app()
