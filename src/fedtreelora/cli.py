"""``fedtreelora`` command line: run a federation, list methods and allocation strategies."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .config import ConfigError, RunConfig, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2, no traceback."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def compare_specs(specs: list[str]) -> dict[str, tuple[str, list[str]]]:
    """``--compare`` values "METHOD[:KEY=VALUE...]" as label -> (method, overrides).

    The overrides apply on top of the main run's (e.g. local training at its own tuned rate); the label,
    drawn in the plot's legend, shows them."""
    out: dict[str, tuple[str, list[str]]] = {}
    for spec in specs:
        method, *extra = spec.split(":")
        if any(m == method for m, _ in out.values()):
            raise ConfigError(f"--compare: {method!r} given twice; compare each method once")
        out[f"{method} ({', '.join(extra)})" if extra else method] = (method, extra)
    return out


@app.command()
def run(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML file with settings")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override: key=value (repeatable)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output folder (default runs/<method>-s<seed>)")
    ] = None,
    compare: Annotated[
        list[str] | None,
        typer.Option(
            "--compare",
            help="also run METHOD[:KEY=VALUE...] with the same seed, data and budget, drawn beside"
            " (repeatable), e.g. local:train.lr=1e-3",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="continue the run stored in this folder (after a crash or kill; --set federation.rounds=N"
            " extends it)",
        ),
    ] = None,
) -> None:
    """Run one federation and write results.json and plots to the output folder.

    The folder also gets the run's config.json and, after every round, checkpoint.pt: a run that was
    killed continues with --resume and ends with the numbers it would have had."""
    from .methods import options_for

    try:
        if resume is not None:
            cfg = _resumed(resume, config, out, compare, sets or [])
            others_cfg = _resumed_comparisons(resume, sets or [])
        else:
            cfg = load_config(config, sets or [], options_for())
            others_cfg = {
                label: load_config(config, [*(sets or []), f"method='{m}'", *extra], options_for())
                for label, (m, extra) in compare_specs(compare or []).items()
            }
    except ConfigError as e:
        fail(str(e))
    out = resume or out or Path("runs") / f"{cfg.method}-s{cfg.seed}"
    folders = {label: out / "compare" / other.method for label, other in others_cfg.items()}
    try:
        for folder, c in [(out, cfg), *((folders[k], v) for k, v in others_cfg.items())]:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / CONFIG).write_text(json.dumps(c.to_dict(), indent=1))
        (out / COMPARE).write_text(json.dumps({k: v.method for k, v in others_cfg.items()}))
    except OSError as e:
        fail(f"--out: cannot write to {out}: {e.strerror}")
    results = _run_with_progress(cfg, out, resume is not None)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    others: dict[str, dict[str, Any]] = {}
    for name, other in others_cfg.items():  # after the main run, so its numbers come first
        others[name] = _run_with_progress(other, folders[name], resume is not None)
        (folders[name] / "results.json").write_text(json.dumps(others[name], indent=1))
    _summarise(out, results, others)


def _summarise(out: Path, results: dict[str, Any], others: dict[str, dict[str, Any]]) -> None:
    """Plots into the run folder, and the headline numbers on the terminal."""
    from .plots import write_plots

    pictures = write_plots(results, out, others)
    from .results import mean_score, metric_of

    console = Console()
    metric, baseline, n = metric_of(results), results.get("majority_baseline"), len(results["clients"])
    console.print(
        f"mean personalised {metric} [bold]{mean_score(results):.4f}[/] over {n} clients"
        + (f" (always-majority-label baseline {baseline:.4f})" if baseline is not None else "")
    )
    if len(results.get("groups") or {}) > 1:
        console.print("  by group: " + ", ".join(f"{g} {v:.4f}" for g, v in results["groups"].items()))
    for name, res in others.items():
        console.print(f"  {name} with the same seed and budget: {mean_score(res):.4f}")
    if results["topology"] is not None:
        console.print(f"K per layer: {results['topology']['k_per_layer']}")
    console.print(f"wrote {out / 'results.json'}, " + ", ".join(str(p) for p in pictures))


