"""``qmu-qiskit results PATH...``: one table of any runs — plain runs, forget folders, grids.

Each PATH may be a run directory (a teacher: its row and those of every unlearning run under
it), an unlearning run, a forget folder, a grid (its cells, with their grid coordinates), or any
folder holding some of these (searched a few levels down). Symbolic links are never followed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..exceptions import BadInputError
from ..runs import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    COST_FILE,
    EVALUATIONS_DIR,
    LEDGER_DIR,
    METRICS_FILE,
    STATUS_FILE,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: How many folders below a PATH runs and grids are searched for.
MAX_DEPTH = 6

#: (header, key) of the printed table.
TABLE_COLUMNS = [
    ("kind", "kind"),
    ("dataset", "dataset"),
    ("model", "model"),
    ("backend", "backend"),
    ("seed", "seed"),
    ("forget", "forget"),
    ("method", "method"),
    ("acc_retain", "acc_retain"),
    ("acc_forget", "acc_forget"),
    ("acc_test", "acc_test"),
    ("UQI", "UQI"),
    ("MIA_AUC", "MIA_AUC"),
    ("UA", "UA"),
    ("RA", "RA"),
    ("TA", "TA"),
    ("MIA-Efficacy", "MIA_Efficacy"),
    ("s", "seconds"),
]
_FIRST = [
    "source",
    "kind",
    "dataset",
    "model",
    "backend",
    "seed",
    "forget",
    "method",
    "acc_retain",
    "acc_forget",
    "acc_test",
]


def _read(path: Path) -> dict:
    from ..io import read_json

    if path.is_symlink() or not path.is_file():
        return {}
    try:
        return read_json(path)
    except Exception:
        return {}


def _config(run: Path) -> dict:
    import yaml

    path = run / CONFIG_FILE
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


def _complete(run: Path) -> bool:
    return _read(run / STATUS_FILE).get("status") == "complete"


def run_row(run: Path) -> dict | None:
    """The row of one complete run directory (``None`` for anything else)."""
    from ..evaluation.tables import method_row

    if not _complete(run):
        return None
    cfg = _config(run)
    metrics = _read(run / METRICS_FILE)
    cost = _read(run / COST_FILE)
    if cfg.get("kind") == "train":
        row = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
        phase = cost.get("train", {})
        row.update(
            {
                "kind": "teacher",
                "dataset": (cfg.get("data") or {}).get("dataset"),
                "model": (cfg.get("model") or {}).get("name"),
                "backend": (cfg.get("backend") or {}).get("name"),
                "seed": cfg.get("seed"),
                "acc_test": metrics.get("acc_test"),
                "seconds": phase.get("wall_seconds"),
                "jobs": phase.get("jobs"),
                "path": str(run),
            }
        )
        return row
    if cfg.get("kind") != "unlearn":
        return None
    teacher = _config(run.parents[2]) if len(run.parents) > 2 else {}
    if teacher.get("kind") != "train":
        teacher = _config(Path(str(cfg.get("teacher", ""))))
    method = cfg.get("method") or run.name
    row = method_row(method, metrics, cost, path=run)
    row.update(
        {
            "kind": "oracle" if method == "retrain" else "method",
            "dataset": (teacher.get("data") or {}).get("dataset"),
            "model": (teacher.get("model") or {}).get("name"),
            "backend": (cfg.get("backend") or {}).get("name"),
            "seed": cfg.get("seed"),
            "forget": (cfg.get("forget") or {}).get("spec"),
            "acc_retain": metrics.get("acc_retain_unlearn"),
            "acc_forget": metrics.get("acc_forget_unlearn"),
            "acc_test": metrics.get("acc_test_unlearn"),
        }
    )
    if run.name != method:
        row["method"] = run.name  # a labelled variant (e.g. dg_uniform)
    return row


def grid_rows(grid_dir: Path) -> list[dict]:
    """The rows of a grid's finished cells, with its name as their source."""
    from ..grids.grid import Grid
    from ..grids.handle import GridHandle

    name = Grid.load(grid_dir).name
    rows = []
    for r in GridHandle(grid_dir).results():
        r = dict(r)
        r["source"] = name
        teacher = r["kind"] == "teacher"
        r["acc_retain"] = None if teacher else r.get("acc_retain_unlearn")
        r["acc_forget"] = None if teacher else r.get("acc_forget_unlearn")
        r["acc_test"] = r.get("acc_test") if teacher else r.get("acc_test_unlearn")
        rows.append(r)
    return rows


