"""``qmu-qiskit jobs submit|status|results|cancel|list``: batch grids from YAML specs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..cli import CONTEXT, print_table
from ..exceptions import JobError

OUT_DIR_HELP = (
    "Output directory the spec's `out:` (default runs/<name>) is relative to, and may "
    "not leave (default: the current directory; --out-dir is its older name)."
)


def out_option(help_text: str = OUT_DIR_HELP):
    """``--out`` (``--out-dir`` kept as an alias): one output option on every command."""
    return click.option(
        "--out",
        "--out-dir",
        "out_dir",
        type=click.Path(file_okay=False),
        default=".",
        show_default=True,
        help=help_text,
    )


class ProgressPrinter:
    """One line per cell event (readable in terminals and CI logs alike)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.total = 0
        self.finished = 0
        self.t0 = time.perf_counter()

    def __call__(self, event: str, cell, info: dict) -> None:
        if event == "plan":
            self.total, self.finished = info["cells"], info["done"]
            if not self.quiet:
                click.echo(f"grid: {self.total} cells, {self.finished} already finished")
            return
        if event == "end" or cell is None:
            return
        if event in ("done", "failed", "skip", "blocked"):
            self.finished += 1
        if self.quiet and event not in ("failed",):
            return
        seconds = info.get("seconds")
        tail = f"  {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
        if event == "failed" and info.get("error"):
            tail = f"  {info['error']}"
        width = len(str(self.total))
        click.echo(f"[{self.finished:>{width}}/{self.total}] {event:<9} {cell.label}{tail}")


@click.group(context_settings=CONTEXT)
def jobs():
    """Batch jobs: run a grid of train/unlearn cells from a YAML spec, resumably.

    \b
    A spec (jobs/*.yaml) lists datasets, models, methods, forget scenarios, seeds and backends;
    each combination is a cell: teachers, then one retrain oracle per forget scenario, then the
    methods. Interrupted grids resume when the same spec is submitted again.
    \b
      qmu-qiskit jobs submit jobs/hqml_iris.yaml
      qmu-qiskit jobs status jobs/hqml_iris.yaml
      qmu-qiskit jobs results runs/hqml_iris --format csv
    """


@jobs.command(context_settings=CONTEXT)
@click.argument("spec", type=click.Path(dir_okay=False))
@out_option()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder with MNIST/raw and FashionMNIST/raw (torchvision's layout).",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Cells run in parallel (default: one per core; Aer/torch threads are divided between them).",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    help="Run only this method (repeatable; label or registry name).",
)
@click.option("--seed", "seeds", type=int, multiple=True, help="Run only this seed (repeatable).")
@click.option("--quiet", is_flag=True, help="Print only failures and the summary.")
@click.option(
    "--max-cells",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Allow a grid of up to N cells (default 5000).",
)
def submit(spec, out_dir, data_dir, workers, methods, seeds, quiet, max_cells):
    """Run the grid of SPEC in the foreground, with one line per finished cell.

    Finished cells are skipped, interrupted ones resume from their checkpoints; Ctrl-C stops the
    grid (run the same command again to go on). Exits non-zero if a cell failed.
    """
    from .. import studies as api

    printer = ProgressPrinter(quiet)
    handle = api.submit(
        spec,
        out_dir=out_dir,
        data_dir=data_dir,
        workers=workers,
        methods=list(methods) or None,
        seeds=list(seeds) or None,
        on_event=printer,
        max_cells=max_cells,
    )
    click.echo(f"grid directory: {handle.path}")
    status = wait_interruptibly(handle)
    finish(status, f"qmu-qiskit jobs results {handle.path}")


def wait_interruptibly(handle):
    try:
        return handle.wait()
    except KeyboardInterrupt:
        click.echo("stopping: running cells are stopped and stay resumable ...", err=True)
        handle.cancel()
        handle.wait()
        raise


def finish(status, next_step: str) -> None:
    click.echo(status.summary())
    if status.state == "complete":
        click.echo(f"results: {next_step}")
        return
    failed = [c for c in status.cells if c["status"] in ("failed", "blocked")]
    if failed:
        first = next((c for c in failed if c["error"]), failed[0])
        raise JobError(
            f"{len(failed)} of {len(status.cells)} cells did not finish (first: {first['label']}: "
            f"{first['error'] or first['status']}); fix the cause and submit the same spec again "
            "to resume"
        )
    raise JobError(f"the grid stopped ({status.state}); submit the same spec again to resume")


