"""Seeded, stratified subsampling and train/validation/test splits over record ids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..exceptions import BadInputError

__all__ = ["SPLITS", "split_records", "subsample_per_class"]

#: Split names, in the order they are stored and fingerprinted.
SPLITS: tuple[str, ...] = ("train", "val", "test")

_EMPTY = np.empty(0, dtype=np.int64)


def subsample_per_class(
    y: np.ndarray,
    *,
    samples_per_class: int,
    seed: int,
    dataset: str,
    class_names: Sequence[str],
) -> np.ndarray:
    """Draw ``samples_per_class`` records of every class without replacement.

    Mirrors HQML's balanced subset (``rng.choice`` per class with
    ``np.random.default_rng(seed)``, HQML ``load_data``), drawn from the records given.

    Args:
        y: labels of every record; position = record id.
        samples_per_class: records to draw per class (HQML: 200 MNIST, 800 Fashion-MNIST).
        seed: seed of the draw.
        dataset: dataset name, for messages.
        class_names: one name per class; every class must have enough records.

    Returns:
        Sorted record ids of the subsample.

    Raises:
        BadInputError: a class has fewer than ``samples_per_class`` records.
    """
    counts = np.bincount(y, minlength=len(class_names))
    short = int(np.argmin(counts))
    if counts[short] < samples_per_class:
        raise BadInputError(
            f"samples_per_class={samples_per_class} exceeds the {int(counts[short])} records of "
            f"class {short} ({class_names[short]}) in {dataset}; use at most {int(counts[short])}"
        )
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(y == label), size=samples_per_class, replace=False)
        for label in range(len(class_names))
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _carve(
    ids: np.ndarray, y: np.ndarray, fraction: float, *, seed: int, what: str, dataset: str
) -> tuple[np.ndarray, np.ndarray]:
    if fraction == 0:
        return ids, _EMPTY
    from sklearn.model_selection import train_test_split

    try:
        keep, carved = train_test_split(ids, test_size=fraction, stratify=y[ids], random_state=seed)
    except ValueError as exc:
        # scikit-learn refuses when a class or a side of the split is too small to stratify.
        raise BadInputError(
            f"cannot carve a stratified {what} split of {fraction} from {len(ids)} records of "
            f"{dataset} ({exc}); use more samples (samples_per_class) or a different {what}_size"
        ) from exc
    return keep, carved


def split_records(
    pool: np.ndarray,
    y: np.ndarray,
    *,
    test_size: float,
    val_size: float,
    seed: int,
    dataset: str,
    class_names: Sequence[str],
    samples_per_class: int | None = None,
) -> dict[str, np.ndarray]:
    """Split record ids into stratified, seeded ``train``/``val``/``test`` sets.

    Order of operations (HQML's ``split_scenarios`` plus a validation split for the ``fixed``
    protocol, spec §5): optional per-class subsample, then ``test_size`` of the pool as test
    (``train_test_split(..., stratify=y, random_state=seed)``, HQML: 0.2, seed 0), then
    ``val_size`` of the remaining part as validation. What is left is D_tr.

    Args:
        pool: candidate record ids.
        y: labels of every record; position = record id.
        test_size: test fraction of the pool, in [0, 1).
        val_size: validation fraction of the non-test part, in [0, 1).
        seed: seeds subsampling and both splits.
        dataset: dataset name, for messages.
        class_names: one name per class.
        samples_per_class: optional per-class subsample size.

    Returns:
        Split name -> sorted int64 record ids. Sorting makes the stored order independent of
        scikit-learn's shuffling and keeps positions monotone in record id.

    Raises:
        BadInputError: a class is too small for the subsample, or a split would leave a class
            with no records.
    """
    y = np.asarray(y, dtype=np.int64)
    pool = np.asarray(pool, dtype=np.int64)
    if samples_per_class is not None:
        sub = subsample_per_class(
            y[pool],
            samples_per_class=samples_per_class,
            seed=seed,
            dataset=dataset,
            class_names=class_names,
        )
        pool = pool[sub]
    rest, test = _carve(pool, y, test_size, seed=seed, what="test", dataset=dataset)
    train, val = _carve(rest, y, val_size, seed=seed, what="val", dataset=dataset)
    splits = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}

    for name, ids in splits.items():
        if name != "train" and len(ids) == 0:
            continue  # a split switched off by a zero fraction
        counts = np.bincount(y[ids], minlength=len(class_names))
        if (counts == 0).any():
            empty = int(np.flatnonzero(counts == 0)[0])
            raise BadInputError(
                f"the {name} split of {dataset} would have no record of class {empty} "
                f"({class_names[empty]}) ({len(ids)} records in all); use more samples "
                "(samples_per_class) or a larger/zero split fraction"
            )
    return {name: splits[name].astype(np.int64) for name in SPLITS}
