"""Logging: module loggers under ``qmu_qiskit``, a ``log.txt`` in every run directory.

Every module logs to ``logging.getLogger(__name__)``. The package adds no handler of its own
beyond a :class:`logging.NullHandler` (a library must not configure logging for its caller);
:func:`run_log` attaches a file handler for the duration of one run, so each run directory keeps
a ``log.txt`` of what happened in it (start, configuration, epochs, result or error), and the
command line (:func:`console`) shows warnings on stderr. Progress bars (tqdm with
``disable=None``) are drawn only on a terminal, so log files and CI logs hold lines, never ``\\r``
frames.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .runs import LOG_FILE  # the run-directory layout lives in runs.py

PACKAGE = "qmu_qiskit"

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

logging.getLogger(PACKAGE).addHandler(logging.NullHandler())


class _ThreadFilter(logging.Filter):
    """Only records of one thread: cells of an inline grid run on their own thread next to the
    scheduler, and a run's log must hold that run's lines alone."""

    def __init__(self, thread_id: int):
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread_id


class _PrivateFileHandler(logging.FileHandler):
    """A log file like every run file: user-only (0600), and never opened through a symbolic
    link (run directories are untrusted)."""

    def _open(self) -> Any:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        try:
            fd = os.open(self.baseFilename, flags, 0o600)
        except OSError:
            if not os.path.islink(self.baseFilename):
                raise
            os.unlink(self.baseFilename)  # a link planted in the run directory: replace it
            fd = os.open(self.baseFilename, flags, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


@contextmanager
def run_log(run_dir: str | os.PathLike, *, level: int = logging.INFO) -> Iterator[Path]:
    """Append this thread's ``qmu_qiskit`` log records to ``<run_dir>/log.txt`` while inside.

    Args:
        run_dir: the run directory (it must exist).
        level: the lowest level written.

    Yields:
        The log file's path.
    """
    path = Path(run_dir) / LOG_FILE
    if path.is_symlink():  # run directories are untrusted: never write through a link
        path.unlink()
    # delay: the file is created at the first record, so a run directory cleared after entering
    # (``--overwrite``) gets a fresh log rather than one whose file was deleted
    handler = _PrivateFileHandler(path, mode="a", encoding="utf-8", delay=True)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(_ThreadFilter(threading.get_ident()))
    logger = logging.getLogger(PACKAGE)
    previous = logger.level
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (tests and tools replace
    it), never to a stream that has since been closed."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace(record.levelname, record.levelname.lower(), 1)


def console(level: int = logging.WARNING) -> None:
    """Show ``qmu_qiskit`` records from ``level`` up to (not including) ERROR on stderr as
    ``warning: ...`` lines (the command line calls this once; idempotent). Errors are left to
    the command line's one-line error message."""
    logger = logging.getLogger(PACKAGE)
    if any(getattr(h, "_qmu_console", False) for h in logger.handlers):
        return
    handler = _Stderr()
    handler.setLevel(level)
    # errors reach the user as the command line's one "error: ..." line, not twice
    handler.addFilter(lambda record: record.levelno < logging.ERROR)
    handler.setFormatter(_LowerLevelFormatter("%(levelname)s: %(message)s"))
    handler._qmu_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
