"""The job ledger: every primitive job, so that nothing is lost or paid for twice.

A job is identified by the fingerprint of its inputs (backend, ISA circuit structure, observables,
parameter values, shots/precision, options). Before submitting, the executor asks the ledger:

* a finished job with that fingerprint → its stored result is read back, nothing is submitted;
* a job submitted to a *remote* service that did not finish before the process died → the job is
  retrieved by id (``service.job(id)`` on IBM Runtime) instead of being submitted again;
* a job on a *local* simulator that was in flight when the process died cannot be retrieved (it
  died with the process) → it is marked ``lost`` and run again. Such a re-run costs no money and
  gives the same numbers, because the seed of every simulator job is derived from its fingerprint.

Results are stored as ``.npz`` files next to the database, written atomically. The database and
the result folder are created with user-only permissions (they may hold account-derived ids). A
token never enters the ledger: rows hold backend names, job and session ids, tags and hashes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import JobError
from ..io import PrivateSQLite, atomic_write_npz

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    backend TEXT NOT NULL,
    runner TEXT NOT NULL,
    remote INTEGER NOT NULL DEFAULT 0,
    session_id TEXT,
    run_id TEXT,
    tags TEXT,
    status TEXT NOT NULL,
    pid INTEGER,
    num_pubs INTEGER,
    circuit_evaluations INTEGER,
    shots INTEGER,
    submitted_at REAL NOT NULL,
    finished_at REAL,
    result_path TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_fingerprint ON jobs (fingerprint);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs (run_id);
"""

#: Job states. ``done`` rows have a result (unless pruned after a checkpoint made it redundant).
STATES = ("submitted", "done", "failed", "lost", "cancelled", "pruned")


@dataclass(frozen=True)
class JobRow:
    job_id: str
    fingerprint: str
    backend: str
    runner: str
    remote: bool
    session_id: str | None
    run_id: str | None
    tags: dict
    status: str
    pid: int | None
    submitted_at: float
    finished_at: float | None
    result_path: str | None
    error: str | None


class JobLedger(PrivateSQLite):
    """SQLite-backed record of primitive jobs.

    Args:
        path: database file; its folder also holds ``results/``. Created if missing.

    The ledger is safe to share between the processes of a job grid (SQLite with WAL and a busy
    timeout); each process keeps its own connection.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.results_dir = self.path.parent / "results"
        self.results_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.results_dir, 0o700)
        super().__init__(self.path, SCHEMA)

    # ------------------------------------------------------------------ queries
    def _rows(self, sql: str, args: tuple = ()) -> list[JobRow]:
        cur = self._conn().execute(
            "SELECT job_id, fingerprint, backend, runner, remote, session_id, run_id, tags, "
            "status, pid, submitted_at, finished_at, result_path, error FROM jobs " + sql,
            args,
        )
        return [
            JobRow(
                job_id=r[0],
                fingerprint=r[1],
                backend=r[2],
                runner=r[3],
                remote=bool(r[4]),
                session_id=r[5],
                run_id=r[6],
                tags=json.loads(r[7] or "{}"),
                status=r[8],
                pid=r[9],
                submitted_at=r[10],
                finished_at=r[11],
                result_path=r[12],
                error=r[13],
            )
            for r in cur.fetchall()
        ]

    def find(self, fingerprint: str) -> list[JobRow]:
        """All rows for a fingerprint, newest first."""
        return self._rows("WHERE fingerprint = ? ORDER BY submitted_at DESC", (fingerprint,))

    def get(self, job_id: str) -> JobRow | None:
        rows = self._rows("WHERE job_id = ?", (job_id,))
        return rows[0] if rows else None

    def jobs(self, *, run_id: str | None = None, status: str | None = None) -> list[JobRow]:
        clauses, args = [], []
        if run_id is not None:
            clauses.append("run_id = ?")
            args.append(run_id)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._rows(where + " ORDER BY submitted_at", tuple(args))

    def duplicate_submissions(self) -> list[tuple[str, int]]:
        """Fingerprints executed to completion more than once — must always be empty."""
        cur = self._conn().execute(
            "SELECT fingerprint, COUNT(*) FROM jobs WHERE status IN ('done', 'pruned') "
            "GROUP BY fingerprint HAVING COUNT(*) > 1"
        )
        return [(r[0], r[1]) for r in cur.fetchall()]

    # ------------------------------------------------------------------ writes
    def record_submitted(
        self,
        *,
        job_id: str,
        fingerprint: str,
        backend: str,
        runner: str,
        remote: bool,
        session_id: str | None,
        run_id: str | None,
        tags: dict | None,
        num_pubs: int,
        circuit_evaluations: int,
        shots: int,
    ) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO jobs (job_id, fingerprint, backend, runner, remote, session_id, "
            "run_id, tags, status, pid, num_pubs, circuit_evaluations, shots, submitted_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'submitted', ?, ?, ?, ?, ?)",
            (
                job_id,
                fingerprint,
                backend,
                runner,
                int(remote),
                session_id,
                run_id,
                json.dumps(tags or {}, sort_keys=True),
                os.getpid(),
                num_pubs,
                circuit_evaluations,
                shots,
                time.time(),
            ),
        )

    def record_done(self, job_id: str, arrays: dict[str, np.ndarray]) -> str:
        """Store a job's result arrays and mark it done. Returns the result path."""
        path = self.results_dir / f"{_safe(job_id)}.npz"
        atomic_write_npz(path, arrays)
        self._conn().execute(
            "UPDATE jobs SET status = 'done', finished_at = ?, result_path = ? WHERE job_id = ?",
            (time.time(), str(path.relative_to(self.path.parent)), job_id),
        )
        return str(path)

    def record_failed(self, job_id: str, error: str) -> None:
        self._set_status(job_id, "failed", error=error)

    def record_lost(self, job_id: str) -> None:
        self._set_status(job_id, "lost", error="the process that ran this local job ended first")

    def record_cancelled(self, job_id: str) -> None:
        self._set_status(job_id, "cancelled")

    def _set_status(self, job_id: str, status: str, *, error: str | None = None) -> None:
        self._conn().execute(
            "UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE job_id = ?",
            (status, time.time(), error, job_id),
        )

    def load_result(self, row: JobRow) -> dict[str, np.ndarray]:
        if not row.result_path:
            raise JobError(
                f"job {row.job_id} has no stored result; delete its ledger row to run it again"
            )
        path = self.path.parent / row.result_path
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise JobError(
                f"stored result of job {row.job_id} at {path} is unreadable ({exc}); "
                "delete the file and run the command again to recompute it"
            ) from exc

    def prune_results(self, run_id: str, *, before: float) -> int:
        """Drop stored results of a run's jobs finished before ``before`` (a checkpoint that
        supersedes them has been written). Rows stay, marked ``pruned``. Returns the count."""
        rows = self._rows(
            "WHERE run_id = ? AND status = 'done' AND finished_at < ?", (run_id, before)
        )
        for row in rows:
            if row.result_path:
                try:
                    (self.path.parent / row.result_path).unlink()
                except FileNotFoundError:
                    pass
        self._conn().execute(
            "UPDATE jobs SET status = 'pruned', result_path = NULL "
            "WHERE run_id = ? AND status = 'done' AND finished_at < ?",
            (run_id, before),
        )
        return len(rows)


def _safe(job_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
