"""Crash-safe file writes, directory locks, and reads of untrusted files.

Every file qmu-qiskit writes goes through a temporary file in the same folder, ``fsync`` and an
atomic ``os.replace``: after a SIGKILL a reader sees either the old file or the new one, never a
half-written one. A full disk or a read-only folder ends in a one-line
:class:`~qmu_qiskit.exceptions.StorageError`, with the old file intact.

Run directories, caches and input files may come from someone else: locks never follow a symbolic
link (``O_NOFOLLOW``), a tree holding a link is refused before anything in it is used or deleted,
and input files are read only when they are regular files of a bounded size (a FIFO or a device
would hang or never end).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import io
import json
import os
import sqlite3
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .exceptions import BadInputError, RunError, StorageError, shorten

#: errno values that mean "this storage cannot take the write": a one-line StorageError.
STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def storage_error(exc: OSError, path) -> StorageError | None:
    """The one-line error for a write that failed because of the storage, else ``None``."""
    why = STORAGE_ERRNOS.get(exc.errno) if exc.errno is not None else None
    if why is None:
        return None
    return StorageError(
        f"cannot write {shorten(str(path), 200)}: {why}; free space or fix the permissions, then "
        "run the same command again to resume (nothing finished is lost)"
    )


def as_storage_error(exc: BaseException) -> StorageError | None:
    """The one-line StorageError for any failure the storage caused, wherever it surfaced: an
    ``OSError`` with a storage errno, or SQLite's "database or disk is full" / "readonly
    database" (a ledger write); else ``None``."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError):
        return storage_error(exc, exc.filename or "a run file")
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        why = (
            "the disk is full"
            if "full" in text
            else "the file system is read-only"
            if "readonly" in text or "read-only" in text
            # what SQLite says when a full disk cuts a WAL write short (or a disk fails)
            else "the disk failed the write (full, or an I/O error)"
            if "disk i/o" in text
            else None
        )
        if why is not None:
            return StorageError(
                f"cannot write a job ledger (SQLite: {shorten(exc, 60)}): {why}; free space or fix "
                "the permissions, then run the same command again to resume (nothing finished is "
                "lost)"
            )
    return None


def _atomic_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        mapped = storage_error(exc, path) if isinstance(exc, OSError) else None
        if mapped is not None:
            raise mapped from exc
        raise


def atomic_write_bytes(path, data: bytes, *, mode: int | None = None) -> None:
    _atomic_bytes(Path(path), data, mode)


def atomic_write_text(path, text: str, *, mode: int | None = None) -> None:
    _atomic_bytes(Path(path), text.encode("utf-8"), mode)


def atomic_write_json(path, obj, *, mode: int | None = None) -> None:
    atomic_write_text(
        path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", mode=mode
    )


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


# ---------------------------------------------------------------------------------------------
# untrusted files

#: Upper bound of a run's JSON files (metrics, cost, status) read back.
MAX_JSON_BYTES = 64 * 2**20


