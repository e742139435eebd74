"""Typed, validated options of the data layer."""

from __future__ import annotations

import math
import os
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ..exceptions import BadInputError, QmuError
from .sources import DATASETS, canonical_dataset_name

__all__ = ["DataConfig", "InputKind"]

InputKind = Literal["angles", "image", "amplitude"]

_HINT = (
    "valid fields: dataset, path, target, id_column, sha256, data_dir, input_kind, n_features, "
    "angle_range, samples_per_class, test_size, val_size, seed, download, quirks"
)


def _one_line(exc: ValidationError) -> QmuError:
    """Turn pydantic's multi-line report into the project's one-line error."""
    parts = []
    ours = True
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, QmuError):
            # Raised by our own __init__ while pydantic validated a nested/dict input.
            return cause
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        ours = ours and err.get("type") == "value_error"
        if err.get("type") != "value_error" and "input" in err:
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    text = "invalid data config: " + "; ".join(parts)
    return BadInputError(text if ours else f"{text}; {_HINT}")


class DataConfig(BaseModel):
    """Which dataset to load, how to encode it, and how to split it.

    Every field is validated on construction; a bad value raises :class:`BadInputError` with a
    one-line message (never pydantic's multi-line report). The model is frozen, so a config
    stored with a run cannot drift from the data it produced.

    Args:
        dataset: a name in :data:`~qmu_qiskit.data.DATASETS` (``iris``, ``digits``, ``mnist``,
            ``fashion_mnist``, ``covertype``, or a plugin's); case and ``-``/``_`` are
            forgiven. A ``.csv`` or ``.npz`` path here is moved to ``path`` and the dataset is
            named after the file (``my.csv`` → ``my``).
        path: a user's data file (``.csv`` with a header line, or ``.npz`` with arrays ``X``,
            ``y`` and optionally ``ids``); stored absolute. See :mod:`qmu_qiskit.data.files`.
        target: the CSV column holding the labels (required for ``.csv``).
        id_column: the CSV column holding integer record ids (default: row numbers 0..N-1).
        sha256: the file's SHA-256, filled in on construction and checked on every load, so a
            run never silently uses a changed file.
        data_dir: folder holding ``MNIST/raw`` / ``FashionMNIST/raw`` in torchvision's layout;
            ``None`` means ``$QMU_DATA_DIR``, else ``./data``. Resolved when loading, so a
            stored config stays portable. Not used by the scikit-learn datasets (covertype is
            cached in scikit-learn's data home, ``$SCIKIT_LEARN_DATA``).
        input_kind: ``angles`` (PCA + MinMax to ``angle_range``), ``image`` (``(N, 1, H, W)``
            in [0, 1], image datasets only) or ``amplitude`` (PCA + unit L2 rows).
        n_features: PCA components for ``angles``/``amplitude`` (e.g. 8 for HQML's MNIST PCA
            model, 10 for Fashion; 256 for QMU's basic QNN). ``None`` keeps every feature.
            Not allowed with ``image``.
        angle_range: target interval of ``angles``. Default (0, π); HQML's scripts scale to
            (−π, π), so the faithful protocol passes that.
        samples_per_class: per-class subsample of the pool before splitting (HQML: 200 for
            MNIST, 800 for Fashion-MNIST). ``None`` uses every record.
        test_size: stratified test fraction of the pool, in [0, 1) (HQML: 0.2).
        val_size: validation fraction carved from the remaining training part, in [0, 1);
            0 gives an empty validation split.
        seed: seeds subsampling and splits (HQML: 0).
        download: allow fetching missing files (torchvision for MNIST/Fashion-MNIST,
            scikit-learn for covertype).
        quirks: HQML's data draws, reproduced only when named (:mod:`qmu_qiskit.data.hqml`):
            ``scaler_on_all``, ``shuffled_subset``, ``torch_class_draws``. Empty by default.

    Raises:
        BadInputError: on any invalid field or combination.

    Example:
        >>> cfg = DataConfig(dataset="iris", n_features=4)
        >>> cfg.test_size
        0.2
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    path: str | None = None
    target: str | None = None
    id_column: str | None = None
    sha256: str | None = None
    data_dir: str | None = None
    input_kind: InputKind = "angles"
    n_features: int | None = None
    angle_range: tuple[float, float] = (0.0, math.pi)
    samples_per_class: int | None = None
    test_size: float = 0.2
    val_size: float = 0.1
    seed: int = 0
    download: bool = False
    quirks: tuple[Literal["scaler_on_all", "shuffled_subset", "torch_class_draws"], ...] = ()

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _one_line(exc) from exc

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> DataConfig:
        if isinstance(obj, cls):
            return obj
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _one_line(exc) from exc

    @classmethod
    def model_validate_json(cls, json_data: Any, **kwargs: Any) -> DataConfig:
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise _one_line(exc) from exc

    @classmethod
    def coerce(cls, obj: Any) -> DataConfig:
        """Accept a :class:`DataConfig` or a mapping of its fields.

        Args:
            obj: a config or a dict.

        Returns:
            A validated config.

        Raises:
            BadInputError: ``obj`` is neither, or a field is invalid.
        """
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, dict):
            return cls(**obj)
        raise BadInputError(
            f"expected a DataConfig or a dict of its fields, got {type(obj).__name__}; "
            "build one with DataConfig(dataset=...)"
        )

    # ----------------------------------------------------------------------- validators

    @model_serializer(mode="wrap")
    def _drop_unset_file_fields(self, handler: Any) -> Any:
        # A built-in dataset's config is recorded without the (unset) file fields, as before
        # they existed.
        data = handler(self)
        if isinstance(data, dict) and data.get("path") is None:
            for key in ("path", "target", "id_column", "sha256"):
                if data.get(key) is None:
                    data.pop(key, None)
        return data

    @property
    def is_file(self) -> bool:
        """Whether the data come from a user's file (``path``)."""
        return self.path is not None

    @model_validator(mode="before")
    @classmethod
    def _file_dataset(cls, data: Any) -> Any:
        # `--dataset my.csv` arrives as the dataset; the file becomes `path`, the name its stem.
        if not isinstance(data, dict):
            return data
        from .files import is_data_file, prepare_file_fields

        dataset = data.get("dataset")
        if isinstance(dataset, os.PathLike):
            dataset = os.fspath(dataset)
        if data.get("path") is None and isinstance(dataset, str) and is_data_file(dataset):
            data = {**data, "path": dataset, "dataset": None}
        if data.get("path") is not None:
            try:
                data = prepare_file_fields(data)
            except QmuError as exc:
                raise ValueError(str(exc)) from None
            return data
        if any(data.get(k) is not None for k in ("target", "id_column", "sha256")):
            raise ValueError(
                "target, id_column and sha256 apply only to a data file; pass "
                "--dataset PATH.csv (or .npz)"
            )
        if "dataset" in data:
            value = dataset
            if not isinstance(value, str):
                raise ValueError(
                    f"dataset must be a name or a .csv/.npz file, got {value!r}; "
                    f"use one of: {', '.join(DATASETS)}"
                )
            try:
                data = {**data, "dataset": canonical_dataset_name(value)}
            except BadInputError as exc:
                # pydantic only collects ValueError; the message is already the user-facing one.
                raise ValueError(str(exc)) from None
        return data

    @field_validator("data_dir", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("n_features")
    @classmethod
    def _positive_features(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(
                f"n_features must be >= 1, got {value}; pass a positive count or "
                "leave it unset to keep every feature"
            )
        return value

    @field_validator("samples_per_class")
    @classmethod
    def _positive_spc(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(
                f"samples_per_class must be >= 1, got {value}; pass a positive "
                "count or leave it unset to use every record"
            )
        return value

    @field_validator("test_size", "val_size")
    @classmethod
    def _fraction(cls, value: float, info: Any) -> float:
        if not (0.0 <= value < 1.0):
            raise ValueError(
                f"{info.field_name} must be a fraction in [0, 1), got {value}; e.g. 0.2"
            )
        return value

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, value: int) -> int:
        # scikit-learn's random_state and numpy's legacy seeding both stop at 2**32 - 1.
        if not (0 <= value <= 2**32 - 1):
            raise ValueError(
                f"seed must be in 0..{2**32 - 1}, got {value}; pass a small non-negative integer"
            )
        return value

    @field_validator("angle_range")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(
                f"angle_range must be two finite numbers low < high, got {value}; "
                "e.g. (0, 3.141592653589793)"
            )
        return (float(low), float(high))

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        if self.path is not None:
            if self.input_kind == "image":
                raise ValueError(
                    "input_kind 'image' needs an image dataset; a data file gives "
                    "tabular features, use 'angles' or 'amplitude'"
                )
            return self
        info = DATASETS[self.dataset]
        if len(set(self.quirks)) != len(self.quirks):
            raise ValueError("quirks lists a quirk twice; name each once")
        object.__setattr__(self, "quirks", tuple(sorted(self.quirks)))
        if self.input_kind == "image":
            if not info.is_image:
                images = ", ".join(n for n, i in DATASETS.items() if i.is_image)
                raise ValueError(
                    f"input_kind 'image' needs an image dataset ({images}), "
                    f"{self.dataset} is tabular; use input_kind 'angles' or "
                    "'amplitude'"
                )
            if self.n_features is not None:
                raise ValueError(
                    "n_features does not apply to input_kind 'image' (images "
                    "keep every pixel); leave it unset"
                )
        return self
