"""The datasets qmu-qiskit knows, by name, and how each one's raw records are read.

A loader returns every record of the dataset in its original order, so a record's row index is
its stable id: ``iris``/``digits`` as scikit-learn bundles them, ``covertype`` as
``fetch_covtype`` returns it, ``mnist``/``fashion_mnist`` as ordered in the official *train*
IDX file. Feature engineering and splitting happen later (:mod:`qmu_qiskit.data.load`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import BadInputError, DataError
from ..registry import ENTRY_POINT_GROUPS, Registry
from .idx import read_idx

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "DatasetInfo",
    "RawDataset",
    "canonical_dataset_name",
    "register_dataset",
    "resolve_data_dir",
]

#: Environment variable naming the folder that holds ``MNIST/raw`` and ``FashionMNIST/raw``.
DATA_DIR_ENV = "QMU_DATA_DIR"
#: Where IDX datasets are looked for when neither an argument nor the variable says otherwise.
DEFAULT_DATA_DIR = "./data"


@dataclass(frozen=True, kw_only=True)
class RawDataset:
    """Every record of a dataset, before any feature engineering.

    Attributes:
        X: ``(N, d)`` float64 for tabular data, ``(N, H, W)`` for image data (uint8 for the IDX
            datasets, float64 for digits).
        y: ``(N,)`` int64 labels in ``0..num_classes-1``.
        pixel_max: for image data, the pixel value that maps to 1.0 (255 for IDX, 16 for
            digits); ``None`` for tabular data.
    """

    X: np.ndarray
    y: np.ndarray
    pixel_max: float | None = None


Loader = Callable[..., RawDataset]


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """What qmu-qiskit knows about one dataset before reading it.

    Attributes:
        name: registry name (``DataConfig.dataset``).
        title: human name used in messages.
        class_names: one name per label, index = label.
        image_shape: ``(H, W)`` for image datasets, ``None`` for tabular ones.
        source: where the records come from.
        offline: whether the data ship with an installed package.
        loader: ``loader(*, data_dir: Path, download: bool) -> RawDataset``.
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int] | None
    source: str
    offline: bool
    loader: Loader

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def is_image(self) -> bool:
        """Whether the ``image`` input kind applies."""
        return self.image_shape is not None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder IDX datasets are read from.

    Args:
        data_dir: explicit folder; wins over the environment.

    Returns:
        ``data_dir`` if given, else ``$QMU_DATA_DIR`` if set and non-empty, else ``./data``.
    """
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


# --------------------------------------------------------------------------- scikit-learn


def _load_iris(*, data_dir: Path, download: bool) -> RawDataset:
    from sklearn.datasets import load_iris

    bunch = load_iris()
    return RawDataset(X=np.asarray(bunch.data, dtype=np.float64), y=bunch.target.astype(np.int64))


def _load_digits(*, data_dir: Path, download: bool) -> RawDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 16 is the maximum count of the 4x4 blocks the 32x32 bitmaps were reduced with (UCI
    # "Optical Recognition of Handwritten Digits"), so /16 maps pixels exactly onto [0, 1].
    return RawDataset(
        X=np.asarray(bunch.images, dtype=np.float64),
        y=bunch.target.astype(np.int64),
        pixel_max=16.0,
    )


def _load_covertype(*, data_dir: Path, download: bool) -> RawDataset:
    from sklearn.datasets import fetch_covtype, get_data_home

    # scikit-learn's own cache (SCIKIT_LEARN_DATA or ~/scikit_learn_data) rather than data_dir:
    # fetch_covtype stores a processed copy in its own layout, not the UCI file.
    try:
        bunch = fetch_covtype(download_if_missing=download)
    except OSError as exc:  # missing cache, or URLError/timeouts/checksum errors when fetching
        home = get_data_home()
        if download:
            raise DataError(
                f"could not download covertype into scikit-learn's data home {home} ({exc}); "
                "it needs internet once, or copy a data home where fetch_covtype already ran "
                "and point SCIKIT_LEARN_DATA at it"
            ) from exc
        raise DataError(
            f"covertype is not cached in scikit-learn's data home {home}; it needs internet "
            "once (pass --download), or copy a data home where fetch_covtype already ran and "
            "point SCIKIT_LEARN_DATA at it"
        ) from exc
    # UCI labels are 1..7; the rest of the project expects 0..C-1.
    return RawDataset(
        X=np.asarray(bunch.data, dtype=np.float64), y=bunch.target.astype(np.int64) - 1
    )


# --------------------------------------------------------------------------- IDX (torchvision)

_IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _find(raw_dir: Path, stem: str) -> Path | None:
    # Older torchvision versions keep both the .gz and the extracted file; the plain one is
    # faster to read.
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _expected_names() -> str:
    return ", ".join(f"{stem}(.gz)" for stem in _IDX_STEMS)


def _missing_message(title: str, raw_dir: Path, missing: list[str], *, download: bool) -> str:
    tail = "" if download else ", or pass --download (needs torchvision and internet once)"
    return (
        f"{title} files not found in {raw_dir} (missing {', '.join(missing)}): expected "
        f"{_expected_names()}; pass --data-dir pointing at a folder in torchvision's layout or "
        f"set {DATA_DIR_ENV}{tail}"
    )


def _download_with_torchvision(*, title: str, folder: str, data_dir: Path, raw_dir: Path) -> None:
    try:
        # Never at module level: torchvision may be absent, or built against another torch
        # (then importing it raises RuntimeError/OSError rather than ImportError).
        import torchvision.datasets as tv_datasets
    except Exception as exc:
        raise DataError(
            f"{title} files not found in {raw_dir} and downloading them needs torchvision, which "
            f"cannot be imported ({type(exc).__name__}: {exc}); install it (pip install "
            f"'qmu-qiskit[torchvision]') or put {_expected_names()} there (or pass --data-dir / "
            f"set {DATA_DIR_ENV})"
        ) from exc
    dataset_cls = getattr(tv_datasets, folder)
    try:
        for train in (True, False):
            dataset_cls(root=str(data_dir), train=train, download=True)
    except Exception as exc:
        raise DataError(
            f"could not download {title} into {raw_dir} ({type(exc).__name__}: {exc}); it needs "
            f"internet once, or put {_expected_names()} there (or pass --data-dir / set "
            f"{DATA_DIR_ENV})"
        ) from exc


def _idx_loader(*, title: str, folder: str, num_classes: int) -> Loader:
    def load(*, data_dir: Path, download: bool) -> RawDataset:
        raw_dir = data_dir / folder / "raw"
        found = {stem: _find(raw_dir, stem) for stem in _IDX_STEMS}
        missing = [stem for stem, path in found.items() if path is None]
        if missing and download:
            _download_with_torchvision(
                title=title, folder=folder, data_dir=data_dir, raw_dir=raw_dir
            )
            found = {stem: _find(raw_dir, stem) for stem in _IDX_STEMS}
            missing = [stem for stem, path in found.items() if path is None]
        if missing:
            raise DataError(_missing_message(title, raw_dir, missing, download=download))
        present = {stem: path for stem, path in found.items() if path is not None}

        # The t10k pair is read only to verify the copy is complete and sound: the project's
        # splits are carved from the train file, so record ids are its row indices.
        pairs = {}
        for part in ("train", "t10k"):
            img_path = present[f"{part}-images-idx3-ubyte"]
            lbl_path = present[f"{part}-labels-idx1-ubyte"]
            images = read_idx(img_path, expect_ndim=3, expect_dtype="uint8")
            labels = read_idx(lbl_path, expect_ndim=1, expect_dtype="uint8")
            if images.shape[1:] != (28, 28):
                raise DataError(
                    f"{title} images in {img_path} are {images.shape[1]}x{images.shape[2]}, "
                    f"expected 28x28; replace the file with the official {title} file"
                )
            if len(labels) != len(images):
                raise DataError(
                    f"{title} label count {len(labels)} in {lbl_path} does not match the image "
                    f"count {len(images)} in {img_path}; download both files again"
                )
            if len(labels) and int(labels.max()) >= num_classes:
                bad = int(np.flatnonzero(labels >= num_classes)[0])
                raise DataError(
                    f"{title} labels in {lbl_path} must be 0..{num_classes - 1}, record {bad} "
                    f"has {int(labels[bad])}; download the file again"
                )
            pairs[part] = (images, labels)
        images, labels = pairs["train"]
        return RawDataset(X=images, y=labels.astype(np.int64), pixel_max=255.0)

    return load


_DIGIT_NAMES = tuple(str(d) for d in range(10))

#: Every dataset by name: the built-ins below, then installed plugins (entry-point group
#: ``qmu_qiskit.datasets``), loaded on first use. Files (``.csv``/``.npz``) need no entry:
#: see :mod:`qmu_qiskit.data.files`.
DATASETS: Registry[DatasetInfo] = Registry("dataset", group=ENTRY_POINT_GROUPS["dataset"])


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Register a dataset under ``info.name``.

    A plugin calls this in the module its ``qmu_qiskit.datasets`` entry point names; the
    dataset then works with ``train --dataset NAME`` and in job specs. Its ``loader`` returns
    every record in a fixed order (the row index is the record id) as a :class:`RawDataset`.

    Returns:
        ``info``.

    Raises:
        BadInputError: the name is not a plain lower-case name, or the info is inconsistent.
    """
    if not info.name or info.name != info.name.strip().lower().replace("-", "_"):
        raise BadInputError(
            f"dataset name {info.name!r} must be lower case with '_' (e.g. "
            "'two_moons'), the form canonical_dataset_name produces"
        )
    if len(info.class_names) < 2:
        raise BadInputError(f"dataset {info.name!r} needs at least 2 class names")
    return DATASETS.register(info.name, info)


