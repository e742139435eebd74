"""A user's own data: ``.csv`` and ``.npz`` files, numpy arrays and torch datasets.

``--dataset my.csv --target label [--id-column id]`` trains on a CSV file with a header line:
the target column holds the labels (numbers or names), the optional id column integer record
ids, every other column is a numeric feature. ``--dataset my.npz`` reads arrays ``X`` (N×d
numbers), ``y`` (N labels) and optionally ``ids`` (N integers). In Python,
:func:`from_arrays` and :func:`from_torch` write such an ``.npz`` and return its
:class:`~qmu_qiskit.data.DataConfig`.

Classes are the distinct target values in sorted order (numerically when every value is a
number): label K (``--forget class:K``) is the K-th of them, and the run lists them as
``class_names``. Record ids are the id column's values when one is given, so
``--forget indices:FILE`` names the file's own ids; otherwise they are the row numbers 0..N-1.

A config stores the file's absolute path and SHA-256; every load checks the hash, so a run, its
unlearning runs, ``evaluate`` and grid workers all refuse a file that changed since training.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import BadInputError, DataError

if TYPE_CHECKING:
    from .config import DataConfig

__all__ = ["FileData", "file_sha256", "from_arrays", "from_torch", "is_data_file", "read_data_file"]

#: File endings read as data files.
SUFFIXES = (".csv", ".npz")
#: Largest data file read (bytes): bounds memory on a wrong path.
MAX_BYTES = 1 << 30
_MAX_SHOWN = 40


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def is_data_file(text: str) -> bool:
    """Whether ``--dataset`` names a file (by its ending) rather than a registered dataset."""
    return str(text).strip().lower().endswith(SUFFIXES)


def _checked_path(path: str | os.PathLike) -> Path:
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.suffix.lower() not in SUFFIXES:
        raise BadInputError(f"data file {p} must end in .csv or .npz")
    try:
        st = p.stat()
    except OSError:
        raise BadInputError(
            f"data file {p} does not exist; pass an existing .csv or .npz file to --dataset"
        ) from None
    if not p.is_file():
        raise BadInputError(f"data file {p} is not a regular file; pass a .csv or .npz file")
    if st.st_size > MAX_BYTES:
        raise BadInputError(
            f"data file {p} is {st.st_size} bytes, more than the {MAX_BYTES} "
            "this loader reads; subsample it first"
        )
    return p.resolve()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _name_for(path: Path) -> str:
    from .sources import DATASETS

    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem).strip("._") or "data"
    # A file called iris.csv is not the built-in iris: keep the names (and presets) apart.
    return f"{stem}_file" if stem.lower().replace("-", "_") in DATASETS else stem


def prepare_file_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Normalise the file fields of a :class:`DataConfig` mapping (called by its validator).

    Makes ``path`` absolute, names the dataset after the file when unnamed, checks that
    ``target``/``id_column`` fit the format, and fills in ``sha256`` from the file (a given
    ``sha256`` is kept: it is checked when the data are loaded).

    Raises:
        BadInputError: missing file, wrong ending, too large, or fields that do not fit.
    """
    if data.get("sha256") is not None:
        # A recorded config: the file is checked (presence, hash) when the data are loaded,
        # where a missing file gets its own message.
        path = Path(os.path.expanduser(os.fspath(data["path"]))).absolute()
        if path.suffix.lower() not in SUFFIXES:
            raise BadInputError(f"data file {path} must end in .csv or .npz")
    else:
        path = _checked_path(data["path"])
    out = {**data, "path": str(path)}
    if not out.get("dataset"):
        out["dataset"] = _name_for(path)
    if path.suffix.lower() == ".csv":
        if not out.get("target"):
            raise BadInputError(
                f"{path.name} is a CSV file: name its label column with --target "
                "COLUMN (data config field target)"
            )
    elif out.get("target") is not None or out.get("id_column") is not None:
        raise BadInputError(
            f"{path.name} is an .npz file: its labels are the array 'y' and its "
            "ids the array 'ids'; drop --target/--id-column"
        )
    if out.get("sha256") is None:
        out["sha256"] = file_sha256(path)
    elif not (
        isinstance(out["sha256"], str)
        and len(out["sha256"]) == 64
        and all(c in "0123456789abcdef" for c in out["sha256"])
    ):
        raise BadInputError("sha256 must be 64 lower-case hex digits (the file's SHA-256)")
    return out


