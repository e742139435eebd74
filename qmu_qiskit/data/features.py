"""Turn raw records into the inputs the models take (``input_kind``).

Every fitted transform (PCA, MinMax scaling) is fitted on the training split only and then
applied unchanged to validation and test, so no statistic of held-out data leaks into the
features (HQML's scripts fit PCA and the scaler on all data before splitting; we do not).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..exceptions import BadInputError

__all__ = ["encode"]

# Below this L2 norm a row is treated as the zero vector (float64 PCA output; real rows are
# many orders of magnitude larger).
_ZERO_NORM = 1e-12


def _flatten(x: np.ndarray, pixel_max: Optional[float]) -> np.ndarray:
    # Explicit width: reshape(0, -1) is ambiguous for an empty split.
    flat = x.reshape(len(x), int(np.prod(x.shape[1:]))).astype(np.float64)
    return flat / pixel_max if pixel_max else flat


def _apply(transform, x: np.ndarray, width: int) -> np.ndarray:
    # scikit-learn refuses zero-row inputs; an empty split (val_size=0) stays empty.
    if len(x) == 0:
        return np.empty((0, width), dtype=np.float64)
    return transform(x)


def _pca(flat: dict[str, np.ndarray], n_features: Optional[int], *, dataset: str
         ) -> dict[str, np.ndarray]:
    dim = flat["train"].shape[1]
    if n_features is None or n_features == dim:
        return flat
    if n_features > dim:
        raise BadInputError(
            f"n_features={n_features} exceeds the {dim} features of {dataset}; use at most {dim} "
            "or leave n_features unset"
        )
    n_train = len(flat["train"])
    if n_features > n_train:
        raise BadInputError(
            f"PCA to n_features={n_features} needs at least {n_features} training samples, the "
            f"train split of {dataset} has {n_train}; lower n_features or use more samples"
        )
    from sklearn.decomposition import PCA

    # svd_solver="full" is exact LAPACK SVD: no randomised solver, so the same train split
    # always yields the same components (sign fixed by scikit-learn's svd_flip).
    pca = PCA(n_components=n_features, svd_solver="full").fit(flat["train"])
    return {split: _apply(pca.transform, x, n_features) for split, x in flat.items()}


def _unit_rows(z: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    zero = norms[:, 0] <= _ZERO_NORM
    out = z / np.where(norms <= _ZERO_NORM, 1.0, norms)
    # A zero row has no direction; the uniform superposition keeps it a valid state vector
    # instead of a NaN or an all-zero vector that amplitude encoding would reject.
    if zero.any():
        out[zero] = 1.0 / math.sqrt(z.shape[1])
    return out


def encode(
    raw: dict[str, np.ndarray],
    *,
    input_kind: str,
    dataset: str,
    pixel_max: Optional[float],
    image_shape: Optional[tuple[int, int]],
    n_features: Optional[int],
    angle_range: tuple[float, float],
) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """Encode the raw records of every split.

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
    if input_kind == "image":
        if image_shape is None or pixel_max is None:
            raise BadInputError(
                f"input_kind 'image' needs an image dataset, {dataset} is tabular; use 'angles' "
                "or 'amplitude'"
            )
        height, width = image_shape
        # Divide in float32, like torchvision's ToTensor, so pixels match HQML's inputs bit
        # for bit; 0 and pixel_max map exactly to 0.0 and 1.0.
        scale = np.float32(pixel_max)
        out = {
            split: (x.astype(np.float32) / scale).reshape(len(x), 1, height, width)
            for split, x in raw.items()
        }
        return out, (1, height, width)

    flat = _pca({s: _flatten(x, pixel_max) for s, x in raw.items()}, n_features, dataset=dataset)
    width = flat["train"].shape[1]

    if input_kind == "angles":
        from sklearn.preprocessing import MinMaxScaler

        # clip=True: validation/test points can fall slightly outside the train range. Past
        # the ends of (0, π) a rotation angle folds back (a rotation of |0> gives <Z> = cos θ,
        # symmetric about 0 and π, so π + δ reads like π − δ), so an unclipped outlier would be
        # encoded like an inlier from the wrong side; clipping keeps the encoding monotone and
        # inside the interval the model was trained on.
        scaler = MinMaxScaler(feature_range=angle_range, clip=True).fit(flat["train"])
        out64 = {s: _apply(scaler.transform, x, width) for s, x in flat.items()}
    elif input_kind == "amplitude":
        out64 = {s: _unit_rows(x) for s, x in flat.items()}
    else:
        raise BadInputError(
            f"unknown input_kind {input_kind!r}; use 'angles', 'image' or 'amplitude'"
        )
    return {s: np.ascontiguousarray(x, dtype=np.float32) for s, x in out64.items()}, (width,)
