"""The one error hierarchy of qmu-qiskit.

Every error a user can cause or meet derives from :class:`QmuError`. Its message is a single
line that names the problem and says what to do; the CLI prints it and exits non-zero, never a
traceback. Code that catches an upstream exception re-raises it as one of these, chained, so the
cause stays available to ``--debug`` and to tests.
"""

from __future__ import annotations


class QmuError(Exception):
    """Root of every error qmu-qiskit raises on purpose.

    Args:
        message: one line: what is wrong and how to fix it.
    """

    exit_code = 2

    def __init__(self, message: str):
        # A message spanning several lines would break the one-line contract of the CLI.
        super().__init__(" ".join(str(message).split()))


class BadInputError(QmuError, ValueError):
    """An option, config field, job spec or forget request that cannot be used."""


class DataError(BadInputError):
    """Data files are missing, truncated or corrupt, or a dataset cannot be loaded offline."""


class BackendError(QmuError):
    """A backend that is unknown, retired, too small for the circuit or unreachable."""

    exit_code = 3


class CredentialsError(BackendError):
    """No usable IBM Quantum account (missing, invalid or revoked token)."""


class JobError(QmuError):
    """A primitive job or a batch-job cell failed permanently."""

    exit_code = 4


class RunError(QmuError):
    """A run directory that is missing, locked, incomplete or from an incompatible config."""


class CheckpointError(RunError):
    """A checkpoint that is corrupt, foreign or does not match the model."""