@dataclass(frozen=True)
class FileData:
    """Every record of a data file, before splitting and encoding.

    Attributes:
        X: ``(N, d)`` float64 features.
        y: ``(N,)`` int64 labels in ``0..C-1``.
        ids: ``(N,)`` int64 record ids (the file's, else row numbers).
        class_names: the distinct target values in label order.
        feature_names: feature column names (``x0``, ``x1``, ... for ``.npz``).
        ids_from_file: whether ``ids`` came from the file.
    """

    X: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    ids_from_file: bool


def _labels(values: Sequence[Any], where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Target values → (int labels by sorted distinct value, class names)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        numeric: np.ndarray | None = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise BadInputError(
                f"{where}: the labels have missing or infinite values; fill or drop those rows"
            )
        numeric = arr.astype(np.float64)
    else:
        text = [str(v).strip() for v in arr.tolist()]
        if any(t == "" for t in text):
            row = next(i for i, t in enumerate(text) if t == "")
            raise BadInputError(f"{where}: the label of row {row} is missing; fill or drop it")
        try:
            numeric = np.array([float(t) for t in text])
        except ValueError:
            numeric = None
        if numeric is not None and not np.isfinite(numeric).all():
            raise BadInputError(f"{where}: the labels have missing or infinite values")
        if numeric is None:
            arr = np.array(text)
    if numeric is not None:
        if numeric.dtype.kind == "f" and np.all(numeric == np.round(numeric)):
            numeric = numeric.astype(np.int64)
        distinct, y = np.unique(numeric, return_inverse=True)
        names = tuple(str(v) for v in distinct.tolist())
    else:
        distinct, y = np.unique(arr, return_inverse=True)
        names = tuple(str(v) for v in distinct.tolist())
    if len(names) < 2:
        only = _show(names[0]) if names else ""
        raise BadInputError(
            f"{where}: every record has the same label {only}; a classifier "
            "needs at least 2 classes"
        )
    return y.astype(np.int64).ravel(), names


def _record_ids(values: Sequence[Any] | None, n: int, where: str) -> tuple[np.ndarray, bool]:
    if values is None:
        return np.arange(n, dtype=np.int64), False
    out = np.empty(n, dtype=np.int64)
    for i, v in enumerate(values):
        try:
            if isinstance(v, (float, np.floating)):
                if not float(v).is_integer():
                    raise ValueError
                v = int(v)
            out[i] = int(str(v).strip()) if isinstance(v, (str, bytes, np.str_)) else int(v)
        except (ValueError, OverflowError, TypeError):
            raise BadInputError(
                f"{where}: record id of row {i} is {_show(v)}, not an integer; "
                "record ids must be integers (64-bit)"
            ) from None
    distinct, counts = np.unique(out, return_counts=True)
    if (counts > 1).any():
        dups = distinct[counts > 1][:5].tolist()
        raise BadInputError(
            f"{where}: record ids {dups} appear more than once; every record needs its own id"
        )
    return out, True


def _read_csv(path: Path, target: str, id_column: str | None) -> FileData:
    where = f"data file {path.name}"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{where} is not UTF-8 text ({exc.reason}); save it as UTF-8 CSV"
        ) from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise BadInputError(f"{where} is empty; it needs a header line and one row per record")
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise BadInputError(f"{where}: column {_show(dup)} appears twice in the header")
    cols = ", ".join(_show(h) for h in header[:12]) + (" ..." if len(header) > 12 else "")
    for what, name in (("--target", target), ("--id-column", id_column)):
        if name is not None and name not in header:
            raise BadInputError(f"{where} has no column {_show(name)} for {what} (columns: {cols})")
    if id_column is not None and id_column == target:
        raise BadInputError(f"{where}: --target and --id-column name the same column")
    rows = [r for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise BadInputError(f"{where} has a header but no records")
    for lineno, r in enumerate(rows, start=2):
        if len(r) != len(header):
            raise BadInputError(
                f"{where}: a record has {len(r)} fields where the header has "
                f"{len(header)} (record {lineno - 2}); fix the row"
            )
    t_col = header.index(target)
    i_col = header.index(id_column) if id_column is not None else None
    feat_cols = [j for j in range(len(header)) if j not in (t_col, i_col)]
    if not feat_cols:
        raise BadInputError(f"{where} has no feature column besides the target and id")
    X = np.empty((len(rows), len(feat_cols)), dtype=np.float64)
    for k, j in enumerate(feat_cols):
        for i, r in enumerate(rows):
            cell = r[j].strip()
            if cell == "" or cell.lower() in ("nan", "na", "n/a", "null", "none"):
                raise BadInputError(
                    f"{where}: column {_show(header[j])} has a missing value in "
                    f"row {i}; fill or drop the rows with missing values"
                )
            try:
                value = float(cell)
            except ValueError:
                raise BadInputError(
                    f"{where}: column {_show(header[j])} is not numeric (row {i} holds "
                    f"{_show(cell)}); encode it as numbers or drop it (features are every column "
                    "except --target and --id-column)"
                ) from None
            if not math.isfinite(value):
                raise BadInputError(
                    f"{where}: column {_show(header[j])} has a non-finite value "
                    f"{_show(cell)} in row {i}; fix or drop that row"
                )
            X[i, k] = value
    y, names = _labels([r[t_col] for r in rows], where)
    ids, from_file = _record_ids(
        [r[i_col] for r in rows] if i_col is not None else None, len(rows), where
    )
    return FileData(
        X=X,
        y=y,
        ids=ids,
        class_names=names,
        feature_names=tuple(header[j] for j in feat_cols),
        ids_from_file=from_file,
    )


def _read_npz(path: Path | io.BytesIO, label: str | None = None) -> FileData:
    where = f"data file {label or getattr(path, 'name', 'arrays')}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in ("X", "y", "ids")}
            names = list(npz.files)
    except ValueError as exc:
        raise BadInputError(
            f"{where} holds object arrays ({exc}); store plain numeric/string arrays X, y and ids"
        ) from None
    except (OSError, EOFError) as exc:
        raise BadInputError(
            f"{where} is not a readable .npz file ({type(exc).__name__}); write "
            "it with numpy.savez(path, X=..., y=..., ids=...)"
        ) from None
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise BadInputError(
            f"{where} has no array {' or '.join(missing)} (arrays: "
            f"{', '.join(names) or 'none'}); save X, y and optionally ids"
        )
    X = arrays["X"]
    if X.ndim < 2 or X.dtype.kind not in "iufb":
        raise BadInputError(
            f"{where}: X must be a numeric array of shape (N, features), got "
            f"dtype {X.dtype} and shape {X.shape}"
        )
    X = X.reshape(len(X), -1).astype(np.float64)
    if not np.isfinite(X).all():
        row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise BadInputError(
            f"{where}: X has a missing or infinite value in row {row}; fill or drop those rows"
        )
    y_raw = arrays["y"].reshape(-1)
    if len(y_raw) != len(X):
        raise BadInputError(f"{where}: y has {len(y_raw)} labels for {len(X)} rows of X")
    y, class_names = _labels(y_raw, where)
    ids_raw = arrays.get("ids")
    if ids_raw is not None:
        ids_raw = ids_raw.reshape(-1)
        if len(ids_raw) != len(X):
            raise BadInputError(f"{where}: ids has {len(ids_raw)} entries for {len(X)} rows of X")
    ids, from_file = _record_ids(None if ids_raw is None else ids_raw.tolist(), len(X), where)
    return FileData(
        X=X,
        y=y,
        ids=ids,
        class_names=class_names,
        feature_names=tuple(f"x{i}" for i in range(X.shape[1])),
        ids_from_file=from_file,
    )


def read_data_file(cfg: DataConfig) -> FileData:
    """Read the data file of a config, after checking it is the file the config was made with.

    Raises:
        DataError: the file is missing or its SHA-256 differs from ``cfg.sha256``.
        BadInputError: the file's content is unusable (one line saying what to fix).
    """
    path = Path(str(cfg.path))
    if not path.is_file():
        raise DataError(
            f"data file {path} is missing; restore it (the run recorded its path and "
            "SHA-256) and run the command again"
        )
    got = file_sha256(path)
    if cfg.sha256 is not None and got != cfg.sha256:
        raise DataError(
            f"data file {path} changed since the run was made (sha256 {got[:12]}... "
            f"!= recorded {cfg.sha256[:12]}...); restore the original file, or train "
            "a new run on the new data"
        )
    if path.suffix.lower() == ".csv":
        return _read_csv(path, str(cfg.target), cfg.id_column)
    return _read_npz(path)


# --------------------------------------------------------------------------- from Python


def _default_dir() -> Path:
    from .sources import resolve_data_dir

    return resolve_data_dir(None) / "arrays"


def from_arrays(
    X: Any,
    y: Any,
    ids: Any = None,
    *,
    name: str = "data",
    directory: str | os.PathLike | None = None,
    **fields: Any,
) -> DataConfig:
    """A :class:`DataConfig` for in-memory arrays, stored as an ``.npz`` file.

    The arrays are written to ``<directory>/<name>-<hash>.npz`` (default directory:
    ``$QMU_DATA_DIR/arrays``, else ``./data/arrays``), named by their content so the same data
    always map to the same file and different data never overwrite it. Runs record that path
    and its SHA-256, so unlearning and evaluation later reload exactly these arrays.

    Args:
        X: ``(N, d)`` numbers (numpy array, torch tensor or nested lists).
        y: ``(N,)`` labels (numbers or strings).
        ids: optional ``(N,)`` distinct integer record ids (default: 0..N-1).
        name: the dataset's name (used in run names and messages).
        directory: where to write the ``.npz``.
        **fields: further :class:`DataConfig` fields (``test_size``, ``n_features``, ...).

    Returns:
        The config; pass it to :func:`qmu_qiskit.config.resolve_run_config` as ``dataset``, or
        to :func:`qmu_qiskit.data.load_data`.

    Raises:
        BadInputError: arrays that do not fit (the same checks as an ``.npz`` file).

    Example:
        >>> import numpy as np
        >>> cfg = from_arrays(np.random.rand(40, 3), np.arange(40) % 2, name="toy",
        ...                   directory="/tmp/qmu-doc")
        >>> cfg.dataset, cfg.path.endswith(".npz")
        ('toy', True)
    """
    from ..io import _atomic_bytes
    from .config import DataConfig

    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise BadInputError(f"name {_show(name)} must be a plain name (letters, digits, - _)")
    arrays: dict[str, Any] = {"X": _as_numpy(X, "X"), "y": _as_numpy(y, "y")}
    if ids is not None:
        arrays["ids"] = _as_numpy(ids, "ids")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    content = buf.getvalue()
    folder = Path(directory) if directory is not None else _default_dir()
    digest = hashlib.sha256(content).hexdigest()
    path = folder / f"{name}-{digest[:12]}.npz"
    # Validate before writing anything: the same checks as reading the file back.
    _read_npz(io.BytesIO(content), label=f"arrays {name!r}")
    if not (path.is_file() and file_sha256(path) == digest):
        # Atomic: a killed process never leaves a half-written file under the final name.
        _atomic_bytes(path, content)
    return DataConfig(dataset=name, path=str(path), **fields)


def _as_numpy(value: Any, what: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        raise BadInputError(f"{what} holds Python objects (dtype object); pass numbers or strings")
    return arr


def from_torch(
    dataset: Any,
    *,
    name: str = "data",
    directory: str | os.PathLike | None = None,
    **fields: Any,
) -> DataConfig:
    """A :class:`DataConfig` for a map-style ``torch.utils.data.Dataset``.

    Every item must be ``(x, y)`` or ``(x, y, record_id)``; ``x`` is flattened to a feature
    row. The records are stored like :func:`from_arrays` (same arguments).

    Raises:
        BadInputError: an empty dataset or items of another form.
    """
    try:
        n = len(dataset)
    except TypeError:
        raise BadInputError(
            "from_torch needs a map-style dataset with len(); iterate an "
            "IterableDataset into arrays and call from_arrays"
        ) from None
    if n == 0:
        raise BadInputError("the torch dataset is empty")
    xs, ys, ids = [], [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise BadInputError(
                f"item {i} of the torch dataset is not (x, y) or (x, y, id); "
                "wrap it so that it returns such tuples"
            )
        xs.append(_as_numpy(item[0], "x").reshape(-1))
        ys.append(_as_numpy(item[1], "y").reshape(()))
        if len(item) == 3:
            ids.append(_as_numpy(item[2], "id").reshape(()))
    if ids and len(ids) != n:
        raise BadInputError("some items of the torch dataset carry a record id and some do not")
    return from_arrays(
        np.stack(xs),
        np.stack(ys),
        np.stack(ids) if ids else None,
        name=name,
        directory=directory,
        **fields,
    )
