"""``example_moons``: scikit-learn's two interleaving half-moons, 200 points, 2 features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qmu_qiskit.data import DatasetInfo, RawDataset, register_dataset


def _load(*, data_dir: Path, download: bool) -> RawDataset:
    from sklearn.datasets import make_moons

    # Fixed random_state: the records (and so their ids, the row numbers) never change.
    X, y = make_moons(n_samples=200, noise=0.15, random_state=0)
    return RawDataset(X=np.asarray(X, dtype=np.float64), y=np.asarray(y, dtype=np.int64))


register_dataset(
    DatasetInfo(
        name="example_moons",
        title="example moons",
        class_names=("upper", "lower"),
        image_shape=None,
        source="sklearn.datasets.make_moons(200, noise=0.15, random_state=0) (example plugin)",
        offline=True,
        loader=_load,
    )
)
