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

A run directory is untrusted input (it may come from someone else): its files are read only when
they are regular files (never through a symbolic link, never a FIFO or device) of bounded size, a
tree holding a link is refused before anything in it is used, rewritten or deleted, and a
``config.yaml`` that no longer matches the fingerprint in ``run.json`` is refused. A "complete"
run whose ``metrics.json``/``cost.json`` is corrupt or whose result files are missing counts as
damaged, not complete: the same command recomputes it from its checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from . import safeyaml
from .exceptions import BadInputError, QmuError, RunError, shorten
from .io import (
    MAX_JSON_BYTES,
    atomic_write_json,
    atomic_write_text,
    directory_lock,
    read_regular,
    refuse_links,
    safe_rmtree,
)

# The run-directory layout (module docstring): every other module names these files through
# these constants, so the layout lives here only.
CONFIG_FILE = "config.yaml"
STATUS_FILE = "run.json"
CHECKPOINTS_DIR = "checkpoints"
#: A method run's checkpoint, under its ``checkpoints/`` folder (``UnlearnContext.checkpoint``).
METHOD_CHECKPOINT = "method.pt"
#: The status of a finished oracle pre-fit (``pipeline.prefit_oracle``): its run directory holds
#: a checkpoint, not a run's results, so it is never "complete".
PREFIT_DONE = "fitted"
MODEL_FILE = "model.pt"
OUTPUTS_FILE = "outputs.npz"
METRICS_FILE = "metrics.json"
COST_FILE = "cost.json"
LEDGER_DIR = "ledger"
LOG_FILE = "log.txt"
#: ``<run>/unlearn/<forget-slug>/<method>/``: a teacher's unlearning runs.
UNLEARN_DIR = "unlearn"
#: ``<run>/evaluations/<NNN>-<settings>/``: each ``evaluate`` of a run.
EVALUATIONS_DIR = "evaluations"

#: Files every complete run holds; a complete run missing one (or with unreadable JSON) is damaged.
RESULT_FILES = (METRICS_FILE, COST_FILE, OUTPUTS_FILE, MODEL_FILE, CONFIG_FILE)
#: Largest config.yaml read back.
MAX_CONFIG_BYTES = 1 * 2**20