def collect(paths: list[str | os.PathLike]) -> list[dict]:
    """Rows of every run and grid found at or under ``paths`` (each run once).

    Raises:
        BadInputError: a PATH does not exist or holds no run.
    """
    from ..grids.grid import GRID_FILE

    rows: list[dict] = []
    seen: set[Path] = set()
    for given in paths:
        top = Path(given)
        if not top.is_dir():
            raise BadInputError(
                f"{top} is not a folder; pass run directories, grids or folders "
                "holding them (e.g. runs/)"
            )
        before = len(rows)
        stack = [(top, 0)]
        while stack:
            folder, depth = stack.pop()
            real = folder.resolve()
            if real in seen:
                continue
            seen.add(real)
            if (folder / GRID_FILE).is_file() and not (folder / GRID_FILE).is_symlink():
                rows.extend(grid_rows(folder))
                continue  # its cells are in its rows
            if (folder / STATUS_FILE).is_file():
                row = run_row(folder)
                if row is not None:
                    row.setdefault("source", top.name or str(top))
                    rows.append(row)
            if depth >= MAX_DEPTH:
                continue
            try:
                with os.scandir(folder) as it:
                    subs = sorted(
                        (
                            Path(e.path)
                            for e in it
                            if e.is_dir(follow_symlinks=False)
                            and not e.name.startswith(".")
                            and e.name
                            not in (CHECKPOINTS_DIR, LEDGER_DIR, EVALUATIONS_DIR, "plots")
                        ),
                        key=lambda p: (p.name != "retrain", p.name),
                    )  # the oracle first
            except OSError:
                continue
            stack.extend((s, depth + 1) for s in reversed(subs))
        if len(rows) == before:
            raise BadInputError(
                f"no complete run or grid under {top}; pass a run directory "
                "(from train or unlearn), a grid, or a folder holding them"
            )
    return rows


def columns(rows: list[dict]) -> list[str]:
    """CSV/JSON columns: the grid point, the shared table's, then every other key."""
    from ..evaluation.tables import csv_columns

    rest = csv_columns(rows)
    first = [k for k in _FIRST if any(k in r for r in rows)]
    return first + [k for k in rest if k not in first]


@click.command("results", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "markdown"]),
    default="table",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to this file instead of stdout.",
)
@click.option(
    "--teachers/--no-teachers", default=True, show_default=True, help="Include the teachers' rows."
)
def results(paths, fmt, out, teachers):
    """One table of any runs: PATH may be a run, a forget folder, a grid or a folder of them.

    \b
    Examples:
      qmu-qiskit results runs/                       # everything under runs/
      qmu-qiskit results runs/demo-iris runs/fixed_iris --format csv --out all.csv
    """
    from ..cli import print_table
    from ..evaluation.tables import csv_text, markdown_table

    rows = collect(list(paths))
    if not teachers:
        rows = [r for r in rows if r.get("kind") != "teacher"]
    if fmt == "table" and out is None:
        print_table(rows, TABLE_COLUMNS)
        return
    if fmt == "json":
        text = json.dumps(rows, indent=2, default=str) + "\n"
    elif fmt == "markdown" or fmt == "table":
        text = markdown_table(rows, TABLE_COLUMNS)
    else:
        text = csv_text(rows, columns(rows))
    if out:
        from ..io import atomic_write_text

        atomic_write_text(Path(out), text)
        click.echo(f"wrote {len(rows)} rows to {out}")
    else:
        click.echo(text, nl=False)
