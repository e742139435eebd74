"""Reader (and a small writer) for the IDX format of the MNIST and Fashion-MNIST files.

The format, as published with MNIST (LeCun, Cortes & Burges, "The MNIST database of handwritten
digits", section "File formats"): a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian ``uint32`` sizes, then the payload in row-major (C) order, big-endian.
Files may be gzip-compressed (``.gz``), as distributed and as torchvision stores them.

The reader checks everything it can before trusting the payload, so a truncated download fails
here with the file's name instead of later as a baffling reshape error. It reads only regular files
(a FIFO or a device is refused, never read), and only as many bytes as the header declares, up to
:data:`MAX_IDX_BYTES`: a header claiming absurd sizes (or a gzip bomb) is refused before the
payload is read.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..exceptions import BadInputError, DataError

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

#: IDX dtype code -> big-endian numpy dtype (MNIST "File formats": 0x08 ... 0x0E).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_SUFFIX = ".gz"

#: Largest payload an IDX file may declare: 2 GiB (the full MNIST training images are 47 MB).
MAX_IDX_BYTES = 2 * 2**30
#: Most dimensions an IDX header may declare (MNIST uses 1 and 3).
MAX_IDX_NDIM = 8


def _redownload(path: Path) -> str:
    return f"delete {path} and download it again"


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (non-blocking open: a FIFO cannot
    hang it); a device, FIFO or folder is refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DataError(
            f"IDX file {path} is not a regular file (a FIFO, device or folder); "
            "pass the downloaded MNIST files"
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _read_bounded(stream: BinaryIO | gzip.GzipFile, path: Path) -> bytes:
    """The header, then exactly the payload it declares (plus one byte, to see a longer file),
    refusing a declared size beyond :data:`MAX_IDX_BYTES` before reading the payload."""
    head = stream.read(4)
    if len(head) < 4 or head[0] or head[1] or head[2] not in IDX_DTYPES or not head[3]:
        return head  # read_idx names the problem (truncated / bad magic / dtype)
    ndim = head[3]
    if ndim > MAX_IDX_NDIM:
        raise DataError(
            f"IDX file {path} declares {ndim} dimensions (at most {MAX_IDX_NDIM}); "
            f"{_redownload(path)}"
        )
    dims_raw = stream.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        return head + dims_raw
    dims = struct.unpack(f">{ndim}I", dims_raw)
    expected = math.prod(dims) * IDX_DTYPES[head[2]].itemsize
    if expected > MAX_IDX_BYTES:
        raise DataError(
            f"IDX file {path} has a header claiming {'×'.join(map(str, dims))} values "
            f"({expected} bytes), more than the {MAX_IDX_BYTES} bytes allowed; the file is "
            f"corrupt: {_redownload(path)}"
        )
    return head + dims_raw + stream.read(expected + 1)


def _read_bytes(path: Path) -> bytes:
    try:
        with _open_regular(path) as raw_fh:
            if path.name.endswith(_GZIP_SUFFIX):
                with gzip.GzipFile(fileobj=raw_fh, mode="rb") as fh:
                    return _read_bounded(fh, path)
            return _read_bounded(raw_fh, path)
    except FileNotFoundError as exc:
        raise DataError(
            f"IDX file not found: {path}; check the path or the data directory"
        ) from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        # EOFError is what gzip raises for a download cut short mid-stream.
        raise DataError(
            f"IDX file {path} is not a valid gzip file ({exc}); {_redownload(path)}"
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path} ({exc}); check its permissions") from exc


def read_idx(
    path: str | os.PathLike,
    *,
    expect_ndim: int | None = None,
    expect_dtype: str | np.dtype | None = None,
) -> np.ndarray:
    """Read one IDX file, plain or gzip-compressed, and validate it against its header.

    Args:
        path: the file; a name ending in ``.gz`` is decompressed.
        expect_ndim: if given, the number of dimensions the file must declare.
        expect_dtype: if given, the element type the file must declare (e.g. ``"uint8"``).

    Returns:
        A writable array in native byte order with the shape the header declares.

    Raises:
        DataError: the file is missing, not valid gzip, has a bad magic number or dtype code,
            a payload size that does not match its header, or not the expected ndim/dtype.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated ({len(raw)} bytes); {_redownload(path)}")
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or ndim == 0:
        raise DataError(
            f"IDX file {path} has a bad magic number 0x{raw[:4].hex()} (not an IDX file); "
            f"{_redownload(path)}"
        )
    if code not in IDX_DTYPES:
        raise DataError(
            f"IDX file {path} has an unknown dtype code 0x{code:02x}; {_redownload(path)}"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"IDX file {path} is truncated inside its header; {_redownload(path)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    got = len(raw) - header_len
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: header {tuple(dims)} of {dtype.name} needs {expected} "
            f"payload bytes, found {got}; {_redownload(path)}"
        )
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(
            f"IDX file {path} has {ndim} dimensions {tuple(dims)}, expected {expect_ndim}; "
            "check that the file is the one its name says"
        )
    if expect_dtype is not None and dtype.newbyteorder("=") != np.dtype(expect_dtype):
        raise DataError(
            f"IDX file {path} holds {dtype.name}, expected {np.dtype(expect_dtype).name}; "
            "check that the file is the one its name says"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    # astype copies, so the result is writable and no longer pins the decompressed bytes.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file; a name ending in ``.gz`` is gzip-compressed.

    Used to build test fixtures and to export subsets in the format the reader accepts.

    Args:
        path: destination file.
        array: an array of one of the IDX element types, at least one dimension.

    Returns:
        The path written.

    Raises:
        BadInputError: the array has no dimensions or an element type IDX cannot store.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if array.ndim == 0 or native not in codes:
        raise BadInputError(
            f"cannot write a {array.ndim}-d {array.dtype} array as IDX; "
            "use an array of uint8, int8, int16, int32, float32 or float64 with ndim >= 1"
        )
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    path = Path(path)
    if path.name.endswith(_GZIP_SUFFIX):
        # mtime=0 keeps the bytes reproducible, so fixtures hash the same every run.
        with (
            open(path, "wb") as raw_fh,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw_fh, mtime=0) as fh,
        ):
            fh.write(header + payload)
    else:
        path.write_bytes(header + payload)
    return path
