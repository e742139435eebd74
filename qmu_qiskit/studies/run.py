"""Run a study: its grid through the job manager, then its outputs."""

from __future__ import annotations

from pathlib import Path

from ..jobs.handle import submit
from ..jobs.scheduler import EventFn
from .report import StudyOutputs, write_outputs


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
        spec: the study's YAML path (or a mapping / :class:`~qmu_qiskit.jobs.JobSpec`).
        out, out_dir, data_dir, methods, seeds, workers, on_event: as
            :func:`qmu_qiskit.jobs.submit`.
        plots: draw the PNG plots.

    Returns:
        The paths written and the summary rows; ``.state`` is the grid's final state.
    """
    handle = submit(spec, out=out, out_dir=out_dir, data_dir=data_dir, methods=methods, seeds=seeds,
                    workers=workers, on_event=on_event)
    try:
        handle.wait()
    except KeyboardInterrupt:
        handle.cancel()
        handle.wait()
        raise
    return write_outputs(handle.path, plots=plots)
