"""Whether a dry run (``qmu-qiskit estimate``, ``--dry-run``) is in progress in this process.

During a dry run a command runs its real code path, but nothing reaches IBM Quantum: ``ibm_*``
devices resolve to their hardware profile (:func:`qmu_qiskit.backends.runtime.ibm_backend`), the
runtime runner is replaced by a counting runner (:func:`qmu_qiskit.execution.runners.make_runner`)
and early stopping is off (:func:`full_budget`), so that the counts are the full epoch budget;
``mia-compare`` skips its evaluations on local backends, which submit nothing.
The session object itself lives in :mod:`qmu_qiskit.execution.dry_run`; this module only holds it,
low enough in the package for every layer to ask.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

_lock = threading.Lock()
_active = None


def active():
    """The dry-run session in progress (a :class:`~qmu_qiskit.execution.dry_run.DryRun`), or
    ``None``. Process-wide: cells of a study run inline in scheduler threads."""
    return _active


@contextmanager
def activate(session):
    """Make ``session`` the dry run of this process for the duration of the block."""
    global _active
    with _lock:
        if _active is not None:
            from ..exceptions import BadInputError

            raise BadInputError("a dry run is already in progress in this process")
        _active = session
    try:
        yield session
    finally:
        with _lock:
            _active = None


def full_budget(patience: int) -> int:
    """Early-stopping patience to apply: ``0`` (off) during a dry run, so that the estimate counts
    every epoch of the budget (an upper bound for a run that may stop early)."""
    return 0 if _active is not None else patience
