"""Run a study: its grid through the job manager, then its outputs."""

from __future__ import annotations

from pathlib import Path

from ..jobs.scheduler import EventFn
from .grid import submit
from .report import StudyOutputs, write_outputs
from .spec import filled_in


def run_study(
    spec,
    *,
    out: str | Path | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    workers: int | None = None,
    on_event: EventFn | None = None,
    plots: bool = True,
) -> StudyOutputs:
    """Run a study spec (``jobs/<name>.yaml``) to the end and write its outputs.

    The grid is resumable like any job: if interrupted, running the study again finishes only
    what is missing. Outputs are written even when some cells failed (the report lists them).

    Args:
        spec: the study's YAML path (or a mapping / :class:`~qmu_qiskit.studies.StudySpec`).
        out, out_dir, data_dir, methods, seeds, workers, on_event: as
            :func:`qmu_qiskit.studies.submit`.
        plots: draw the PNG plots.

    Returns:
        The paths written and the summary rows; ``.state`` is the grid's final state.
    """
    handle = submit(
        spec,
        out=out,
        out_dir=out_dir,
        data_dir=data_dir,
        methods=methods,
        seeds=seeds,
        workers=workers,
        on_event=on_event,
    )
    try:
        handle.wait()
    except KeyboardInterrupt:
        handle.cancel()
        handle.wait()
        raise
    outputs = write_outputs(handle.path, plots=plots)
    if filled_in(handle.grid.spec.metrics, "metrics").audit is not None:
        run_audits(handle, workers=workers, on_event=on_event)
    return outputs


def run_audits(handle, *, workers: int | None = None, on_event: EventFn | None = None) -> Path:
    """The per-example audits a spec asks for (``metrics: {audit: {shadows: S}}``): one per
    finished method cell (optionally only ``audit.methods``), sharing each teacher's shadow
    teachers; one row per audit in ``audit_summary.csv`` of the grid directory.

    Returns:
        The CSV's path.
    """
    import csv
    import io

    from ..audit import audit
    from ..io import atomic_write_text
    from ..runs import RunDir

    grid = handle.grid
    want = grid.spec.metrics.audit
    rows = []
    for cell in grid.cells:
        if cell.kind != "method" or not RunDir(cell.path).is_complete():
            continue
        label = cell.coords["method"]
        if want.methods is not None and label not in want.methods:
            continue
        p = cell.payload
        res = audit(
            p["teacher"],
            p["forget"],
            p["method"],
            shadows=want.shadows,
            seed=want.seed,
            options=p["options"].get(p["method"], {}),
            workers=workers,
            out=Path(p["teacher"]) / "audit" / cell.path.parent.name / label,
            fixed_variance=want.fixed_variance,
            teachers=want.teachers,
            on_event=on_event,
        )
        s = res.summary
        rows.append(
            {
                "dataset": cell.coords["dataset"],
                "seed": cell.coords["seed"],
                "forget": p["forget"],
                "method": label,
                "shadows": want.shadows,
                "ulira_success": s["success"],
                "ulira_auc": s["auc"],
                "tpr_at_1pct_fpr": s["tpr_at_fpr"]["0.01"],
                "tpr_at_0.1pct_fpr": s["tpr_at_fpr"]["0.001"],
                "epsilon_median": s["epsilon"]["median"],
                "forgetting_quality": s["forgetting_quality"],
                "audit": str(res.out),
            }
        )
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    path = grid.dir / "audit_summary.csv"
    atomic_write_text(path, buf.getvalue())
    return path
