"""``qmu-qiskit reproduce RUN``: re-execute a finished run and judge every metric's difference."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click

from ..cli import CONTEXT, _fmt


@click.command(context_settings=CONTEXT)
@click.argument("run_path", type=click.Path(file_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Scratch folder for the re-execution (default: <RUN>/../<name>.reproduce).",
)
@click.option(
    "--spread-seeds",
    type=click.IntRange(0, 20),
    default=2,
    show_default=True,
    help="Further training seeds run to measure the seed-to-seed spread of each metric.",
)
@click.option(
    "--z",
    type=click.FloatRange(0, 10, min_open=True),
    default=2.0,
    show_default=True,
    help="Tolerance in seed standard deviations.",
)
def reproduce(run_path, out, spread_seeds, z):
    """Re-execute a finished run from its recorded config and compare every metric.

    \b
    RUN is a teacher run (reproduced with every finished unlearning run below it) or one
    unlearning run (reproduced with its teacher). Each metric is reported as
      identical     equal to 1e-9 (same machine, same thread count: the expected case)
      within noise  |difference| <= z x the seed-to-seed standard deviation
      differs       otherwise: a real difference (exit code 1)
    The spread comes from --spread-seeds further training seeds (the data split is kept).
    Writes reproduce.csv into the scratch folder.
    """
    from ..reproduce import reproduce as run_reproduce

    src = Path(run_path)
    out = Path(out) if out else src.parent / f"{src.name}.reproduce"
    result = run_reproduce(src, out, spread_seeds=spread_seeds, z=z)
    rows = result.rows()
    width = max([len(r["run"]) + len(r["metric"]) + 1 for r in rows] + [10])
    click.echo(
        f"{'run/metric':<{width}}  {'recorded':>9}  {'reproduced':>10}  {'|diff|':>8}  "
        f"{'seed std':>8}  verdict"
    )
    for r in rows:
        name = f"{r['run']}:{r['metric']}"
        click.echo(
            f"{name:<{width}}  {_fmt(r['recorded'], 4):>9}  {_fmt(r['reproduced'], 4):>10}  "
            f"{r['abs_diff']:>8.1e}  {_fmt(r['seed_std'], 4):>8}  {r['verdict']}"
        )
    path = out / "reproduce.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["run"])
        writer.writeheader()
        writer.writerows(rows)
    counts = {
        v: sum(r["verdict"] == v for r in rows) for v in ("identical", "within noise", "differs")
    }
    click.echo(
        f"seeds {result.seeds}: {counts['identical']} identical, {counts['within noise']} "
        f"within noise, {counts['differs']} differ; table: {path}"
    )
    if not result.ok:
        sys.exit(1)