CONFIG = "config.json"  # a run folder's stored config: what --resume continues with
COMPARE = "compare.json"  # the --compare runs beside it: legend label -> method (folder compare/<method>)


def _stored(path: Path, sets: list[str]) -> RunConfig:
    """A run folder's stored config, extended or re-run by ``sets`` as a resumed run may be."""
    from .config import resume_config
    from .methods import options_for

    return resume_config(json.loads(path.read_text()), sets, options_for())


def _resumed_comparisons(folder: Path, sets: list[str]) -> dict[str, RunConfig]:
    """The --compare runs of a resumed run, each from its own stored config (extended like the main run)."""
    path = folder / COMPARE
    labels: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    stored = {label: folder / "compare" / method / CONFIG for label, method in labels.items()}
    return {label: _stored(p, sets) for label, p in stored.items() if p.is_file()}


def _resumed(
    folder: Path, config: Path | None, out: Path | None, compare: list[str] | None, sets: list[str]
) -> RunConfig:
    if config is not None or out is not None or compare:
        raise ConfigError(
            "--resume: the run continues in its own folder with its stored config; "
            "drop --config, --out and --compare"
        )
    path = folder / CONFIG
    if not path.is_file():
        raise ConfigError(
            f"--resume: {folder} holds no run ({CONFIG} missing); "
            f"start one with fedtreelora run --out {folder}"
        )
    return _stored(path, sets)


def metric_name(cfg: RunConfig) -> str:
    """The metric the run will report (its task kind's), read off the data's first row; "score" if unclear."""
    from .tasks import kind_for

    try:
        return kind_for(cfg.data.task_dirs(), cfg.data.kind).metric
    except (ConfigError, ValueError):
        return "score"  # the run itself reports what is wrong, with the full message


class BarObserver:
    """A live bar on a terminal; one line per round everywhere (logs and CI see those)."""

    def __init__(self, cfg: RunConfig, bar: Progress) -> None:
        self.cfg, self.bar = cfg, bar
        self.metric = metric_name(cfg)
        self.task = bar.add_task(
            f"{cfg.method}: setting up", total=cfg.federation.rounds * cfg.data.n_clients
        )

    def client_done(self, rnd: int, done: int, phase: str) -> None:
        n, rounds = self.cfg.data.n_clients, self.cfg.federation.rounds
        desc = f"{self.cfg.method} round {rnd + 1}/{rounds} ({phase})"
        self.bar.update(self.task, completed=rnd * n + done, description=desc)

    def round_done(self, row: dict[str, Any]) -> None:
        from .results import round_score

        score = round_score(row)
        self.bar.console.print(
            f"round {row['round'] + 1:>3} {row['phase']:<9} loss {row['train_loss']:.4f}"
            + (f"  {self.metric} {score:.4f}" if score is not None else "")
            + f"  [{row['seconds']:.0f}s]",
            highlight=False,
        )


def _run_with_progress(cfg: RunConfig, out: Path | None = None, resume: bool = False) -> dict[str, Any]:
    from .runtime.embedded import run as run_embedded

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            handler = RichHandler(console=bar.console, show_time=False, show_path=False, markup=False)
            logging.getLogger("fedtreelora").addHandler(handler)  # rejected uploads, skipped rounds
            try:
                return run_embedded(cfg, BarObserver(cfg, bar), out, resume)
            finally:
                logging.getLogger("fedtreelora").removeHandler(handler)
    except ConfigError as e:  # after the bar has gone, so the error is the last line on the terminal
        fail(str(e))


