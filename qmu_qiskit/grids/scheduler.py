"""The scheduler: runs a grid's DAG on a cell pool, recording every step in the cell ledger.

A cell starts as soon as every cell it depends on is done; among ready cells the cell work's
``priority`` decides (studies: oracles before methods, so the long ones begin early), then what
the grid has learnt of its cells' cost (the optional ``cost_key``: cells like one that took long
start first, cells like none finished yet before them), then the grid's order. A cell is never
handed out twice: the scheduler holds the grid lock (one scheduler per grid), keeps at most one
open attempt per cell, and before starting a cell checks that no process holds the cell's run
directory (an orphaned worker of a killed scheduler, say) — it waits for that process instead.

On start it reconciles the ledger with the run directories: attempts left open by a dead
scheduler are closed as ``lost``; a run directory that is complete counts as done (recorded once,
so a cell whose worker finished just before the scheduler was killed is not run again); a cell
recorded done whose directory is gone is ``invalidated`` and runs again (the cell work's
``finished`` says which directories are complete). Interrupted cells resume from their
checkpoints (the cell work does that).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..exceptions import RunError
from ..io import LOCK_FILE, directory_lock
from .grid import Cell, Grid
from .ledger import CellLedger
from .worker import run_cell

logger = logging.getLogger(__name__)

EventFn = Callable[[str, "Cell | None", dict], None]


def lock_free(path: Path) -> bool:
    """Whether no process holds the run directory's lock (never creates the directory)."""
    if not (path / LOCK_FILE).exists():
        return True
    try:
        with directory_lock(path, what="run directory"):
            return True
    except RunError:
        return False


