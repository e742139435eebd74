"""``submit(spec) -> JobHandle``: the Python API of the job manager."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import QmuError, RunError
from ..io import directory_lock
from ..runs import sweep_scratch
from .executors import make_pool
from .grid import GRID_FILE, LEDGER_FILE, Grid, expand
from .ledger import CellLedger
from .scheduler import EventFn, Scheduler

#: Top-level metric keys that are not per-row numbers.
_SKIP_KEYS = {"execution", "history", "method_info", "sizes", "excluded"}


@dataclass
class GridStatus:
    """A grid's state.

    Attributes:
        name: the spec's name.
        path: the grid directory.
        state: ``running``, ``complete``, ``failed``, ``cancelled`` or ``incomplete``
            (interrupted, or never run: submit it again to resume).
        counts: cells per status (``done``, ``running``, ``pending``, ``failed``, ...).
        cells: one dict per cell (``id``, ``kind``, ``label``, ``status``, ``attempts``,
            ``seconds``, ``error``, ``path``).
        scheduler_pid: the process running the grid, when it is running.
    """

    name: str
    path: Path
    state: str
    counts: dict
    cells: list = field(default_factory=list)
    scheduler_pid: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("complete", "failed", "cancelled")

    def summary(self) -> str:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        return f"{self.name}: {self.state} ({parts})"


class JobHandle:
    """A submitted (or previously submitted) grid.

    Returned by :func:`submit` (the grid runs in a background thread of this process) and by
    :func:`open_grid` (an existing grid directory: status, results, cancel).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        thread: threading.Thread | None = None,
        cancel_event: threading.Event | None = None,
    ):
        self.path = Path(path)
        self._thread = thread
        self._cancel = cancel_event
        self._error: BaseException | None = None
        self._final: str | None = None

    def __repr__(self) -> str:
        return f"JobHandle({str(self.path)!r})"

    @property
    def grid(self) -> Grid:
        return Grid.load(self.path)

    # ------------------------------------------------------------------ state
    def status(self) -> GridStatus:
        """The grid's current state, read from its ledger."""
        grid = self.grid
        with CellLedger(grid.ledger_path) as ledger:
            rows = ledger.cells()
            last = ledger.last_session()
        cells = []
        counts: dict[str, int] = {}
        pid = _holder(self.path)
        alive = pid is not None or (self._thread is not None and self._thread.is_alive())
        for c in grid.cells:
            row = rows.get(c.id) or {
                "status": "pending",
                "attempts": 0,
                "seconds": None,
                "error": None,
            }
            status = row["status"]
            if status == "running" and not alive and _cell_lock_free(c.path):
                # the ledger says running, but no scheduler holds the grid and no process holds
                # the cell's run directory: its process died (SIGKILL, lost machine)
                status = "dead"
                row = {
                    **row,
                    "error": row.get("error")
                    or "its process died; submit the same spec again to resume it",
                }
            counts[status] = counts.get(status, 0) + 1
            cells.append(
                {
                    "id": c.id,
                    "kind": c.kind,
                    "label": c.label,
                    "status": status,
                    "attempts": row["attempts"],
                    "seconds": row["seconds"],
                    "error": row["error"],
                    "path": str(c.path),
                }
            )
        if alive:
            state = "running"
        elif counts.get("done", 0) == len(grid.cells):
            state = "complete"
        elif last is not None and last["state"] in ("cancelled", "failed"):
            state = last["state"]
        else:
            state = "incomplete"
        return GridStatus(grid.spec.name, self.path, state, counts, cells, pid)

    def done(self) -> bool:
        return not (self._thread is not None and self._thread.is_alive())

    def wait(self, timeout: float | None = None) -> GridStatus:
        """Block until the grid finishes (or ``timeout`` seconds pass) and return its status.

        Raises:
            QmuError: the scheduler itself failed (not a cell: failed cells are in the status).
        """
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        return self.status()

    def cancel(self) -> None:
        """Stop the grid: no new cells start; running cells are stopped and stay resumable
        (submit the spec again to go on). Works from another process too (``jobs cancel``)."""
        if self._cancel is not None:
            self._cancel.set()
        with CellLedger(self.path / LEDGER_FILE) as ledger:
            ledger.request_cancel()

    # ------------------------------------------------------------------ results
    def results(self) -> list[dict]:
        """One dict per finished cell: grid coordinates, metrics and cost.

        Teacher rows carry ``acc_train/val/test``; oracle and method rows the unlearning metrics
        (``acc_*_unlearn``, ``UQI``, ``KL_*``, ``MIA_AUC``, ...), ``seconds`` (the method's wall
        time), ``jobs`` and, for methods, ``oracle_seconds`` and ``speedup`` over retraining.
        """
        grid = self.grid
        rows = []
        oracle_seconds = {}
        for c in grid.cells:
            row = _row(c)
            if row is None:
                continue
            if c.kind == "oracle":
                oracle_seconds[c.id] = row.get("seconds")
            rows.append(row)
        for row, c in ((r, grid.cell(r["cell"])) for r in rows):
            if c.kind == "method":
                o = oracle_seconds.get(c.deps[0])
                row["oracle_seconds"] = o
                s = row.get("seconds")
                row["speedup"] = (o / s) if (o and s) else None
        return rows