@app.command()
def deploy(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML file with settings")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override: key=value (repeatable)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output folder (default runs/<method>-s<seed>-flower)")
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option("--nodes", "-n", min=1, help="SuperNodes, one per client (sets data.n_clients)"),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="continue the deployed run stored in this folder")
    ] = None,
    secure: Annotated[
        bool, typer.Option("--secure", help="TLS everywhere, and only registered node keys may join")
    ] = False,
    round_timeout: Annotated[
        float, typer.Option(min=1, help="seconds a node may take for one message before it is left out")
    ] = 600.0,
    threads: Annotated[int, typer.Option(min=1, help="torch threads per node")] = 1,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="start nothing: write the run folder and app (with --secure: keys, certificates); print "
            "the commands to run",
        ),
    ] = False,
    address: Annotated[
        str, typer.Option(help="with --plan: the address nodes reach the SuperLink at (another machine's)")
    ] = "127.0.0.1",
) -> None:
    """Run a federation on the Flower deployment engine: a SuperLink and one SuperNode per client, all on
    127.0.0.1 (docs/DEPLOY.md).

    Writes the same run folder as `fedtreelora run` (Flower's logs, keys and the nodes' client states go to
    its flower/ sub-folder) and stops every process it started, also on Ctrl-C."""
    from .config import absolute_paths
    from .methods import options_for

    if address != "127.0.0.1" and not plan:
        fail("--address: deploy starts its processes on 127.0.0.1 only; use --plan for other machines")
    try:
        extra = [f"data.n_clients={nodes}"] if nodes is not None else []
        if resume is not None:
            cfg = _resumed(resume, config, out, None, [*(sets or []), *extra])
        else:
            cfg = absolute_paths(load_config(config, [*(sets or []), *extra], options_for()))
    except ConfigError as e:
        fail(str(e))
    try:
        from .runtime.flower.deploy import DeployError, LocalFederation
    except ImportError:
        fail("deploy needs Flower: pip install 'fedtreelora[flower]'")
    out = resume or out or Path("runs") / f"{cfg.method}-s{cfg.seed}-flower"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=1))
    except OSError as e:
        fail(f"--out: cannot write to {out}: {e.strerror}")
    n = cfg.data.n_clients
    if plan:
        kit = LocalFederation(out / "flower", secure=secure, threads=threads)
        kit.prepare(address)
        script = kit.script(n, out, round_timeout)
        (kit.folder / "commands.sh").write_text(script)
        Console().print(script, highlight=False, soft_wrap=True)
        made = "app, keys, certificates, commands.sh" if secure else "app, commands.sh"
        err.print(f"wrote {out / CONFIG} and {kit.folder} ({made})")
        return
    try:
        with LocalFederation(out / "flower", secure=secure, threads=threads) as federation:
            err.print(f"starting a SuperLink and {n} SuperNodes on 127.0.0.1 (logs: {federation.logs})")
            federation.start(n)
            federation.run(out, resume is not None, round_timeout, on_line=err.print)
    except DeployError as e:
        fail(str(e))
    _summarise(out, json.loads((out / "results.json").read_text()), {})


