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
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
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
        if self.path.exists() and any(p.name != ".lock" for p in self.path.iterdir()):
            raise RunError(
                f"{self.path} exists and is not a qmu-qiskit run; choose another --out directory"
            )
        return False

    def _clear(self) -> None:
        import shutil

        for child in self.path.iterdir():
            if child.name == ".lock":
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def start(self, config: dict, *, fingerprint: str, extra: dict | None = None) -> None:
        """Write the config and mark the run as running (keeps the original creation time)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
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