def _cell_lock_free(path: Path) -> bool:
    from .scheduler import _lock_free

    try:
        return _lock_free(path)
    except QmuError:
        return False


def _row(cell) -> dict | None:
    from ..runs import RunDir, read_run_json

    run = RunDir(cell.path)
    if not run.is_complete():
        damage = run.damaged() if (run.status() or {}).get("status") == "complete" else None
        if damage is not None:
            raise RunError(
                f"cell {cell.label} is damaged ({damage}); run `qmu-qiskit jobs submit` with the "
                "same spec to recompute it"
            )
        return None
    metrics = read_run_json(cell.path / "metrics.json")
    cost = read_run_json(cell.path / "cost.json")
    c = cell.coords
    row = {
        "cell": cell.id,
        "kind": cell.kind,
        "dataset": c["dataset"],
        "model": c["model"],
        "backend": c["backend"],
        "seed": c["seed"],
        "forget": c["forget"],
        "method": c["method"],
        "method_registry": c.get("method_registry", c["method"]),
    }
    for k, v in metrics.items():
        if k in _SKIP_KEYS or k in row or isinstance(v, (dict, list)):
            continue
        row[k] = v
    if cell.kind != "teacher":
        from ..evaluation.tables import with_salun_names

        with_salun_names(row)
        row["mia_nonmembers"] = (metrics.get("evaluation") or {}).get("mia_nonmembers")
    phase = cost.get("train" if cell.kind == "teacher" else "method", {})
    row["seconds"] = phase.get("wall_seconds")
    row["jobs"] = phase.get("jobs")
    row["circuit_evaluations"] = phase.get("circuit_evaluations")
    row["finished"] = (run.status() or {}).get("finished")
    row["path"] = str(cell.path)
    return row


def _holder(path: Path) -> int | None:
    """The pid of the scheduler holding the grid lock, or ``None``."""
    lock = path / ".lock"
    if not lock.exists():
        return None
    try:
        with directory_lock(path, what="job grid"):
            return None
    except RunError:
        try:
            return int(lock.read_text().strip() or 0) or -1
        except (OSError, ValueError):
            return -1


def output_root(out: str | Path | None = None, out_dir: str | Path | None = None) -> Path:
    """The output directory of a grid call: ``out``, or its older name ``out_dir`` (default: the
    current directory, where a spec's ``out:`` defaults to ``runs/<name>``).

    Raises:
        BadInputError: both are given and differ.
    """
    if out is not None and out_dir is not None and Path(out) != Path(out_dir):
        from ..exceptions import BadInputError

        raise BadInputError(
            f"out ({out}) and out_dir ({out_dir}) are one setting (out_dir is "
            "its older name); give only out"
        )
    chosen = out if out is not None else out_dir
    return Path(chosen) if chosen is not None else Path(".")