@app.command()
def bench(
    grid_file: Annotated[Path, typer.Argument(help="grid TOML (see benchmarks/glue_grid.toml)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="sweep folder; finished cells are skipped")],
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="cells at once, one thread each (same numbers)")
    ] = 1,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="run nothing: say how many cells are left and how long they take"),
    ] = False,
) -> None:
    """Run a sweep of variants x tasks x seeds; resumes where it stopped; then writes the tables."""
    from .bench import finished_seconds, load_grid, run_cell, run_grid, seconds_left
    from .report import write_report

    try:
        grid = load_grid(grid_file)
    except ConfigError as e:
        fail(str(e))
    cells = grid.cells()
    done = finished_seconds(out, cells)  # read once; each cell that finishes below adds its own

    def left() -> str:
        """The time the unfinished cells will take, from the finished cells' times."""
        todo = [c for c in cells if c not in done]
        guess = seconds_left(done, todo, jobs)
        when = "unknown until a cell has finished" if guess is None else f"about {guess / 3600:.1f} h"
        return f"{len(todo)} of {len(cells)} cells left, {when} at --jobs {jobs}"

    if dry_run:
        Console().print(left(), highlight=False)
        return
    out.mkdir(parents=True, exist_ok=True)

    def on_cell(i: int, total: int, name: str, status: str) -> None:
        if status == "finished":
            done.update(finished_seconds(out, [cells[i - 1]]))  # i counts grid.cells() from 1
            status = f"finished · {left()}"
        shown = {"skipped": " (done, skipped)", "started": ""}
        err.print(f"[{i}/{total}] {name}{shown.get(status, ' ' + status)}", highlight=False)

    outcome = run_grid(grid, out, run_cell, on_cell, jobs)
    written = write_report(out)
    files = ", ".join(str(p) for p in written[:2])
    Console().print(f"ran {outcome.ran} cells; wrote {files} and {len(written) - 2} plots")
    if outcome.failed:
        fail(f"{len(outcome.failed)} cell(s) could not run (reasons above); fix their settings and re-run")


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="a sweep folder written by `fedtreelora bench`")],
    into: Annotated[
        Path | None,
        typer.Option(
            help="also paste the tables into this Markdown file, between the lines "
            "<!-- tables:begin NAME --> and <!-- tables:end NAME --> (NAME: the sweep folder's name)"
        ),
    ] = None,
) -> None:
    """Regenerate a sweep's CSV, Markdown tables and plots from its stored result files."""
    from .report import markers, paste_tables, write_report

    if not (out / "grid.json").is_file():
        fail(f"OUT: {out} holds no grid.json; pass a folder written by `fedtreelora bench`")
    sweep = out.resolve().name  # the markers in --into are named after the sweep folder
    pair = markers(sweep)
    if into is not None and not all(m in (into.read_text() if into.is_file() else "") for m in pair):
        fail(f"--into: {into} needs the lines {pair[0]} and {pair[1]} around the place for the tables")
    written = write_report(out)
    if into is not None:
        paste_tables(written[1].read_text(), into, sweep)
        written.append(into)
    Console().print(f"wrote {', '.join(str(p) for p in written[:2])} and {len(written) - 2} more files")


@app.command()
def methods() -> None:
    """List every method, and the variants its options select."""
    from .methods import REGISTRY

    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        typer.echo(f"{name:<12} {cls.summary}")
        for option, choices in getattr(cls.Options, "VARIANTS", {}).items():
            for choice, text in choices.items():
                typer.echo(f"  --set {name}.{option}={choice}".ljust(46) + text)


@app.command()
def export(
    folder: Annotated[Path, typer.Argument(help="a run folder (written by fedtreelora run)")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="adapter folder (with --all: one sub-folder per client)")
    ],
    client: Annotated[int | None, typer.Option("--client", help="the client whose model to export")] = None,
    all_clients: Annotated[bool, typer.Option("--all", help="export every client")] = False,
) -> None:
    """Write a client's personalised model as a PEFT LoRA adapter (PeftModel.from_pretrained loads it)."""
    from .export import ExportError, export, open_run

    if (client is not None) == all_clients:  # exactly one of them
        fail("export: give --client I or --all")
    try:
        run = open_run(folder)
        for cid in sorted(run.kept) if client is None else [client]:
            target = out / f"client{cid}" if all_clients else out
            export(run, cid, target)
            Console().print(f"client {cid}: wrote {target}")
    except (ExportError, ConfigError, ValueError) as e:
        fail(str(e))


@app.command()
def allocations() -> None:
    """List the layer-allocation strategies (Fed-HeLLo) and their depth patterns."""
    from .allocation import STRATEGIES
    from .allocation.patterns import PATTERNS

    for name in sorted(STRATEGIES):
        typer.echo(f"{name:<12} {STRATEGIES[name].summary}")
    typer.echo(f"patterns: {', '.join(PATTERNS)} (--set allocation.pattern=...)")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