@jobs.command(context_settings=CONTEXT)
@click.argument("target", type=click.Path())
@out_option()
@click.option(
    "--all", "show_all", is_flag=True, help="List every cell, not only the unfinished ones."
)
def status(target, out_dir, show_all):
    """State of a grid: counts per status and the cells not finished.

    TARGET is a grid directory or the spec that made it.
    """
    from .. import studies as api

    st = api.open_grid(target, out_dir=out_dir).status()
    running = (
        f" (scheduler pid {st.scheduler_pid})" if st.scheduler_pid and st.scheduler_pid > 0 else ""
    )
    click.echo(f"{st.summary()}{running}  [{st.path}]")
    cells = st.cells if show_all else [c for c in st.cells if c["status"] != "done"]
    if cells:
        print_table(
            cells,
            [
                ("cell", "label"),
                ("status", "status"),
                ("attempts", "attempts"),
                ("s", "seconds"),
                ("error", "error"),
            ],
        )


@jobs.command(context_settings=CONTEXT)
@click.argument("target", type=click.Path())
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Output directory the spec was submitted with (only when TARGET is a spec).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--output",
    "--out",
    "output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to this file instead of stdout (csv/json).",
)
def results(target, out_dir, fmt, output):
    """Metrics of every finished cell of a grid."""
    from .. import studies as api

    rows = api.open_grid(target, out_dir=out_dir).results()
    if fmt == "table":
        rows = [r for r in rows if r["kind"] != "teacher"]
        print_table(
            rows,
            [
                ("kind", "kind"),
                ("dataset", "dataset"),
                ("model", "model"),
                ("seed", "seed"),
                ("forget", "forget"),
                ("method", "method"),
                ("acc_retain", "acc_retain_unlearn"),
                ("acc_forget", "acc_forget_unlearn"),
                ("acc_test", "acc_test_unlearn"),
                ("UQI", "UQI"),
                ("MIA_AUC", "MIA_AUC"),
                ("UA", "UA"),
                ("RA", "RA"),
                ("TA", "TA"),
                ("MIA-Efficacy", "MIA_Efficacy"),
                ("s", "seconds"),
            ],
        )
        return
    if fmt == "json":
        text = json.dumps(rows, indent=2, default=str) + "\n"
    else:
        from ..studies.report import csv_text

        columns = list(dict.fromkeys(k for r in rows for k in r))
        text = csv_text(rows, columns)
    if output:
        from ..io import atomic_write_text

        atomic_write_text(Path(output), text)
        click.echo(f"wrote {len(rows)} rows to {output}")
    else:
        click.echo(text, nl=False)


@jobs.command(context_settings=CONTEXT)
@click.argument("target", type=click.Path())
@out_option()
def cancel(target, out_dir):
    """Stop a running grid: no new cells start, running cells stop and stay resumable."""
    from .. import studies as api

    handle = api.open_grid(target, out_dir=out_dir)
    handle.cancel()
    st = handle.status()
    if st.state == "running":
        click.echo(
            f"cancel requested; the scheduler (pid {st.scheduler_pid}) stops within a second"
        )
    else:
        click.echo(f"{st.summary()}: nothing is running; the next submission clears the request")


@jobs.command("list", context_settings=CONTEXT)
@out_option("Where to look for grids (--out-dir is its older name).")
def list_(out_dir):
    """Grids under the output directory and their state."""
    from .. import studies as api

    rows = []
    for handle in api.list_grids(out_dir):
        st = handle.status()
        rows.append(
            {
                "name": st.name,
                "state": st.state,
                "done": st.counts.get("done", 0),
                "cells": len(st.cells),
                "path": str(st.path),
            }
        )
    if not rows:
        click.echo(f"no job grids under {out_dir}")
        return
    print_table(
        rows,
        [
            ("name", "name"),
            ("state", "state"),
            ("done", "done"),
            ("cells", "cells"),
            ("path", "path"),
        ],
    )