def submit(
    spec,
    *,
    out: str | Path | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    workers: int | None = None,
    on_event: EventFn | None = None,
    max_cells: int | None = None,
) -> JobHandle:
    """Expand and validate a job spec, then run its grid in a background thread.

    Args:
        spec: a YAML path (``jobs/<name>.yaml``), a mapping or a :class:`JobSpec`.
        out: the output directory (default: the current one); the spec's ``out`` (default
            ``runs/<name>``) is relative to it and may not leave it. The grid's directory is
            ``handle.path``.
        out_dir: the older name of ``out``.
        data_dir: folder with MNIST / Fashion-MNIST (torchvision's layout: ``MNIST/raw``, ``FashionMNIST/raw``).
        methods: run only these methods (labels or registry names).
        seeds: run only these seeds.
        workers: parallel cells (default: the spec's, else one per core).
        on_event: progress callback ``fn(event, cell, info)``.
        max_cells: refuse a grid of more cells (default ``jobs.grid.MAX_CELLS``).

    Returns:
        A :class:`JobHandle`; ``handle.wait()`` blocks until the grid is finished.

    Raises:
        BadInputError: an invalid spec (one line naming the field), before anything runs.
        RunError: the grid is already being run by another process.

    Example:
        >>> from qmu_qiskit import jobs
        >>> handle = jobs.submit("jobs/hqml_iris.yaml")          # doctest: +SKIP
        >>> handle.wait().state                                   # doctest: +SKIP
        'complete'
        >>> rows = handle.results()                               # doctest: +SKIP
    """
    grid = expand(
        spec,
        root=output_root(out, out_dir),
        data_dir=data_dir,
        methods=methods,
        seeds=seeds,
        max_cells=max_cells,
    )
    grid.dir.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    stack.enter_context(directory_lock(grid.dir, what="job grid"))
    try:
        sweep_scratch(grid.dir, grid.dir / "plots")  # what a killed scheduler or report left
        grid.save()
        with CellLedger(grid.ledger_path) as ledger:
            ledger.clear_cancel()  # a new submission supersedes an earlier cancel
    except BaseException:
        stack.close()
        raise
    cancel = threading.Event()
    handle = JobHandle(grid.dir, cancel_event=cancel)
    executor = grid.spec.executor

    def main() -> None:
        try:
            scheduler = Scheduler(
                grid, lambda: make_pool(executor, workers=workers), cancel=cancel, on_event=on_event
            )
            try:
                handle._final = scheduler.run()
            finally:
                scheduler.ledger.close()
        except BaseException as exc:
            handle._error = exc
        finally:
            stack.close()

    thread = threading.Thread(target=main, name=f"qmu-grid-{grid.spec.name}", daemon=False)
    handle._thread = thread
    thread.start()
    return handle


def open_grid(
    target: str | Path, *, out: str | Path | None = None, out_dir: str | Path | None = None
) -> JobHandle:
    """A handle on an existing grid: its directory, or the spec that made it.

    Raises:
        RunError: no grid there.
        BadInputError: an invalid spec.
    """
    target = Path(target)
    if target.is_file():
        from .spec import load_spec

        path = load_spec(target).out_dir(output_root(out, out_dir))
    else:
        path = target
    if not (path / GRID_FILE).exists():
        raise RunError(f"no job grid at {path}; submit one with `qmu-qiskit jobs submit SPEC`")
    return JobHandle(path)


def list_grids(root: str | Path = ".", *, depth: int = 3) -> list[JobHandle]:
    """Grids under ``root`` (their ``grid.json`` at most ``depth`` folders down)."""
    root = Path(root)
    found: list[Path] = []
    for d in range(depth + 1):
        pattern = "/".join(["*"] * d + [GRID_FILE])
        found.extend(p.parent for p in root.glob(pattern))
    return [JobHandle(p) for p in sorted(set(found))]
