"""Turn raw records into the inputs the models take (``input_kind``).

Every fitted transform (PCA, MinMax scaling) is fitted on the training split only and then
applied unchanged to validation and test, so no statistic of held-out data leaks into the
features (HQML's scripts fit PCA and the scaler on all data before splitting; we do not).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..exceptions import BadInputError

__all__ = ["Encoder", "encode"]

# Below this L2 norm a row is treated as the zero vector (float64 PCA output; real rows are
# many orders of magnitude larger).
_ZERO_NORM = 1e-12


def _flatten(x: np.ndarray, pixel_max: float | None) -> np.ndarray:
    # Explicit width: reshape(0, -1) is ambiguous for an empty split.
    flat = x.reshape(len(x), int(np.prod(x.shape[1:]))).astype(np.float64)
    return flat / pixel_max if pixel_max else flat


def _apply(transform: Callable[[np.ndarray], np.ndarray], x: np.ndarray, width: int) -> np.ndarray:
    # scikit-learn refuses zero-row inputs; an empty split (val_size=0) stays empty.
    if len(x) == 0:
        return np.empty((0, width), dtype=np.float64)
    return transform(x)


def _check_pca(dim: int, n_train: int, n_features: int, dataset: str) -> None:
    if n_features > dim:
        raise BadInputError(
            f"n_features={n_features} exceeds the {dim} features of {dataset}; use at most {dim} "
            "or leave n_features unset"
        )
    if n_features > n_train:
        raise BadInputError(
            f"PCA to n_features={n_features} needs at least {n_features} training samples, the "
            f"train split of {dataset} has {n_train}; lower n_features or use more samples"
        )


def _unit_rows(z: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    zero = norms[:, 0] <= _ZERO_NORM
    out = z / np.where(norms <= _ZERO_NORM, 1.0, norms)
    # A zero row has no direction; the uniform superposition keeps it a valid state vector
    # instead of a NaN or an all-zero vector that amplitude encoding would reject.
    if zero.any():
        out[zero] = 1.0 / math.sqrt(z.shape[1])
    return out


class Encoder:
    """The input encoding of a run, fitted on the training split only.

    :func:`encode` fits one on the training split and applies it to every split; a loaded model
    (:func:`qmu_qiskit.load_model`) refits the same encoder on the same training split
    and applies it to new raw records, so ``predict`` takes data as it comes from the source.

    Args:
        input_kind: ``angles``, ``image`` or ``amplitude``.
        dataset: dataset name, for messages.
        pixel_max: pixel value that maps to 1.0 for image data; ``None`` for tabular data.
        image_shape: ``(H, W)`` for image data.
        n_features: PCA components, or ``None`` to keep every feature.
        angle_range: ``(low, high)`` of the ``angles`` encoding.
    """

    def __init__(
        self,
        *,
        input_kind: str,
        dataset: str,
        pixel_max: float | None,
        image_shape: tuple[int, int] | None,
        n_features: int | None,
        angle_range: tuple[float, float],
    ):
        if input_kind not in ("angles", "image", "amplitude"):
            raise BadInputError(
                f"unknown input_kind {input_kind!r}; use 'angles', 'image' or 'amplitude'"
            )
        if input_kind == "image" and (image_shape is None or pixel_max is None):
            raise BadInputError(
                f"input_kind 'image' needs an image dataset, {dataset} is tabular; use 'angles' "
                "or 'amplitude'"
            )
        self.input_kind = input_kind
        self.dataset = dataset
        self.pixel_max = pixel_max
        self.image_shape = image_shape
        self.n_features = n_features
        self.angle_range = angle_range
        self.raw_width: int | None = None
        self.width: int | None = None
        self._pca: Any = None  # fitted sklearn PCA / MinMaxScaler (untyped library)
        self._scaler: Any = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the encoded inputs (after :meth:`fit`)."""
        if self.input_kind == "image":
            height, width = self.image_shape  # type: ignore[misc]
            return (1, height, width)
        if self.width is None:
            raise BadInputError("the encoder is not fitted yet; call fit(train_records) first")
        return (self.width,)

    def fit(self, train: np.ndarray) -> Encoder:
        """Fit PCA / scaling on the raw training records."""
        if self.input_kind == "image":
            return self
        flat = _flatten(train, self.pixel_max)
        self.raw_width = dim = flat.shape[1]
        if self.n_features is not None and self.n_features != dim:
            _check_pca(dim, len(flat), self.n_features, self.dataset)
            from sklearn.decomposition import PCA

            # svd_solver="full" is exact LAPACK SVD: no randomised solver, so the same train
            # split always yields the same components (sign fixed by scikit-learn's svd_flip).
            self._pca = PCA(n_components=self.n_features, svd_solver="full").fit(flat)
            flat = self._pca.transform(flat)
        self.width = flat.shape[1]
        if self.input_kind == "angles":
            from sklearn.preprocessing import MinMaxScaler

            # clip=True: validation/test points can fall slightly outside the train range.
            # Past the ends of (0, π) a rotation angle folds back (a rotation of |0> gives
            # <Z> = cos θ, symmetric about 0 and π, so π + δ reads like π − δ), so an unclipped
            # outlier would be encoded like an inlier from the wrong side; clipping keeps the
            # encoding monotone and inside the interval the model was trained on.
            self._scaler = MinMaxScaler(feature_range=self.angle_range, clip=True).fit(flat)
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Encode raw records with the fitted transforms.

        Raises:
            BadInputError: the records have another shape than the training records.
        """
        if self.input_kind == "image":
            height, width = self.image_shape  # type: ignore[misc]
            if tuple(raw.shape[1:]) not in ((height, width), (1, height, width)):
                raise BadInputError(
                    f"expected {height}x{width} images, got records of shape {tuple(raw.shape[1:])}"
                )
            # Divide in float32, like torchvision's ToTensor, so pixels match HQML's inputs bit
            # for bit; 0 and pixel_max map exactly to 0.0 and 1.0.
            scale = np.float32(self.pixel_max)
            return (raw.astype(np.float32) / scale).reshape(len(raw), 1, height, width)
        if self.width is None:
            raise BadInputError("the encoder is not fitted yet; call fit(train_records) first")
        flat = _flatten(raw, self.pixel_max)
        if flat.shape[1] != self.raw_width:
            raise BadInputError(
                f"expected records with {self.raw_width} features ({self.dataset}),"
                f" got {flat.shape[1]}; pass the same columns the model was "
                "trained on"
            )
        if self._pca is not None:
            flat = _apply(self._pca.transform, flat, self.width)
        if self.input_kind == "angles":
            out64 = _apply(self._scaler.transform, flat, self.width)
        else:
            out64 = _unit_rows(flat)
        return np.ascontiguousarray(out64, dtype=np.float32)


def encode(
    raw: dict[str, np.ndarray],
    *,
    input_kind: str,
    dataset: str,
    pixel_max: float | None,
    image_shape: tuple[int, int] | None,
    n_features: int | None,
    angle_range: tuple[float, float],
) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """Encode the raw records of every split with an :class:`Encoder` fitted on ``train``.

    Args:
        raw: split name -> raw records (``(N, d)`` or ``(N, H, W)``); must contain ``train``.
        input_kind: ``angles``, ``image`` or ``amplitude``.
        dataset: dataset name, for messages.
        pixel_max: pixel value that maps to 1.0 for image data; ``None`` for tabular data.
        image_shape: ``(H, W)`` for image data.
        n_features: PCA components, or ``None`` to keep every feature.
        angle_range: ``(low, high)`` of the ``angles`` encoding.

    Returns:
        ``(features, input_shape)``: split name -> float32 array, and the per-sample shape.

    Raises:
        BadInputError: ``n_features`` exceeds the feature count or the training-set size, or
            ``image`` is asked of tabular data.
    """
    enc = Encoder(
        input_kind=input_kind,
        dataset=dataset,
        pixel_max=pixel_max,
        image_shape=image_shape,
        n_features=n_features,
        angle_range=angle_range,
    )
    enc.fit(raw["train"])
    return {s: enc.transform(x) for s, x in raw.items()}, enc.input_shape