class Scheduler:
    """Runs one grid to the end (or until cancelled).

    Args:
        grid: the expanded grid.
        make_pool: builds the cell pool (called again if a worker process dies).
        cancel: set it to stop: no new cells start, running ones are stopped (resumable).
        on_event: ``fn(event, cell, info)`` for progress (``start``, ``done``, ``failed``,
            ``skip``, ``blocked``, ``lost``, ``waiting``, ``cancelled``, ``end``).
    """

    def __init__(
        self,
        grid: Grid,
        make_pool: Callable,
        *,
        cancel: threading.Event | None = None,
        on_event: EventFn | None = None,
    ):
        self.grid = grid
        self.make_pool = make_pool
        self.cancel = cancel or threading.Event()
        user = on_event or (lambda *a: None)

        def emit(event: str, cell, info: dict) -> None:
            if cell is not None:
                error = info.get("error") if isinstance(info, dict) else None
                # INFO, failures too: the command line prints each cell's event itself
                logger.info("cell %s: %s%s", cell.label, event, f" ({error})" if error else "")
            user(event, cell, info)

        self.on_event = emit
        self.ledger = CellLedger(grid.ledger_path)
        self.work = grid.cell_work()

    # ------------------------------------------------------------------ reconcile
    def _reconcile(self, session: str) -> tuple[dict[str, str], list[Cell]]:
        known = self.ledger.cells()
        state: dict[str, str] = {}
        lost = []
        for cell in self.grid.cells:
            status = known[cell.id]["status"]
            if status == "running" and lock_free(cell.path):
                self.ledger.record(cell.id, "lost", session=session)
                lost.append(cell)
                status = "interrupted"
            if self.work.finished(cell):
                if status != "done":
                    self.ledger.record(cell.id, "done", session=session, info={"reconciled": True})
                state[cell.id] = "done"
                continue
            if status == "done":  # its run directory was removed or replaced
                self.ledger.record(cell.id, "invalidated", session=session)
            state[cell.id] = "pending"
        return state, lost

    # ------------------------------------------------------------------ run
    def run(self) -> str:
        """Run the grid; returns ``complete``, ``failed`` or ``cancelled``."""
        ledger = self.ledger
        ledger.add_cells(self.grid.cells)
        session = ledger.start_session()
        final = "failed"
        try:
            final = self._run(session)
        finally:
            ledger.end_session(session, final)
            self.on_event("end", None, {"state": final})
        return final

    def _run(self, session: str) -> str:
        ledger = self.ledger
        state, lost = self._reconcile(session)
        done_before = sum(1 for s in state.values() if s == "done")
        self.on_event("plan", None, {"cells": len(self.grid.cells), "done": done_before})
        for cell in lost:
            self.on_event(
                "lost", cell, {"note": "interrupted earlier; resumes from its checkpoint"}
            )
        cells = {c.id: c for c in self.grid.cells}
        order = {c.id: i for i, c in enumerate(self.grid.cells)}
        static = {c.id: self.work.priority(c) for c in self.grid.cells}
        cost_key = getattr(self.work, "cost_key", None)
        keys: dict[str, str | None] = {
            c.id: cost_key(c) if cost_key is not None else None for c in self.grid.cells
        }
        took: dict[str, float] = {}  # cost key -> the longest finished cell's seconds

        def priority(cid: str) -> tuple:
            key = keys[cid]
            learnt = -took.get(key, float("inf")) if key is not None else 0.0
            return (static[cid], learnt, order[cid])

        lost_here: dict[str, int] = {}
        running: dict = {}
        waiting: set[str] = set()
        pool = None
        cancelled = False
        try:
            while True:
                if not cancelled and (self.cancel.is_set() or ledger.cancel_requested()):
                    cancelled = True
                    if pool is not None:
                        pool.terminate()
                if not cancelled:
                    for cid in sorted(
                        (c for c, s in state.items() if s == "pending"), key=order.__getitem__
                    ):
                        if any(state[d] in ("failed", "blocked") for d in cells[cid].deps):
                            state[cid] = "blocked"
                            ledger.record(cid, "blocked", session=session)
                            self.on_event("blocked", cells[cid], {})
                    ready = sorted(
                        (
                            c
                            for c, s in state.items()
                            if s == "pending" and all(state[d] == "done" for d in cells[c].deps)
                        ),
                        key=priority,
                    )
                    if pool is None and ready:
                        pool = self.make_pool()
                    skipped = False
                    for cid in ready:
                        assert pool is not None  # made above when anything is ready
                        if len(running) >= pool.workers:
                            break
                        cell = cells[cid]
                        if not lock_free(cell.path):
                            if cid not in waiting:
                                waiting.add(cid)
                                self.on_event("waiting", cell, {})
                            continue
                        waiting.discard(cid)
                        if ledger.cells()[cid]["status"] == "running":  # an orphan's attempt
                            ledger.record(cid, "lost", session=session)
                        if self.work.finished(cell):  # that orphan finished it
                            ledger.record(cid, "done", session=session, info={"reconciled": True})
                            state[cid] = "done"
                            self.on_event("skip", cell, {})
                            skipped = True
                            continue
                        attempt = ledger.record(cid, "submitted", session=session)
                        state[cid] = "running"
                        running[
                            pool.submit(run_cell, self.grid.work, cell.payload, pool.threads)
                        ] = cid
                        self.on_event("start", cell, {"attempt": attempt})
                if not running:
                    if not cancelled and skipped:
                        continue  # cells found finished may have made others ready
                    if cancelled or not waiting:
                        break
                    self.cancel.wait(1.0)  # a foreign process still holds a cell: wait for it
                    continue
                finished, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                broken = False
                for fut in finished:
                    cid = running.pop(fut)
                    cell = cells[cid]
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        result = None
                    if result is None:
                        if cancelled:
                            ledger.record(cid, "cancelled", session=session)
                            state[cid] = "pending"
                            self.on_event("cancelled", cell, {})
                            continue
                        lost_here[cid] = lost_here.get(cid, 0) + 1
                        if lost_here[cid] >= 2:
                            msg = "its worker process died twice (out of memory?); see the run directory"
                            ledger.record(cid, "failed", session=session, error=msg)
                            state[cid] = "failed"
                            self.on_event("failed", cell, {"error": msg})
                        else:
                            ledger.record(cid, "lost", session=session)
                            state[cid] = "pending"
                            self.on_event("lost", cell, {})
                    elif result["status"] == "done":
                        ledger.record(cid, "done", session=session, seconds=result["seconds"])
                        key = keys[cid]
                        if key is not None:
                            took[key] = max(took.get(key, 0.0), float(result["seconds"]))
                        state[cid] = "done"
                        self.on_event("done", cell, result)
                    elif cancelled and not self.work.finished(cell):
                        ledger.record(cid, "cancelled", session=session)
                        state[cid] = "pending"
                        self.on_event("cancelled", cell, {})
                    else:
                        ledger.record(
                            cid,
                            "failed",
                            session=session,
                            seconds=result["seconds"],
                            error=result["error"],
                        )
                        state[cid] = "failed"
                        self.on_event("failed", cell, result)
                if broken and not cancelled and pool is not None:
                    for fut in list(running):  # the whole pool is gone: the rest died too
                        cid = running.pop(fut)
                        ledger.record(cid, "lost", session=session)
                        state[cid] = "pending"
                        self.on_event("lost", cells[cid], {})
                    pool.shutdown()
                    pool = None
        finally:
            if pool is not None:
                if running:
                    pool.terminate()
                pool.shutdown()
                for cid in running.values():
                    ledger.record(cid, "cancelled", session=session)
        if cancelled:
            return "cancelled"
        if all(s == "done" for s in state.values()):
            return "complete"
        return "failed"
