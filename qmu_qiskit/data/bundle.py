"""The loaded, split and encoded data of one run: :class:`DataBundle`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exceptions import BadInputError, DataError
from .splits import SPLITS

if TYPE_CHECKING:
    from .config import DataConfig

__all__ = ["DataBundle", "compute_fingerprint"]


def _le(arr: np.ndarray) -> np.ndarray:
    # Hash little-endian bytes so the fingerprint does not depend on the machine's byte order.
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def compute_fingerprint(
    *,
    name: str,
    input_kind: str,
    class_names: Sequence[str],
    input_shape: Sequence[int],
    X: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    ids: dict[str, np.ndarray],
) -> str:
    """SHA-256 (hex) over a bundle's metadata and the bytes of every array.

    Args:
        name: dataset name.
        input_kind: encoding.
        class_names: class names in label order.
        input_shape: per-sample shape.
        X: split -> features.
        y: split -> labels.
        ids: split -> record ids.

    Returns:
        64 hex characters; equal for bit-identical bundles.
    """
    digest = hashlib.sha256()
    header = {
        "name": name,
        "input_kind": input_kind,
        "class_names": list(class_names),
        "input_shape": list(input_shape),
        "format": 1,
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for split in SPLITS:
        for key, arrays in (("X", X), ("y", y), ("ids", ids)):
            arr = _le(arrays[split])
            # Shape and dtype go in too, so (2, 3) and (3, 2) of the same bytes differ.
            digest.update(f"|{split}.{key}:{arr.dtype.str}:{arr.shape}|".encode())
            if arr.size:  # memoryview refuses to cast an empty (0, k) array
                # ndarray has the buffer protocol; numpy's stubs declare it for Python ≥ 3.12 only
                digest.update(memoryview(arr.reshape(-1)).cast("B"))  # type: ignore[arg-type]
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True, eq=False)
class DataBundle:
    """Train/validation/test arrays of one dataset, encoded for a model.

    Arrays are read-only so the :attr:`fingerprint` computed at construction stays true.
    Within each split, samples are sorted by record id.

    Attributes:
        name: dataset name.
        X: split -> float32 features, ``(N, *input_shape)``.
        y: split -> int64 labels in ``0..num_classes-1``.
        ids: split -> int64 record ids (row index in the original dataset; for MNIST and
            Fashion-MNIST the index in the official train file).
        num_classes: number of classes.
        class_names: class names in label order.
        input_kind: ``angles``, ``image`` or ``amplitude``.
        input_shape: per-sample shape, e.g. ``(8,)`` or ``(1, 28, 28)``.
        n_records: number of records in the original dataset (ids are ``0..n_records-1``).
        config: the config that built the bundle, if any.
        fingerprint: SHA-256 hex over the arrays and metadata (computed, not passed), so a
            later process can check it rebuilt identical data.

    Example:
        >>> from qmu_qiskit.data import DataConfig, load_data
        >>> bundle = load_data(DataConfig(dataset="iris"))
        >>> bundle.sizes
        {'train': 108, 'val': 12, 'test': 30}
    """

    name: str
    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    ids: dict[str, np.ndarray]
    num_classes: int
    class_names: tuple[str, ...]
    input_kind: str
    input_shape: tuple[int, ...]
    n_records: int
    config: DataConfig | None = None
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        for attr in ("X", "y", "ids"):
            if set(getattr(self, attr)) != set(SPLITS):
                raise BadInputError(
                    f"DataBundle.{attr} must have exactly the splits "
                    f"{', '.join(SPLITS)}; build bundles with load_data"
                )
        frozen: dict[str, dict[str, np.ndarray]] = {"X": {}, "y": {}, "ids": {}}
        for split in SPLITS:
            x = np.array(self.X[split], dtype=np.float32)
            y = np.array(self.y[split], dtype=np.int64)
            ids = np.array(self.ids[split], dtype=np.int64)
            if not (len(x) == len(y) == len(ids)):
                raise BadInputError(
                    f"DataBundle split {split!r} has {len(x)} inputs, {len(y)} "
                    f"labels and {len(ids)} ids; they must match"
                )
            for arr in (x, y, ids):
                arr.setflags(write=False)
            frozen["X"][split], frozen["y"][split], frozen["ids"][split] = x, y, ids
        for attr, value in frozen.items():
            object.__setattr__(self, attr, value)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(
            self,
            "fingerprint",
            compute_fingerprint(
                name=self.name,
                input_kind=self.input_kind,
                class_names=self.class_names,
                input_shape=self.input_shape,
                X=self.X,
                y=self.y,
                ids=self.ids,
            ),
        )

    # Equality by content: the fingerprint covers every array and the metadata.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataBundle):
            return NotImplemented
        return self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return (
            f"DataBundle(name={self.name!r}, input_kind={self.input_kind!r}, "
            f"input_shape={self.input_shape}, sizes={self.sizes}, "
            f"fingerprint={self.fingerprint[:12]}...)"
        )

    # ----------------------------------------------------------------------- helpers

    @property
    def sizes(self) -> dict[str, int]:
        """Split name -> number of samples."""
        return {split: int(len(self.y[split])) for split in SPLITS}

    def _check_split(self, split: str) -> str:
        if split not in SPLITS:
            raise BadInputError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
        return split

    def membership(self, split: str) -> np.ndarray:
        """Membership label of every sample of ``split`` for membership-inference audits.

        Args:
            split: ``train``, ``val`` or ``test``.

        Returns:
            Bool array: True (member) for every ``train`` sample, False for ``val``/``test``,
            which are never trained on.

        Raises:
            BadInputError: unknown split.
        """
        self._check_split(split)
        return np.full(self.sizes[split], split == "train", dtype=bool)

    def subset(
        self, split: str, idx: np.ndarray | Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs, labels and record ids of some samples of a split.

        Args:
            split: ``train``, ``val`` or ``test``.
            idx: positions in the split (int array) or a bool mask; ``None`` for all.

        Returns:
            ``(X, y, ids)`` copies (writable).

        Raises:
            BadInputError: unknown split, or positions out of range.
        """
        self._check_split(split)
        if idx is None:
            idx = np.arange(self.sizes[split])
        idx = np.asarray(idx)
        if idx.dtype != bool:
            idx = idx.astype(np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= self.sizes[split]):
                raise BadInputError(
                    f"positions must be in 0..{self.sizes[split] - 1} for the "
                    f"{split} split; pass positions, not record ids"
                )
        elif idx.shape != (self.sizes[split],):
            raise BadInputError(
                f"a mask for the {split} split needs {self.sizes[split]} entries, got {idx.shape}"
            )
        return self.X[split][idx], self.y[split][idx], self.ids[split][idx]

    def positions(self, record_ids: np.ndarray | Sequence[int], split: str = "train") -> np.ndarray:
        """Positions in ``split`` of the given record ids.

        Args:
            record_ids: record ids that must all be in ``split``.
            split: split to look in.

        Returns:
            int64 positions, in the order of ``record_ids``.

        Raises:
            BadInputError: some id is not in the split (the first few are named).
        """
        self._check_split(split)
        wanted = np.asarray(record_ids, dtype=np.int64).ravel()
        have = self.ids[split]
        pos = np.searchsorted(have, wanted)  # ids are sorted within a split
        if len(have):
            found = have[np.minimum(pos, len(have) - 1)] == wanted
        else:
            found = np.zeros(len(wanted), dtype=bool)
        if not found.all():
            bad = wanted[~found][:5].tolist()
            raise BadInputError(
                f"record ids {bad} are not in the {split} split of {self.name}; "
                f"pass ids from bundle.ids[{split!r}]"
            )
        return pos.astype(np.int64)

    def class_counts(self, split: str) -> np.ndarray:
        """Samples per class in ``split`` (length ``num_classes``)."""
        self._check_split(split)
        return np.bincount(self.y[split], minlength=self.num_classes)

    def verify(self, fingerprint: str) -> None:
        """Check that this bundle is the one a run was made with.

        Args:
            fingerprint: the fingerprint stored with the run.

        Raises:
            DataError: the fingerprints differ.
        """
        if fingerprint != self.fingerprint:
            raise DataError(
                f"rebuilt {self.name} data differ from the run's (fingerprint "
                f"{self.fingerprint[:12]}... != {str(fingerprint)[:12]}...); use the same data "
                "files, config and library versions the run was made with"
            )

    def summary(self) -> dict[str, Any]:
        """JSON-ready description for run metadata (no arrays)."""
        return {
            "name": self.name,
            "input_kind": self.input_kind,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "n_records": self.n_records,
            "sizes": self.sizes,
            "class_counts": {s: self.class_counts(s).tolist() for s in SPLITS},
            "fingerprint": self.fingerprint,
            "config": None if self.config is None else self.config.model_dump(mode="json"),
        }