def read_regular(
    path,
    *,
    max_bytes: int,
    what: str = "file",
    fix: str = "pass a regular file",
    follow: bool = True,
) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes`` bytes.

    Opened non-blocking, so a FIFO cannot hang the read; devices (``/dev/zero``), FIFOs,
    sockets and folders are refused before a byte is read; ``follow=False`` refuses a symbolic
    link as well.

    Raises:
        BadInputError: missing, unreadable, not a regular file, or too large.
    """
    path = Path(path)
    shown = shorten(str(path), 200)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadInputError(f"{what} {shown} is a symbolic link; {fix}") from None
        raise BadInputError(f"cannot read {what} {shown} ({exc.strerror or exc}); {fix}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            mode = st.st_mode
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a folder"
                if stat.S_ISDIR(mode)
                else "a special file"
            )
            raise BadInputError(f"{what} {shown} is {kind}, not a regular file; {fix}")
        if st.st_size > max_bytes:
            raise BadInputError(
                f"{what} {shown} is {st.st_size} bytes, more than the {max_bytes} allowed; {fix}"
            )
        os.set_blocking(fd, True)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:  # the file grew while it was read
                raise BadInputError(
                    f"{what} {shown} is larger than the {max_bytes} bytes allowed; {fix}"
                )
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise BadInputError(f"cannot read {what} {shown} ({exc.strerror or exc}); {fix}") from exc
    finally:
        os.close(fd)


def find_link(root, *, skip: tuple[str, ...] = ()) -> Path | None:
    """The first symbolic link (or FIFO, socket or device) inside ``root``, never following one;
    ``None`` when the tree holds only folders and regular files. ``skip`` names top-level entries
    not to descend into (other runs with their own checks)."""
    root = Path(root)
    if root.is_symlink():
        return root
    if not root.is_dir():
        return None
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if folder == root and entry.name in skip:
                continue
            if entry.is_symlink():
                return Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif not entry.is_file(follow_symlinks=False):
                return Path(entry.path)
    return None


def refuse_links(root, *, what: str = "run directory", skip: tuple[str, ...] = ()) -> None:
    """Raise :class:`RunError` if ``root`` holds a symbolic link or a special file."""
    link = find_link(root, skip=skip)
    if link is not None:
        kind = "a symbolic link" if link.is_symlink() else "a special file"
        raise RunError(
            f"{what} {shorten(str(root), 200)} holds {kind} ({shorten(str(link), 200)}); a run "
            "directory may hold only folders and regular files: remove it (or copy the run with "
            "`cp -rL`) and run the command again"
        )


def safe_rmtree(path, *, what: str = "run directory") -> None:
    """Delete a folder tree, refusing before deleting anything if it holds a link: nothing
    outside the tree is ever touched, and no refusal leaves a half-deleted run."""
    import shutil

    refuse_links(path, what=what)
    shutil.rmtree(path)


# ---------------------------------------------------------------------------------------------
# sealed cache entries

_SEAL = b"QMU-SEALED-1\n"


def _seal_key(directory: Path) -> bytes:
    """The cache's secret (``.seal-key``, user-only): a content hash keyed with it cannot be
    recomputed by whoever can write the cache but not read the key."""
    path = Path(directory) / ".seal-key"
    if not (path.exists() or path.is_symlink()):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".seal-key.", suffix=".tmp")
        try:
            os.write(fd, os.urandom(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:  # link, not rename: of processes racing to create it, the first one's key wins
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    try:
        return read_regular(path, max_bytes=64, what="cache key", follow=False)
    except BadInputError as exc:
        raise RunError(
            f"{exc}; delete it (or the whole cache folder) and run the command again"
        ) from None


def seal(directory, data: bytes) -> bytes:
    """``data`` prefixed with its keyed content hash (HMAC-SHA256)."""
    mac = hmac.new(_seal_key(Path(directory)), data, hashlib.sha256).hexdigest().encode()
    return _SEAL + mac + b"\n" + data


def unseal(directory, blob: bytes, *, path) -> bytes | None:
    """The data of a sealed entry; ``None`` for an entry in an older (unsealed) format, which the
    caller recomputes.

    Raises:
        RunError: the entry does not match its content hash (tampered or damaged).
    """
    if not blob.startswith(_SEAL):
        return None
    mac, _, data = blob[len(_SEAL) :].partition(b"\n")
    expected = hmac.new(_seal_key(Path(directory)), data, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(mac, expected):
        raise RunError(
            f"cache entry {shorten(str(path), 200)} does not match its content hash (changed "
            "after it was written); delete it (or the whole cache folder) and run the command again"
        )
    return data


#: The lock file :func:`directory_lock` holds inside a directory.
LOCK_FILE = ".lock"


def _open_lock(directory: Path, what: str, *, create: bool) -> int:
    """``directory/.lock`` opened without following a link; it must be a regular file."""
    lock_path = directory / LOCK_FILE
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_CREAT if create else 0)
    try:
        fd = os.open(lock_path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunError(
                f"{lock_path} is a symbolic link; a lock file is never followed: delete the link "
                "and run the command again"
            ) from None
        mapped = storage_error(exc, lock_path)
        if mapped is not None:
            raise mapped from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunError(f"{lock_path} is not a regular file; delete it and run the command again")
    return fd


@contextmanager
def directory_lock(directory, *, what: str = "run directory", shared: bool = False):
    """Hold a non-blocking lock on ``directory/.lock`` for the block.

    Exclusive (the default) for a command that writes the directory; ``shared=True`` for one that
    depends on it without writing it (``unlearn`` and ``evaluate`` on their teacher): any number
    of shared holders, but no exclusive one while they work. A process that cannot get the lock
    fails at once with a :class:`RunError` naming the holder's pid. The lock dies with its
    process (``flock``), so a SIGKILLed run never leaves a stale lock behind. The lock file is
    opened with ``O_NOFOLLOW``: a ``.lock`` symbolic link is refused, never followed or truncated.
    """
    directory = Path(directory)
    if directory.is_symlink():
        raise RunError(
            f"{what} {shorten(str(directory), 200)} is a symbolic link; pass the real "
            "folder instead"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        mapped = storage_error(exc, directory)
        if mapped is not None:
            raise mapped from exc
        raise
    fd = _open_lock(directory, what, create=True)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            except OSError:
                holder = ""
            who = (
                f"process {holder}"
                if holder.isdigit()
                else "another command that depends on it (unlearn or evaluate)"
            )
            raise RunError(
                f"{what} {shorten(str(directory), 200)} is in use by {who}; wait for it to finish "
                "or stop it, then run the command again"
            ) from None
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            if not shared:
                try:  # a later shared holder must not be reported under this (finished) pid
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
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
        # never through a link: a planted jobs.sqlite link must not redirect the ledger
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RunError(
                    f"{self.path} is a symbolic link; a ledger is never followed: "
                    "delete the link and run the command again"
                ) from None
            mapped = storage_error(exc, self.path)
            if mapped is not None:
                raise mapped from exc
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RunError(
                    f"{self.path} is not a regular file; delete it and run the command again"
                )
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
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
