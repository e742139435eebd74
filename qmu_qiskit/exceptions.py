"""The one error hierarchy of qmu-qiskit.

Every error a user can cause or meet derives from :class:`QmuError`. Its message is a single
line that names the problem and says what to do; the CLI prints it and exits non-zero, never a
traceback. Code that catches an upstream exception re-raises it as one of these, chained, so the
cause stays available to ``--debug`` and to tests.
"""

from __future__ import annotations

#: The longest message an error carries: values echoed in it are cut first (:func:`shorten`),
#: and the whole line is cut in the middle beyond this, so the fix at its end stays visible.
MAX_MESSAGE = 1200


def shorten(value: object, limit: int = 80) -> str:
    """``repr``-free text of an echoed value, cut to ``limit`` characters (``…`` and the length
    mark a cut), on one line. Every message that echoes user input goes through this."""
    text = " ".join(str(value).split())
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 20, 8)]}… ({len(text)} chars)"


def echo(value: object, limit: int = 80) -> str:
    """``shorten(repr(value))``: an echoed value with its quotes, bounded."""
    return shorten(repr(value), limit)


class QmuError(Exception):
    """Root of every error qmu-qiskit raises on purpose.

    Args:
        message: one line: what is wrong and how to fix it.
    """

    exit_code = 2

    def __init__(self, message: str):
        # A message spanning several lines would break the one-line contract of the CLI; one that
        # echoes a huge value (a YAML alias bomb) would flood the terminal: keep head and tail.
        text = str(message)
        if len(text) > 4 * MAX_MESSAGE:  # before the split: never whitespace-scan megabytes
            text = f"{text[:MAX_MESSAGE]} {text[-300:]}"
        text = " ".join(text.split())
        if len(text) > MAX_MESSAGE:
            text = f"{text[: MAX_MESSAGE - 300]} … {text[-280:]}"
        super().__init__(text)


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


class StorageError(RunError):
    """A write the storage refused: disk full, quota exceeded, read-only or no permission."""


class CheckpointError(RunError):
    """A checkpoint that is corrupt, foreign or does not match the model."""
