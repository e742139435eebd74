"""``start(grid) -> JobHandle``: run a grid in a background thread; status, wait, cancel, results.

Studies submit their grids through :func:`qmu_qiskit.studies.submit`, which expands a study spec
and calls :func:`start`.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import QmuError, RunError
from ..io import LOCK_FILE, directory_lock
from ..runs import sweep_scratch
from .grid import GRID_FILE, LEDGER_FILE, Grid
from .ledger import CellLedger
from .pools import make_pool
from .scheduler import EventFn, Scheduler, lock_free


@dataclass
class GridStatus:
    """A grid's state.

    Attributes:
        name: the grid's name.
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

    Returned by :func:`start` (the grid runs in a background thread of this process) and by
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
        return GridStatus(grid.name, self.path, state, counts, cells, pid)

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
        """One dict per finished cell (its coordinates and results), from the grid's cell work
        (studies: :func:`qmu_qiskit.studies.cells.rows`)."""
        grid = self.grid
        return grid.cell_work().rows(grid)


def _cell_lock_free(path: Path) -> bool:
    try:
        return lock_free(path)
    except QmuError:
        return False


def _holder(path: Path) -> int | None:
    """The pid of the scheduler holding the grid lock, or ``None``."""
    lock = path / LOCK_FILE
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


def start(
    grid: Grid,
    *,
    workers: int | None = None,
    on_event: EventFn | None = None,
    scratch: tuple[Path, ...] = (),
    what: str = "job grid",
) -> JobHandle:
    """Save a grid and run it in a background thread of this process.

    The grid lock is taken here (one scheduler per grid) and held until the grid ends; leftovers
    of a killed scheduler in the grid directory (and in the ``scratch`` folders) are swept first.

    Args:
        grid: the grid (its cells, cell work and pool).
        workers: parallel cells (default: the pool's, else one per core).
        on_event: progress callback ``fn(event, cell, info)``.
        scratch: further folders to sweep of temporary files before the grid runs.
        what: what the lock error calls the grid.

    Returns:
        A :class:`JobHandle`; ``handle.wait()`` blocks until the grid is finished.

    Raises:
        RunError: the grid is already being run by another process.
    """
    grid.dir.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    stack.enter_context(directory_lock(grid.dir, what=what))
    try:
        sweep_scratch(grid.dir, *scratch)
        grid.save()
        with CellLedger(grid.ledger_path) as ledger:
            ledger.clear_cancel()  # a new submission supersedes an earlier cancel
    except BaseException:
        stack.close()
        raise
    cancel = threading.Event()
    handle = JobHandle(grid.dir, cancel_event=cancel)
    pool = grid.pool

    def main() -> None:
        try:
            scheduler = Scheduler(
                grid, lambda: make_pool(pool, workers=workers), cancel=cancel, on_event=on_event
            )
            try:
                handle._final = scheduler.run()
            finally:
                scheduler.ledger.close()
        except BaseException as exc:
            handle._error = exc
        finally:
            stack.close()

    thread = threading.Thread(target=main, name=f"qmu-grid-{grid.name}", daemon=False)
    handle._thread = thread
    thread.start()
    return handle


def open_grid(path: str | Path) -> JobHandle:
    """A handle on an existing grid directory.

    Raises:
        RunError: no grid there.
    """
    path = Path(path)
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