def failure_reason(exc: BaseException) -> str:
    """The ``error`` a failed run records: the one-line message of a QmuError, ``interrupted``
    for Ctrl-C / SIGTERM / SIGHUP (the same command resumes it), else the exception's type and
    text."""
    if isinstance(exc, KeyboardInterrupt):
        detail = str(exc)
        return detail if detail.startswith("interrupted") else "interrupted"
    if isinstance(exc, QmuError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def read_run_json(path: Path, *, what: str = "") -> dict:
    """A JSON object from a run directory: a regular file (no link), bounded, parsed.

    Raises:
        RunError: missing, a link or special file, too large, not JSON, or not an object.
    """
    try:
        data = json.loads(
            read_regular(
                path,
                max_bytes=MAX_JSON_BYTES,
                what=what or "run file",
                follow=False,
                fix="remove it and run the command again",
            )
        )
    except BadInputError as exc:
        raise RunError(str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is corrupt (not JSON: {shorten(exc, 80)})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} is corrupt (a JSON {type(data).__name__}, not an object)")
    return data


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
        if not (self.status_path.exists() or self.status_path.is_symlink()):
            return None
        try:
            return read_run_json(self.status_path, what="run status")
        except RunError as exc:
            raise RunError(
                f"{exc}; remove the run directory {shorten(str(self.path), 200)} and run the "
                "command again"
            ) from None

    def is_complete(self) -> bool:
        """Complete and intact: ``run.json`` says complete and no result file is damaged."""
        st = self.status()
        return (
            st is not None
            and bool(st)
            and st.get("status") == "complete"
            and self.damaged() is None
        )

    def damaged(self) -> str | None:
        """What is wrong with a run marked complete (a missing or unreadable result file), or
        ``None``. The same command recomputes a damaged run from its checkpoints."""
        for name in RESULT_FILES:
            path = self.path / name
            if path.is_symlink() or not path.is_file():
                return f"{path} is missing or not a regular file"
            if name.endswith(".json"):
                try:
                    read_run_json(path)
                except RunError as exc:
                    return str(exc)
        return None

    def read_metrics(self) -> dict:
        """``metrics.json``, checked to be a readable JSON object (one-line RunError if not)."""
        return read_run_json(self.path / METRICS_FILE, what="metrics")

    def check_fingerprint(self, fingerprint: str) -> None:
        """Refuse a run whose ``config.yaml`` no longer gives the fingerprint in ``run.json``
        (edited after the run was made: its results are not what the config says).

        Args:
            fingerprint: the fingerprint computed from this run's config.yaml now.
        """
        recorded = (self.status() or {}).get("fingerprint")
        if recorded is not None and recorded != fingerprint:
            raise RunError(
                f"{shorten(str(self.path), 200)}/config.yaml does not match run.json (config "
                f"fingerprint {shorten(fingerprint, 20)}, recorded {shorten(recorded, 20)}): the "
                "config was edited after the run was made; restore it, or train a new run"
            )

    def exists(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def config(self) -> dict:
        path = self.path / CONFIG_FILE
        if not (path.exists() or path.is_symlink()):
            raise RunError(f"{self.path} has no config.yaml; it is not a qmu-qiskit run directory")
        try:
            text = read_regular(
                path,
                max_bytes=MAX_CONFIG_BYTES,
                what="run config",
                follow=False,
                fix="remove the run directory and run the command again",
            )
            data = safeyaml.parse(text)
        except BadInputError as exc:
            raise RunError(str(exc)) from None
        except (yaml.YAMLError, RecursionError) as exc:
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
        refuse_links(self.path, skip=(UNLEARN_DIR,))
        status = self.status() or {}
        command = "train" if what in ("trained run", "teacher run") else "train` or `unlearn"
        if status.get("status") != "complete":
            raise RunError(
                f"the {what} at {self.path} is not complete; run its `qmu-qiskit {command}` "
                "command again to resume it"
            )
        damage = self.damaged()
        if damage is not None:
            raise RunError(
                f"the {what} at {self.path} is damaged ({damage}); run its `qmu-qiskit {command}` "
                "command again to recompute it"
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
            if status.get("status") == "complete" and self.damaged() is None:
                raise RunError(
                    f"{self.path} already holds a complete run; use another output directory, or "
                    "--overwrite to replace it"
                )
            return (self.path / CHECKPOINTS_DIR).exists()
        if self.path.exists() and any(not is_scratch(p) for p in self.path.iterdir()):
            raise RunError(
                f"{self.path} exists and is not a qmu-qiskit run; choose another --out directory"
            )
        return False

    def _clear(self) -> None:
        # Checked for links before the first deletion: a refusal leaves the run whole, and no
        # deletion can follow a link out of the tree.
        refuse_links(self.path)
        # A kill while deleting must not leave a "complete" status over missing files.
        self.fail("being replaced (--overwrite); run the command again with --overwrite")
        for child in self.path.iterdir():
            if child.name == ".lock":
                continue
            if child.is_dir():
                safe_rmtree(child)
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
        atomic_write_text(self.path / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))

    def _sweep_scratch(self) -> None:
        # Only this run's own folders: unlearn/ holds other runs with their own locks.
        sweep_scratch(
            self.path, self.checkpoints, self.path / LEDGER_DIR, self.path / LEDGER_DIR / "results"
        )

    def finish(self, *, extra: dict | None = None) -> None:
        status = self.status() or {}
        status.update({"status": "complete", "finished": time.time(), "updated": time.time()})
        status.pop("error", None)
        status.update(extra or {})
        atomic_write_json(self.status_path, status)

    def fail(self, message: str) -> None:
        """Mark the run failed (best effort: on a full or read-only disk the status stays
        ``running``, which resumes the same way; the original error is what the user sees)."""
        try:
            status = self.status()
            if status is None:
                return
            status.update(
                {"status": "failed", "error": shorten(message, 500), "updated": time.time()}
            )
            atomic_write_json(self.status_path, status)
        except (OSError, QmuError):
            pass

    @contextmanager
    def lock(self, *, shared: bool = False):
        """Exclusive (a command writing this run) or shared (a command depending on it, e.g.
        ``unlearn`` on its teacher). The tree is checked for links once the lock is held; a
        teacher's ``unlearn/`` runs are checked by their own locks."""
        with directory_lock(self.path, what="run directory", shared=shared):
            refuse_links(self.path, skip=(UNLEARN_DIR,))
            yield

    # ------------------------------------------------------------------ paths
    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def ledger_path(self) -> Path:
        return self.path / LEDGER_DIR / "jobs.sqlite"

    def run_id(self) -> str:
        """The run's id (tags its jobs in the ledger), fixed when the run first started."""
        status = self.status() or {}
        if "run_id" not in status:
            raise RunError(f"{self.path} has not been started; run its command again")
        return status["run_id"]
