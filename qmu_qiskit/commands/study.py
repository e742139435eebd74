"""``qmu-qiskit study studies/<name>.yaml``: run a protocol's grid and write its report."""

from __future__ import annotations

import click

from ..cli import CONTEXT
from .dry_run import dry_run_option
from .grid import ProgressPrinter, finish, out_option, wait_interruptibly


@click.command(context_settings=CONTEXT)
@dry_run_option("study")
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
    help="Cells run in parallel (default: one per core).",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    help="Run only this method (repeatable); the report says so.",
)
@click.option("--seed", "seeds", type=int, multiple=True, help="Run only this seed (repeatable).")
@click.option(
    "--report-only",
    is_flag=True,
    help="Rewrite the CSVs, report and plots from the finished cells; run nothing.",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--quiet", is_flag=True, help="Print only failures and the summary.")
@click.option(
    "--max-cells",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Allow a grid of up to N cells (default 5000).",
)
def study(
    spec, out_dir, data_dir, workers, methods, seeds, report_only, no_plots, quiet, max_cells
):
    """Run a study protocol (hqml, fixed, qmu, dgqmu) from SPEC through the job manager.

    \b
    Writes into the grid directory (the spec's `out:`, default runs/<name>):
      results_summary.csv            HQML's columns first, then ours; one row per cell
      results_summary_mean_std.csv   mean, std, 95% t-interval over seeds (several seeds)
      report.md, plots/*.png         forget vs retain accuracy; MIA ROC curves
    Resumable: an interrupted study finishes only what is missing when run again.
    """
    from .. import studies as api
    from ..studies import write_outputs

    if report_only:
        handle = api.open_grid(spec, out_dir=out_dir)
        status = handle.status()
    else:
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
    outputs = write_outputs(handle.path, plots=not no_plots)
    if (
        not report_only
        and status.state == "complete"
        and handle.grid.spec.metrics.audit is not None
    ):
        from ..studies.run import run_audits

        click.echo(f"audit: {run_audits(handle, workers=workers, on_event=ProgressPrinter(True))}")
    click.echo(f"summary: {outputs.summary}")
    if outputs.mean_std is not None:
        click.echo(f"mean ± std: {outputs.mean_std}")
    click.echo(
        f"report: {outputs.report}" + (f" ({len(outputs.plots)} plots)" if outputs.plots else "")
    )
    finish(status, str(outputs.report))