for _info in (
    DatasetInfo(
        name="iris",
        title="iris",
        class_names=("setosa", "versicolor", "virginica"),
        image_shape=None,
        source="sklearn.datasets.load_iris (bundled, offline); HQML's Iris study",
        offline=True,
        loader=_load_iris,
    ),
    DatasetInfo(
        name="digits",
        title="digits",
        class_names=_DIGIT_NAMES,
        image_shape=(8, 8),
        source="sklearn.datasets.load_digits (bundled, offline), 8x8 images",
        offline=True,
        loader=_load_digits,
    ),
    DatasetInfo(
        name="mnist",
        title="MNIST",
        class_names=_DIGIT_NAMES,
        image_shape=(28, 28),
        source="IDX files in <data_dir>/MNIST/raw (torchvision layout); HQML and QMU",
        offline=False,
        loader=_idx_loader(title="MNIST", folder="MNIST", num_classes=10),
    ),
    DatasetInfo(
        name="fashion_mnist",
        title="FashionMNIST",
        # Label order of Zalando's fashion-mnist README.
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        image_shape=(28, 28),
        source="IDX files in <data_dir>/FashionMNIST/raw (torchvision layout); HQML",
        offline=False,
        loader=_idx_loader(title="FashionMNIST", folder="FashionMNIST", num_classes=10),
    ),
    DatasetInfo(
        name="covertype",
        title="covertype",
        # UCI Covertype cover types 1..7, shifted to labels 0..6.
        class_names=(
            "Spruce/Fir",
            "Lodgepole Pine",
            "Ponderosa Pine",
            "Cottonwood/Willow",
            "Aspen",
            "Douglas-fir",
            "Krummholz",
        ),
        image_shape=None,
        source="sklearn.datasets.fetch_covtype (needs internet once); DG-QMU",
        offline=False,
        loader=_load_covertype,
    ),
):
    register_dataset(_info)

_ALIASES = {
    "fashion": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "covtype": "covertype",
}


def canonical_dataset_name(name: str) -> str:
    """Map a user-typed dataset name to its registry name.

    Case, ``-`` versus ``_`` and a few common spellings (``FashionMNIST``, ``covtype``) are
    accepted.

    Args:
        name: the name as typed.

    Returns:
        A key of :data:`DATASETS`.

    Raises:
        BadInputError: the name is not a known dataset.
    """
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise BadInputError(
            f"unknown dataset {name!r}; use one of: {', '.join(DATASETS)}, or a .csv/.npz file"
        )
    return key
