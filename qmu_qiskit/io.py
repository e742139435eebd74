"""Crash-safe file writes and directory locks.

Every file qmu-qiskit writes goes through a temporary file in the same folder, ``fsync`` and an
atomic ``os.replace``: after a SIGKILL a reader sees either the old file or the new one, never a
half-written one.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import tempfile
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .exceptions import RunError


def _atomic_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path, text: str, *, mode: int | None = None) -> None:
    _atomic_bytes(Path(path), text.encode("utf-8"), mode)


def atomic_write_json(path, obj, *, mode: int | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", mode=mode)


def atomic_write_npz(path, arrays: dict) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_bytes(Path(path), buf.getvalue())


def atomic_savefig(fig, path, **kwargs) -> None:
    """A matplotlib figure written as PNG through a temporary file and an atomic rename."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    _atomic_bytes(Path(path), buf.getvalue())


def atomic_torch_save(path, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_bytes(Path(path), buf.getvalue())


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@contextmanager
def directory_lock(directory, *, what: str = "run directory"):
    """Hold an exclusive, non-blocking lock on ``directory/.lock`` for the block.

    A second process on the same directory fails at once with a :class:`RunError` naming the
    holder's pid, instead of both writing. The lock dies with its process (``flock``), so a
    SIGKILLed run never leaves a stale lock behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            try:
                holder = os.pread(fd, 32, 0).decode().strip() or "another process"
            except OSError:
                holder = "another process"
            raise RunError(
                f"{what} {directory} is in use by process {holder}; wait for it to finish "
                "or stop it, then run the command again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


class PrivateSQLite:
    """A SQLite database readable by its owner only, shared safely between threads and processes.

    The file is created ``0600`` before SQLite opens it, so no moment (and no kill) leaves it
    readable by others; SQLite gives its ``-wal``/``-shm`` files the database's permissions. WAL
    with a busy timeout lets the processes of a grid share it; each thread and each process keeps
    its own connection.
    """

    def __init__(self, path: str | os.PathLike, schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._local = threading.local()
        self._conn().executescript(schema)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
