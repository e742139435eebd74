"""The cell ledger: every submission and completion of every cell of a grid (SQLite).

Only the scheduler writes it (workers may run on other machines), inside the grid lock, so one
writer at a time. Events are append-only; a cell's current status is kept beside them. An
attempt opens with ``submitted`` and closes with ``done``, ``failed``, ``cancelled`` or ``lost``
(its process died: the next scheduler finds the attempt open and the cell's run directory
unlocked). :meth:`CellLedger.duplicate_submissions` and :meth:`CellLedger.duplicate_completions`
check the two promises of the job manager — no cell submitted while an attempt of it is open or
after it completed, and no cell completed twice — and must always be empty.

The database is created user-only (0600), like the circuit job ledger
(:class:`qmu_qiskit.execution.ledger.JobLedger`), whose conventions it follows (WAL, busy
timeout, one connection per process and thread).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid

from ..io import PrivateSQLite

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    seconds REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_id TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER,
    session TEXT,
    pid INTEGER,
    at REAL NOT NULL,
    info TEXT
);
CREATE INDEX IF NOT EXISTS events_cell ON events (cell_id);
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT,
    started REAL NOT NULL,
    ended REAL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS control (
    key TEXT PRIMARY KEY,
    value TEXT
);
"""

#: event → the cell status it leaves behind
STATUS_AFTER = {
    "submitted": "running",
    "done": "done",
    "failed": "failed",
    "cancelled": "cancelled",
    "lost": "interrupted",
    "blocked": "blocked",
    "invalidated": "pending",
}
CLOSING = ("done", "failed", "cancelled", "lost")


class CellLedger(PrivateSQLite):
    """SQLite record of a grid's cells.

    Args:
        path: the database file (created 0600 if missing).
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, SCHEMA)

    def __enter__(self) -> CellLedger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions
    def start_session(self) -> str:
        session = f"s-{uuid.uuid4().hex[:12]}"
        self._conn().execute(
            "INSERT INTO sessions (session, pid, host, started, state) VALUES (?, ?, ?, ?, 'running')",
            (session, os.getpid(), socket.gethostname(), time.time()),
        )
        return session

    def end_session(self, session: str, state: str) -> None:
        self._conn().execute(
            "UPDATE sessions SET ended = ?, state = ? WHERE session = ?",
            (time.time(), state, session),
        )

    def last_session(self) -> dict | None:
        row = (
            self._conn()
            .execute(
                "SELECT session, pid, host, started, ended, state FROM sessions ORDER BY started DESC LIMIT 1"
            )
            .fetchone()
        )
        if row is None:
            return None
        return dict(zip(("session", "pid", "host", "started", "ended", "state"), row))

    # ------------------------------------------------------------------ cells
    def add_cells(self, cells) -> None:
        """Register cells (``pending``) that the ledger does not know yet."""
        now = time.time()
        conn = self._conn()
        with _transaction(conn):
            for c in cells:
                conn.execute(
                    "INSERT OR IGNORE INTO cells (cell_id, kind, label, path, status, updated) "
                    "VALUES (?, ?, ?, ?, 'pending', ?)",
                    (c.id, c.kind, c.label, str(c.path), now),
                )

    def record(
        self,
        cell_id: str,
        event: str,
        *,
        session: str | None = None,
        info: dict | None = None,
        seconds: float | None = None,
        error: str | None = None,
    ) -> int:
        """Append an event and update the cell's status. Returns the attempt number."""
        conn = self._conn()
        now = time.time()
        with _transaction(conn):
            row = conn.execute(
                "SELECT attempts FROM cells WHERE cell_id = ?", (cell_id,)
            ).fetchone()
            attempts = int(row[0]) if row else 0
            if event == "submitted":
                attempts += 1
            conn.execute(
                "INSERT INTO events (cell_id, event, attempt, session, pid, at, info) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    cell_id,
                    event,
                    attempts,
                    session,
                    os.getpid(),
                    now,
                    json.dumps(info, sort_keys=True) if info else None,
                ),
            )
            conn.execute(
                "UPDATE cells SET status = ?, attempts = ?, updated = ?, "
                "seconds = COALESCE(?, seconds), error = ? WHERE cell_id = ?",
                (STATUS_AFTER[event], attempts, now, seconds, error, cell_id),
            )
        return attempts

    def cells(self) -> dict[str, dict]:
        cur = self._conn().execute(
            "SELECT cell_id, kind, label, path, status, attempts, updated, seconds, error FROM cells"
        )
        keys = ("id", "kind", "label", "path", "status", "attempts", "updated", "seconds", "error")
        return {r[0]: dict(zip(keys, r)) for r in cur.fetchall()}

    def events(self, cell_id: str | None = None) -> list[dict]:
        sql = "SELECT id, cell_id, event, attempt, session, pid, at, info FROM events"
        args: tuple = ()
        if cell_id is not None:
            sql += " WHERE cell_id = ?"
            args = (cell_id,)
        keys = ("id", "cell_id", "event", "attempt", "session", "pid", "at", "info")
        rows = [dict(zip(keys, r)) for r in self._conn().execute(sql + " ORDER BY id", args)]
        for r in rows:
            r["info"] = json.loads(r["info"]) if r["info"] else {}
        return rows

    def open_attempts(self) -> list[str]:
        """Cells whose last submission has not closed (its process may have died)."""
        return [cid for cid, c in self.cells().items() if c["status"] == "running"]

    # ------------------------------------------------------------------ checks
    def duplicate_submissions(self) -> list[tuple[str, int]]:
        """Cells submitted while an attempt of theirs was open, or after they completed.
        Must always be empty."""
        state: dict[str, tuple[bool, bool]] = {}  # cell → (attempt open, completed)
        bad: dict[str, int] = {}
        for e in self.events():
            is_open, completed = state.get(e["cell_id"], (False, False))
            ev = e["event"]
            if ev == "submitted":
                if is_open or completed:
                    bad[e["cell_id"]] = bad.get(e["cell_id"], 0) + 1
                is_open = True
            elif ev in CLOSING:
                is_open = False
                completed = completed or ev == "done"
            elif ev == "invalidated":
                completed = False  # its run directory was removed: running it again is legitimate
            state[e["cell_id"]] = (is_open, completed)
        return sorted(bad.items())

    def duplicate_completions(self) -> list[tuple[str, int]]:
        """Cells completed more than once without being invalidated. Must always be empty."""
        counts: dict[str, int] = {}
        bad: dict[str, int] = {}
        for e in self.events():
            if e["event"] == "invalidated":
                counts[e["cell_id"]] = 0
            elif e["event"] == "done":
                counts[e["cell_id"]] = counts.get(e["cell_id"], 0) + 1
                if counts[e["cell_id"]] > 1:
                    bad[e["cell_id"]] = counts[e["cell_id"]]
        return sorted(bad.items())

    # ------------------------------------------------------------------ control
    def request_cancel(self) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO control (key, value) VALUES ('cancel', ?)", (str(time.time()),)
        )

    def cancel_requested(self) -> bool:
        row = self._conn().execute("SELECT value FROM control WHERE key = 'cancel'").fetchone()
        return row is not None

    def clear_cancel(self) -> None:
        self._conn().execute("DELETE FROM control WHERE key = 'cancel'")


class _transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, *_):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
