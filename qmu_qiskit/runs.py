"""Run directories: where a run's config, checkpoints, outputs and metrics live.

Layout of a run directory::

    config.yaml       the resolved config (seed included)
    run.json          status (running | failed | complete), timestamps, fingerprints
    checkpoints/      last.pt (resumable state), written atomically every epoch
    model.pt          final weights (state_dict only)
    outputs.npz       per-sample logits, labels, record ids, split names
    metrics.json      the run's metrics (written just before the status turns complete)
    cost.json         what the run spent (jobs, circuit evaluations, shots, wall time)
    ledger/           the job ledger (SQLite) and stored job results

A run is complete only when ``run.json`` says so; that write comes last, so an interrupted run
never looks complete. Re-running the same command on an incomplete directory resumes it; on a
complete one it refuses (nothing is overwritten silently); on a directory made from a different
config it refuses too.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from .exceptions import RunError
from .io import atomic_write_json, atomic_write_text, directory_lock, read_json

STATUS_FILE = "run.json"


def is_scratch(path: Path) -> bool:
    """The lock file, or a temporary file of an atomic write (``.<name>.<random>.tmp``) that a
    killed process left behind: neither makes a folder a run nor holds anything of one."""
    name = path.name
    return name == ".lock" or (name.startswith(".") and name.endswith(".tmp") and path.is_file())


def sweep_scratch(*folders: Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left in ``folders``
    (only their own entries: nested run directories sweep their own)."""
    for folder in folders:
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name != ".lock" and is_scratch(p):
                    p.unlink(missing_ok=True)


class RunDir:
    """A run directory.

    Args:
        path: the directory.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ------------------------------------------------------------------ state
    @property
    def status_path(self) -> Path:
        return self.path / STATUS_FILE

    def status(self) -> dict | None:
        if not self.status_path.exists():
            return None
        try:
            return read_json(self.status_path)
        except (OSError, ValueError) as exc:
            raise RunError(
                f"{self.status_path} is unreadable ({exc}); remove the run directory {self.path} "
                "and run the command again"
            ) from exc

    def is_complete(self) -> bool:
        st = self.status()
        return bool(st) and st.get("status") == "complete"

    def exists(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def config(self) -> dict:
        path = self.path / "config.yaml"
        if not path.exists():
            raise RunError(f"{self.path} has no config.yaml; it is not a qmu-qiskit run directory")
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise RunError(
                f"{path} is not a valid run config ({type(exc).__name__}); remove the run "
                "directory and run the command again"
            ) from None
        if not isinstance(data, dict):
            raise RunError(f"{path} is not a valid run config; remove the run directory and rerun")
        return data

    def require_complete(self, *, what: str = "run") -> None:
        """Raise unless this is a finished run directory (used by unlearn and evaluate)."""
        if not self.path.exists():
            raise RunError(
                f"no {what} at {self.path}; train one first with `qmu-qiskit train --out {self.path}`"
            )
        if not self.is_complete():
            raise RunError(
                f"the {what} at {self.path} is not complete; run its `qmu-qiskit train` command "
                "again to resume it"
            )

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, config: dict, *, fingerprint: str, overwrite: bool = False) -> bool:
        """Create the directory for a new run, or check it can be resumed.

        Returns:
            True when an incomplete run with the same config exists (resume), else False.

        Raises:
            RunError: the directory holds a complete run (pass ``--overwrite`` or another
                ``--out``), or a run made from a different config.
        """
        status = self.status() if self.path.exists() else None
        if status is not None:
            if overwrite:
                self._clear()
                return False
            if status.get("fingerprint") != fingerprint:
                raise RunError(
                    f"{self.path} holds a run made from a different config; use --overwrite to "
                    "replace it, or choose another output directory"
                )
            if status.get("status") == "complete":
                raise RunError(
                    f"{self.path} already holds a complete run; use another output directory, or "
                    "--overwrite to replace it"
                )
            return (self.path / "checkpoints").exists()
        if self.path.exists() and any(not is_scratch(p) for p in self.path.iterdir()):
            raise RunError(
                f"{self.path} exists and is not a qmu-qiskit run; choose another --out directory"
            )
        return False

    def _clear(self) -> None:
        import shutil

        # A kill while deleting must not leave a "complete" status over missing files.
        self.fail("being replaced (--overwrite); run the command again with --overwrite")
        for child in self.path.iterdir():
            if child.name == ".lock":
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def start(self, config: dict, *, fingerprint: str, extra: dict | None = None) -> None:
        """Mark the run as running and write its config (keeps the original creation time).

        The status goes first: a run killed between the two writes still has a status with its
        fingerprint, so the same command resumes it (a lone config.yaml would look foreign).
        Called under the lock, so temporary files of killed writers can be swept here.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self._sweep_scratch()
        previous = self.status() or {}
        import uuid

        status = {
            "status": "running",
            "run_id": previous.get("run_id") or f"run-{uuid.uuid4().hex[:12]}",
            "fingerprint": fingerprint,
            "created": previous.get("created", time.time()),
            "updated": time.time(),
            "pid": os.getpid(),
        }
        status.update(extra or {})
        atomic_write_json(self.status_path, status)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def _sweep_scratch(self) -> None:
        # Only this run's own folders: unlearn/ holds other runs with their own locks.
        sweep_scratch(self.path, self.checkpoints, self.path / "ledger", self.path / "ledger" / "results")

    def finish(self, *, extra: dict | None = None) -> None:
        status = self.status() or {}
        status.update({"status": "complete", "finished": time.time(), "updated": time.time()})
        status.pop("error", None)
        status.update(extra or {})
        atomic_write_json(self.status_path, status)

    def fail(self, message: str) -> None:
        status = self.status()
        if status is None:
            return
        status.update({"status": "failed", "error": message, "updated": time.time()})
        atomic_write_json(self.status_path, status)

    @contextmanager
    def lock(self):
        with directory_lock(self.path, what="run directory"):
            yield

    # ------------------------------------------------------------------ paths
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def ledger_path(self) -> Path:
        return self.path / "ledger" / "jobs.sqlite"

    def run_id(self) -> str:
        """The run's id (tags its jobs in the ledger), fixed when the run first started."""
        status = self.status() or {}
        if "run_id" not in status:
            raise RunError(f"{self.path} has not been started; run its command again")
        return status["run_id"]
