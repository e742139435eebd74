"""HQML's data draws, as its scripts ran them — each a named quirk (``DataConfig.quirks``) that
the faithful study specs switch on and the study report lists (docs/reference.md §5).

HQML (Crivoi & Ionescu, arXiv 2512.19253, code ``CrivoiCarla/HQML``) prepares its data in ways
the project's default loader deliberately does not:

* ``scaler_on_all`` — the MinMax scaler to (−π, π) (and, for PCA inputs, the PCA) is fitted on
  ALL selected samples before the train/test split (``load_data`` of the Iris scripts and of the
  MNIST PCA branch), so test data shape the encoding. The default fits on the training split.
* ``shuffled_subset`` — the 2% forget subset is drawn by ``train_test_split(X_tr, y_tr,
  test_size=F, stratify=y_tr, random_state=seed)`` from the training split *in the order the
  first split returned it* (shuffled); the default loader sorts D_tr by record id first, so the
  same call forgets different records.
* ``torch_class_draws`` — MNIST / Fashion-MNIST samples per class are drawn from train ∪ test
  (70,000 records: record ids 0..59,999 are the train file's rows, 60,000..69,999 the t10k
  file's) with ``torch.randperm`` on one ``torch.Generator().manual_seed(seed)`` shared across
  classes, in class order (HQML's CNN branch, ``load_data_cnn``); the default draws with numpy
  from the train file only.

The pool keeps HQML's order (classes one after the other, each in draw order), because the
stratified splits of scikit-learn depend on the order of their input.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..exceptions import BadInputError
from .features import _apply, _flatten

#: Every data quirk a :class:`~qmu_qiskit.data.DataConfig` may name.
DATA_QUIRKS: tuple[str, ...] = ("scaler_on_all", "shuffled_subset", "torch_class_draws")

_IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _train_and_test(cfg, info):
    """Every record of train ∪ test of an IDX dataset, train rows first (HQML's ``torch.cat``)."""
    from .idx import read_idx
    from .sources import RawDataset, _find, resolve_data_dir

    # the loader checks both files; it returns the train file's records
    train = info.loader(data_dir=resolve_data_dir(cfg.data_dir), download=cfg.download)
    raw_dir = resolve_data_dir(cfg.data_dir) / _IDX_FOLDERS[cfg.dataset] / "raw"
    images = read_idx(_find(raw_dir, "t10k-images-idx3-ubyte"), expect_ndim=3, expect_dtype="uint8")
    labels = read_idx(_find(raw_dir, "t10k-labels-idx1-ubyte"), expect_ndim=1, expect_dtype="uint8")
    return RawDataset(
        X=np.concatenate([train.X, images]),
        y=np.concatenate([train.y, labels.astype(np.int64)]),
        pixel_max=train.pixel_max,
    )


def torch_class_draws(
    y: np.ndarray, samples_per_class: int, seed: int, num_classes: int
) -> np.ndarray:
    """HQML's ``load_data_cnn`` draw: for each class in order, ``torch.randperm`` over that class's
    records (one generator seeded once, shared across classes), keep the first
    ``samples_per_class``. Returns record ids in HQML's order (class by class, draw order)."""
    import torch

    y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    g = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in range(num_classes):
        idx = (y_t == c).nonzero(as_tuple=True)[0]
        if len(idx) < samples_per_class:
            raise BadInputError(
                f"samples_per_class={samples_per_class} exceeds the {len(idx)} "
                f"records of class {c}; use at most {len(idx)}"
            )
        perm = torch.randperm(len(idx), generator=g)
        chosen.append(idx[perm[:samples_per_class]].numpy())
    return np.concatenate(chosen).astype(np.int64)


def _numpy_class_draws(
    y: np.ndarray, samples_per_class: int, seed: int, num_classes: int
) -> np.ndarray:
    """HQML's PCA-branch draw (``rng.choice`` per class), in draw order (not sorted)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.choice(np.flatnonzero(y == c), size=samples_per_class, replace=False)
            for c in range(num_classes)
        ]
    ).astype(np.int64)


def _check(cfg, info) -> None:
    unknown = [q for q in cfg.quirks if q not in DATA_QUIRKS]
    if unknown:
        raise BadInputError(f"unknown data quirk {unknown[0]!r}; known: {', '.join(DATA_QUIRKS)}")
    if "torch_class_draws" in cfg.quirks:
        if cfg.dataset not in _IDX_FOLDERS:
            raise BadInputError(
                "data quirk torch_class_draws applies to mnist and fashion_mnist "
                f"(HQML's CNN branch), not {cfg.dataset}"
            )
        if cfg.samples_per_class is None:
            raise BadInputError(
                "data quirk torch_class_draws needs samples_per_class (HQML: 200 "
                "MNIST, 800 Fashion-MNIST)"
            )
    if "scaler_on_all" in cfg.quirks and cfg.input_kind != "angles":
        raise BadInputError(
            "data quirk scaler_on_all applies to the angles encoding (HQML fits "
            f"its MinMax scaler on all samples), not {cfg.input_kind!r}"
        )


def _raw_and_pool(cfg, info):
    """The raw records and the pool of record ids in HQML's order."""
    if "torch_class_draws" in cfg.quirks:
        raw = _train_and_test(cfg, info)
        return raw, torch_class_draws(raw.y, cfg.samples_per_class, cfg.seed, info.num_classes)
    from .sources import resolve_data_dir

    raw = info.loader(data_dir=resolve_data_dir(cfg.data_dir), download=cfg.download)
    if cfg.samples_per_class is not None:
        return raw, _numpy_class_draws(raw.y, cfg.samples_per_class, cfg.seed, info.num_classes)
    return raw, np.arange(len(raw.y), dtype=np.int64)


def _split_in_order(
    pool: np.ndarray, y: np.ndarray, cfg
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HQML's ``train_test_split(X, y, test_size, stratify=y, random_state=seed)`` on the pool in
    its order; returns (train in the order the split returned it, val, test)."""
    from sklearn.model_selection import train_test_split

    try:
        rest, test = (
            train_test_split(pool, test_size=cfg.test_size, stratify=y[pool], random_state=cfg.seed)
            if cfg.test_size
            else (pool, pool[:0])
        )
        train, val = (
            train_test_split(rest, test_size=cfg.val_size, stratify=y[rest], random_state=cfg.seed)
            if cfg.val_size
            else (rest, rest[:0])
        )
    except ValueError as exc:
        raise BadInputError(
            f"cannot split {cfg.dataset} as HQML did ({exc}); use more samples"
        ) from exc
    return np.asarray(train), np.asarray(val), np.asarray(test)


@lru_cache(maxsize=8)
def _train_order_cached(cfg_json: str) -> np.ndarray:
    from .config import DataConfig
    from .sources import DATASETS

    cfg = DataConfig.model_validate_json(cfg_json)
    raw, pool = _raw_and_pool(cfg, DATASETS[cfg.dataset])
    train, _, _ = _split_in_order(pool, raw.y, cfg)
    out = train.astype(np.int64)
    out.setflags(write=False)
    return out


def train_order(cfg) -> np.ndarray:
    """Record ids of D_tr in the order HQML's first split returned them (shuffled): what
    ``shuffled_subset`` draws the subset forget set from."""
    return _train_order_cached(cfg.model_dump_json())


def load_hqml(cfg, info):
    """:func:`~qmu_qiskit.data.load_data` with HQML's data quirks (``cfg.quirks``).

    Raises:
        BadInputError: a quirk that does not apply to the dataset or encoding.
    """
    from .bundle import DataBundle
    from .features import Encoder

    _check(cfg, info)
    raw, pool = _raw_and_pool(cfg, info)
    train, val, test = _split_in_order(pool, raw.y, cfg)
    ids = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    parts = {split: raw.X[split_ids] for split, split_ids in ids.items()}
    enc = Encoder(
        input_kind=cfg.input_kind,
        dataset=cfg.dataset,
        pixel_max=raw.pixel_max,
        image_shape=info.image_shape,
        n_features=cfg.n_features,
        angle_range=cfg.angle_range,
    )
    if "scaler_on_all" in cfg.quirks:
        X, shape = _encode_on_all(parts, cfg, raw.pixel_max, enc)
    else:
        enc.fit(parts["train"])
        X, shape = {s: enc.transform(x) for s, x in parts.items()}, enc.input_shape
    bundle = DataBundle(
        name=cfg.dataset,
        X=X,
        y={s: raw.y[i] for s, i in ids.items()},
        ids=ids,
        num_classes=info.num_classes,
        class_names=info.class_names,
        input_kind=cfg.input_kind,
        input_shape=shape,
        n_records=len(raw.y),
        config=cfg,
    )
    return bundle, enc


def _encode_on_all(parts: dict, cfg, pixel_max: float | None, enc=None):
    """Angles with PCA and MinMax fitted on every selected sample (HQML's ``load_data``):
    ``PCA(n_components, random_state=seed)`` then ``MinMaxScaler(feature_range)`` without
    clipping (nothing falls outside: the scaler saw every sample). ``enc`` (an unfitted
    :class:`~qmu_qiskit.data.features.Encoder`) receives these fitted transforms, so a loaded
    model encodes new records exactly as its training data was encoded."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler

    flat = {s: _flatten(x, pixel_max) for s, x in parts.items()}
    everything = np.concatenate([flat[s] for s in ("train", "val", "test")])
    width = flat_width = everything.shape[1]
    pca = None
    if cfg.n_features is not None and cfg.n_features != width:
        pca = PCA(n_components=cfg.n_features, random_state=cfg.seed).fit(everything)
        flat = {s: _apply(pca.transform, x, cfg.n_features) for s, x in flat.items()}
        everything = pca.transform(everything)
        width = cfg.n_features
    scaler = MinMaxScaler(feature_range=cfg.angle_range).fit(everything)
    out = {
        s: np.ascontiguousarray(_apply(scaler.transform, x, width), dtype=np.float32)
        for s, x in flat.items()
    }
    if enc is not None:
        enc.raw_width = flat_width
        enc._pca = pca
        enc.width = width
        enc._scaler = scaler
    return out, (width,)


def describe(quirks) -> list[str]:
    """One line per data quirk, for reports."""
    text = {
        "scaler_on_all": "MinMax scaler (and PCA) fitted on all samples before splitting",
        "shuffled_subset": "subset forget set drawn from the shuffled training split",
        "torch_class_draws": "per-class draws with torch.randperm from train ∪ test",
    }
    return [text[q] for q in quirks if q in text]
