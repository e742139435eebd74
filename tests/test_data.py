"""Tests of qmu_qiskit.data: IDX files, datasets, encodings, splits and forget scenarios.

Offline and fast: IDX datasets are tiny fixtures written into tmp_path in torchvision's layout,
never /work/shared/data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from qmu_qiskit.data import (
    DATASETS,
    DataBundle,
    DataConfig,
    ForgetSet,
    ForgetSpec,
    load_data,
    parse_forget_spec,
    read_idx,
    resolve_forget,
)
from qmu_qiskit.data.features import encode
from qmu_qiskit.data.idx import write_idx
from qmu_qiskit.exceptions import BadInputError, DataError

STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def write_idx_dataset(
    root: Path,
    folder: str = "MNIST",
    *,
    n_train: int = 200,
    n_test: int = 20,
    gz: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a tiny MNIST-like dataset into ``root/<folder>/raw``; labels cycle 0..9."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        write_idx(raw / (stem + (".gz" if gz else "")), arr)
    return arrays


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def iris() -> DataBundle:
    return load_data(DataConfig(dataset="iris"))


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_idx_round_trip(tmp_path, suffix, dtype):
    arr = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr)
    assert back.flags.writeable


def test_idx_reads_hand_built_file(tmp_path):
    # Built byte by byte from the published format, independent of write_idx.
    payload = bytes([0, 7, 255, 1, 2, 3])
    data = bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + payload
    (tmp_path / "x-idx2-ubyte").write_bytes(data)
    (tmp_path / "x-idx2-ubyte.gz").write_bytes(gzip.compress(data))
    for name in ("x-idx2-ubyte", "x-idx2-ubyte.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), [[0, 7, 255], [1, 2, 3]])
    big_endian = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">ii", -2, 70000)
    (tmp_path / "i32").write_bytes(big_endian)
    np.testing.assert_array_equal(read_idx(tmp_path / "i32"), [-2, 70000])
    assert (
        write_idx(tmp_path / "again", np.array([[0, 7, 255], [1, 2, 3]], np.uint8)).read_bytes()
        == data
    )


def test_idx_truncated_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError) as err:
        read_idx(path)
    msg = one_line(err)
    assert str(path) in msg and "truncated" in msg and "download it again" in msg


def test_idx_truncated_gzip_and_bad_gzip(tmp_path):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(500, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert str(path) in one_line(err) and "gzip" in str(err.value)

    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError) as err:
        read_idx(bad)
    msg = one_line(err)
    assert str(bad) in msg and "not a valid gzip file" in msg and "download it again" in msg


def test_idx_bad_magic_and_dtype(tmp_path):
    path = write_idx(tmp_path / "f-idx1-ubyte", np.arange(4, dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(DataError, match="bad magic number 0x12340801") as err:
        read_idx(path)
    assert str(path) in one_line(err)
    path.write_bytes(data[:2] + b"\x07" + data[3:])
    with pytest.raises(DataError, match="unknown dtype code 0x07"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_idx_payload_longer_than_header_and_expectations(tmp_path):
    path = write_idx(tmp_path / "f", np.arange(4, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="longer than its header says"):
        read_idx(path)
    path = write_idx(tmp_path / "g", np.arange(4, dtype=np.int32))
    with pytest.raises(DataError, match="expected 3"):
        read_idx(path, expect_ndim=3)
    with pytest.raises(DataError, match="holds int32, expected uint8"):
        read_idx(path, expect_dtype="uint8")
    with pytest.raises(BadInputError):
        write_idx(tmp_path / "h", np.arange(3, dtype=np.uint64))


# --------------------------------------------------------------------------- MNIST layout


def test_missing_files_message(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path)))
    msg = one_line(err)
    assert f"MNIST files not found in {tmp_path / 'MNIST' / 'raw'}" in msg
    for stem in STEMS:
        assert f"{stem}(.gz)" in msg
    assert "--data-dir" in msg and "QMU_DATA_DIR" in msg and "--download" in msg


def test_partly_missing_files_are_named(tmp_path):
    write_idx_dataset(tmp_path, "FashionMNIST")
    (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path)))
    assert "FashionMNIST files not found" in one_line(err)
    assert "(missing t10k-labels-idx1-ubyte)" in str(err.value)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_image_kind_and_record_ids(tmp_path, gz):
    arrays = write_idx_dataset(tmp_path, gz=gz)
    bundle = load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path), input_kind="image"))
    assert bundle.sizes == {"train": 144, "val": 16, "test": 40}
    assert bundle.input_shape == (1, 28, 28) and bundle.n_records == 200
    images, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    all_ids = np.concatenate([bundle.ids[s] for s in ("train", "val", "test")])
    np.testing.assert_array_equal(np.sort(all_ids), np.arange(200))
    for split in ("train", "val", "test"):
        x, ids = bundle.X[split], bundle.ids[split]
        assert x.dtype == np.float32 and x.shape == (len(ids), 1, 28, 28)
        assert np.all(np.diff(ids) > 0)
        # Record id = row of the official train file: pixels and labels match exactly.
        np.testing.assert_array_equal(x[:, 0], images[ids].astype(np.float32) / np.float32(255))
        np.testing.assert_array_equal(bundle.y[split], labels[ids])
    assert bundle.X["train"].min() == 0.0 and bundle.X["train"].max() == 1.0


def test_qmu_data_dir_env_and_default(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "env")
    monkeypatch.setenv("QMU_DATA_DIR", str(tmp_path / "env"))
    a = load_data(DataConfig(dataset="mnist", n_features=4))
    assert a.sizes["train"] == 144 and a.input_shape == (4,)
    # An explicit data_dir wins over the variable.
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path / "nowhere")))
    # Neither set: ./data.
    monkeypatch.delenv("QMU_DATA_DIR")
    write_idx_dataset(tmp_path / "cwd" / "data")
    monkeypatch.chdir(tmp_path / "cwd")
    b = load_data(DataConfig(dataset="mnist", n_features=4))
    assert b == a  # same files, same config -> same fingerprint


def test_mnist_label_checks(tmp_path):
    arrays = write_idx_dataset(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte.gz", arrays["train-labels-idx1-ubyte"][:-1])
    with pytest.raises(DataError, match="label count 199 .* does not match the image count 200"):
        load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path)))
    bad = arrays["train-labels-idx1-ubyte"].copy()
    bad[7] = 10
    write_idx(raw / "train-labels-idx1-ubyte.gz", bad)
    with pytest.raises(DataError, match="must be 0..9, record 7 has 10"):
        load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path)))


def test_corrupt_mnist_file_names_the_file(tmp_path):
    write_idx_dataset(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path)))
    assert str(path) in one_line(err)


def test_samples_per_class(tmp_path):
    write_idx_dataset(tmp_path, n_train=300)  # 30 per class
    cfg = {"dataset": "mnist", "data_dir": str(tmp_path), "samples_per_class": 20, "n_features": 3}
    bundle = load_data(cfg)
    assert bundle.sizes == {"train": 144, "val": 16, "test": 40}
    np.testing.assert_array_equal(bundle.class_counts("test"), [4] * 10)
    val = bundle.class_counts("val")
    assert val.min() >= 1 and val.max() <= 2  # 16 over 10 classes, as even as it gets
    np.testing.assert_array_equal(bundle.class_counts("train") + val, [16] * 10)
    assert load_data(cfg) == bundle
    other = load_data({**cfg, "seed": 1})
    assert not np.array_equal(other.ids["train"], bundle.ids["train"])
    with pytest.raises(BadInputError) as err:
        load_data({**cfg, "samples_per_class": 31})
    assert "samples_per_class=31 exceeds the 30 records of class 0" in one_line(err)


def test_download_without_torchvision(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path), download=True))
    msg = one_line(err)
    assert "needs torchvision, which cannot be imported (ModuleNotFoundError" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg and "pip install" in msg


def test_download_through_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeMNIST:  # stands in for torchvision.datasets.MNIST(root, train, download)
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_idx_dataset(Path(root), "MNIST")

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=FakeMNIST)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    bundle = load_data(
        DataConfig(dataset="mnist", data_dir=str(tmp_path), download=True, n_features=2)
    )
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert bundle.sizes["train"] == 144


# --------------------------------------------------------------------------- covertype


def test_covertype_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="covertype"))
    msg = one_line(err)
    assert "not cached" in msg and "internet once" in msg and "SCIKIT_LEARN_DATA" in msg
    assert str(tmp_path) in msg


def test_covertype_from_cache(monkeypatch):
    import sklearn.datasets
    from sklearn.utils import Bunch

    rng = np.random.default_rng(0)
    n = 7 * 20
    fake = Bunch(data=rng.normal(size=(n, 54)), target=np.arange(n) % 7 + 1)
    seen = {}

    def fetch_covtype(*, download_if_missing):
        seen["download"] = download_if_missing
        return fake

    monkeypatch.setattr(sklearn.datasets, "fetch_covtype", fetch_covtype)
    bundle = load_data(DataConfig(dataset="covtype", n_features=4))
    assert seen == {"download": False}
    assert bundle.name == "covertype" and bundle.num_classes == 7
    assert bundle.input_shape == (4,)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(bundle.y[split], fake.target[bundle.ids[split]] - 1)


# --------------------------------------------------------------------------- encodings


def test_iris_angles_fitted_on_train_only(iris):
    from sklearn.datasets import load_iris
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler

    bundle = load_data(DataConfig(dataset="iris", n_features=2))
    raw = load_iris().data
    pca = PCA(n_components=2, svd_solver="full").fit(raw[bundle.ids["train"]])
    scaler = MinMaxScaler(feature_range=(0, np.pi)).fit(pca.transform(raw[bundle.ids["train"]]))
    # Train spans the range exactly, per column.
    np.testing.assert_array_equal(bundle.X["train"].min(axis=0), [0.0, 0.0])
    np.testing.assert_array_equal(bundle.X["train"].max(axis=0), [np.float32(np.pi)] * 2)
    unclipped_outside = False
    for split in ("val", "test"):
        z = scaler.transform(pca.transform(raw[bundle.ids[split]]))
        unclipped_outside |= bool((z < 0).any() or (z > np.pi).any())
        np.testing.assert_allclose(bundle.X[split], np.clip(z, 0, np.pi), rtol=0, atol=2e-6)
        assert bundle.X[split].min() >= 0 and bundle.X[split].max() <= np.float32(np.pi)
    assert unclipped_outside  # so the clipping above was really exercised
    # Without PCA (n_features unset) iris keeps its 4 columns, scaled on train.
    raw_train = raw[iris.ids["train"]]
    expected = (raw[iris.ids["test"]] - raw_train.min(0)) / np.ptp(raw_train, 0) * np.pi
    np.testing.assert_allclose(iris.X["test"], np.clip(expected, 0, np.pi), atol=2e-6)


def test_custom_angle_range():
    bundle = load_data(DataConfig(dataset="iris", angle_range=(-math.pi, math.pi)))
    assert bundle.X["train"].min() == np.float32(-np.pi)
    assert bundle.X["train"].max() == np.float32(np.pi)


def test_iris_and_digits_shapes(iris):
    assert iris.input_shape == (4,) and iris.num_classes == 3 and iris.n_records == 150
    assert iris.class_names == ("setosa", "versicolor", "virginica")
    assert iris.sizes == {"train": 108, "val": 12, "test": 30}
    for split, per_class in (("train", 36), ("val", 4), ("test", 10)):
        np.testing.assert_array_equal(iris.class_counts(split), [per_class] * 3)
        assert iris.X[split].dtype == np.float32 and iris.X[split].shape == (per_class * 3, 4)
        assert iris.y[split].dtype == np.int64 and iris.ids[split].dtype == np.int64

    from sklearn.datasets import load_digits

    digits_raw = load_digits()
    angles = load_data(DataConfig(dataset="digits"))
    assert angles.input_shape == (64,) and angles.n_records == 1797
    assert angles.sizes == {"train": 1293, "val": 144, "test": 360}
    image = load_data(DataConfig(dataset="digits", input_kind="image"))
    assert image.input_shape == (1, 8, 8) and image.X["test"].shape == (360, 1, 8, 8)
    np.testing.assert_array_equal(image.ids["test"], angles.ids["test"])
    np.testing.assert_array_equal(
        image.X["test"][:, 0], (digits_raw.images[image.ids["test"]] / 16).astype(np.float32)
    )
    assert image.X["train"].min() == 0.0 and image.X["train"].max() == 1.0


def test_amplitude_unit_rows():
    bundle = load_data(DataConfig(dataset="digits", input_kind="amplitude", n_features=16))
    assert bundle.input_shape == (16,)
    for split in ("train", "val", "test"):
        norms = np.linalg.norm(bundle.X[split].astype(np.float64), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    # Without PCA the raw features are normalised as they are.
    iris_amp = load_data(DataConfig(dataset="iris", input_kind="amplitude"))
    from sklearn.datasets import load_iris

    raw = load_iris().data[iris_amp.ids["test"]]
    np.testing.assert_allclose(
        iris_amp.X["test"], raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6
    )


def test_amplitude_zero_row_becomes_uniform_state():
    raw = {
        "train": np.array([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]),
        "val": np.zeros((0, 4)),
        "test": np.zeros((1, 4)),
    }
    out, shape = encode(
        raw,
        input_kind="amplitude",
        dataset="toy",
        pixel_max=None,
        image_shape=None,
        n_features=None,
        angle_range=(0, np.pi),
    )
    assert shape == (4,) and out["val"].shape == (0, 4)
    np.testing.assert_allclose(out["train"], [[0.6, 0.8, 0, 0], [0.5] * 4], atol=1e-7)
    np.testing.assert_allclose(out["test"], [[0.5] * 4], atol=1e-7)
    assert np.isfinite(out["train"]).all()


def test_empty_val_split(iris):
    bundle = load_data(DataConfig(dataset="iris", val_size=0, n_features=3))
    assert bundle.sizes == {"train": 120, "val": 0, "test": 30}
    assert bundle.X["val"].shape == (0, 3) and bundle.X["val"].dtype == np.float32
    # The test split depends only on seed and test_size, not on val_size.
    np.testing.assert_array_equal(bundle.ids["test"], iris.ids["test"])
    assert set(bundle.ids["train"]) == set(iris.ids["train"]) | set(iris.ids["val"])


def test_feature_count_errors():
    with pytest.raises(BadInputError, match="n_features=5 exceeds the 4 features of iris"):
        load_data(DataConfig(dataset="iris", n_features=5))
    with pytest.raises(
        BadInputError, match="needs at least 50 training samples, the train split of digits has 40"
    ):
        load_data(DataConfig(dataset="digits", samples_per_class=5, val_size=0, n_features=50))


def test_split_leaving_a_class_empty():
    with pytest.raises(BadInputError) as err:
        load_data(DataConfig(dataset="iris", samples_per_class=2, val_size=0))
    assert "test split" in one_line(err) and "samples_per_class" in str(err.value)


# --------------------------------------------------------------------------- determinism


def test_same_config_bit_identical_and_seed_changes_it(iris):
    again = load_data(DataConfig(dataset="iris"))
    assert again.fingerprint == iris.fingerprint and len(iris.fingerprint) == 64
    for split in ("train", "val", "test"):
        assert again.X[split].tobytes() == iris.X[split].tobytes()
        np.testing.assert_array_equal(again.ids[split], iris.ids[split])
    other = load_data(DataConfig(dataset="iris", seed=1))
    assert other.fingerprint != iris.fingerprint and other != iris
    assert not np.array_equal(other.ids["test"], iris.ids["test"])
    iris.verify(iris.fingerprint)
    with pytest.raises(DataError, match="differ from the run's"):
        iris.verify(other.fingerprint)


def test_bundle_is_read_only_and_helpers(iris):
    with pytest.raises(ValueError):
        iris.X["train"][0, 0] = 1.0
    with pytest.raises(AttributeError):
        iris.name = "x"  # type: ignore[misc]
    np.testing.assert_array_equal(iris.membership("train"), np.ones(108, bool))
    assert not iris.membership("test").any() and iris.membership("val").shape == (12,)
    x, y, ids = iris.subset("train", [0, 5])
    np.testing.assert_array_equal(ids, iris.ids["train"][[0, 5]])
    np.testing.assert_array_equal(y, iris.y["train"][[0, 5]])
    assert x.shape == (2, 4) and x.flags.writeable
    np.testing.assert_array_equal(iris.positions(iris.ids["train"][[7, 3]]), [7, 3])
    with pytest.raises(BadInputError, match="not in the train split"):
        iris.positions(iris.ids["test"][:1])
    with pytest.raises(BadInputError, match="unknown split"):
        iris.membership("holdout")
    summary = json.loads(json.dumps(iris.summary()))
    assert summary["sizes"] == iris.sizes and summary["fingerprint"] == iris.fingerprint
    assert summary["config"]["dataset"] == "iris"


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "fields, fragment",
    [
        (
            {"dataset": "cifar"},
            "unknown dataset 'cifar'; use one of: iris, digits, mnist, fashion_mnist, covertype",
        ),
        ({"dataset": "iris", "test_size": 1.0}, "test_size must be a fraction in [0, 1), got 1.0"),
        ({"dataset": "iris", "val_size": -0.1}, "val_size must be a fraction in [0, 1)"),
        ({"dataset": "iris", "n_features": 0}, "n_features must be >= 1"),
        ({"dataset": "iris", "samples_per_class": 0}, "samples_per_class must be >= 1"),
        ({"dataset": "iris", "angle_range": (3, 1)}, "angle_range must be two finite numbers"),
        ({"dataset": "iris", "seed": -1}, "seed must be in 0.."),
        ({"dataset": "iris", "input_kind": "image"}, "input_kind 'image' needs an image dataset"),
        ({"dataset": "mnist", "input_kind": "image", "n_features": 8}, "n_features does not apply"),
        ({"dataset": "iris", "input_kind": "qubits"}, "input_kind"),
        ({"dataset": "iris", "colour": 1}, "valid fields: dataset"),
    ],
)
def test_config_validation(fields, fragment):
    with pytest.raises(BadInputError) as err:
        DataConfig(**fields)
    assert fragment in one_line(err)
    with pytest.raises(BadInputError):
        DataConfig.model_validate(fields)


def test_config_aliases_and_frozen():
    cfg = DataConfig(dataset="Fashion-MNIST", data_dir=Path("/tmp"))
    assert cfg.dataset == "fashion_mnist" and cfg.data_dir == "/tmp"
    assert cfg.angle_range == (0.0, math.pi) and cfg.test_size == 0.2 and cfg.val_size == 0.1
    assert DataConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(BadInputError, match="expected a DataConfig or a dict"):
        load_data("iris")  # type: ignore[arg-type]


def test_import_is_light():
    code = (
        "import sys, qmu_qiskit.data; "
        "print(sorted(m for m in ('sklearn', 'torch', 'torchvision', 'scipy', 'qiskit') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(DATASETS) == {"iris", "digits", "mnist", "fashion_mnist", "covertype"}


# --------------------------------------------------------------------------- forget


def test_forget_class(iris):
    fs = resolve_forget("class:0", iris)
    assert isinstance(fs, ForgetSet) and fs.slug == "class-0" and fs.spec == "class:0"
    np.testing.assert_array_equal(fs.train_idx, np.flatnonzero(iris.y["train"] == 0))
    np.testing.assert_array_equal(fs.retain_idx, np.flatnonzero(iris.y["train"] != 0))
    np.testing.assert_array_equal(fs.record_ids, iris.ids["train"][fs.train_idx])
    assert fs.size == 36 and fs.mask().sum() == 36
    # Iris rows 0..49 are setosa: every forgotten record id is one of them.
    assert fs.record_ids.max() < 50


@pytest.mark.parametrize("spec", ["class:99", "class:-1"])
def test_forget_class_not_in_dataset(iris, spec):
    k = spec.split(":")[1]
    with pytest.raises(BadInputError) as err:
        resolve_forget(spec, iris)
    assert one_line(err) == (
        f"class {k} is not a class of iris (classes 0..2); use --forget class:K with K in 0..2"
    )


def test_forget_subset(iris):
    from sklearn.model_selection import train_test_split

    fs = resolve_forget("subset:0.02", iris, seed=0)
    assert fs.slug == "subset-0.02" and fs.spec == "subset:0.02"
    assert fs.size == math.ceil(0.02 * 108) == 3
    np.testing.assert_array_equal(np.bincount(iris.y["train"][fs.train_idx]), [1, 1, 1])
    # Same draw as HQML's train_test_split(test_size=F, stratify=y_tr, random_state=seed).
    _, hqml = train_test_split(
        np.arange(108), test_size=0.02, stratify=iris.y["train"], random_state=0
    )
    np.testing.assert_array_equal(fs.train_idx, np.sort(hqml))
    assert len(np.intersect1d(fs.train_idx, fs.retain_idx)) == 0
    assert len(fs.train_idx) + len(fs.retain_idx) == 108
    np.testing.assert_array_equal(resolve_forget("subset:.02", iris).train_idx, fs.train_idx)
    assert not np.array_equal(resolve_forget("subset:0.02", iris, seed=5).train_idx, fs.train_idx)
    bigger = resolve_forget(ForgetSpec(kind="subset", fraction=0.25), iris, seed=0)
    np.testing.assert_array_equal(np.bincount(iris.y["train"][bigger.train_idx]), [9, 9, 9])


def test_forget_subset_smaller_than_class_count(iris):
    fs = resolve_forget("subset:0.005", iris, seed=0)  # ceil(0.54) = 1 < 3 classes
    assert fs.size == 1


@pytest.mark.parametrize(
    "spec", ["subset:0", "subset:1.5", "subset:1", "subset:-0.1", "subset:nan"]
)
def test_forget_subset_out_of_range(spec):
    with pytest.raises(BadInputError) as err:
        parse_forget_spec(spec)
    assert "forget fraction must be in (0, 1)" in one_line(err)
    assert "subset:F" in str(err.value)


@pytest.mark.parametrize(
    "spec", ["foo", "class:x", "subset:abc", "", "class:", "indices:", "klass:1", "class:1.5"]
)
def test_malformed_specs(spec):
    with pytest.raises(BadInputError) as err:
        parse_forget_spec(spec)
    msg = one_line(err)
    assert msg.startswith("malformed forget spec")
    for form in ("class:K", "subset:F", "indices:FILE"):
        assert form in msg


def test_parse_forget_spec_forms():
    assert parse_forget_spec(" Class:4 ") == ForgetSpec(kind="class", label=4)
    assert parse_forget_spec("subset:0.02").fraction == 0.02
    spec = parse_forget_spec("indices:/tmp/a:b.txt")
    assert spec.path == "/tmp/a:b.txt" and str(spec) == "indices:/tmp/a:b.txt"
    assert parse_forget_spec(spec) is spec


def test_forget_indices_text_json_csv(tmp_path, iris):
    ids = iris.ids["train"][[4, 1, 30]].tolist()
    text = f"# users who asked\n\n{ids[0]}\n  {ids[1]}  # second user\n{ids[2]}\n"
    path = tmp_path / "ids.txt"
    path.write_text(text)
    fs = resolve_forget(f"indices:{path}", iris)
    np.testing.assert_array_equal(fs.train_idx, [1, 4, 30])
    np.testing.assert_array_equal(fs.record_ids, sorted(ids))
    assert fs.slug == "indices-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    assert fs.spec == f"indices:{path}"
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    (tmp_path / "ids.csv").write_text("user,id\n" + "".join(f"u{i},{i}\n" for i in ids))
    for name in ("ids.json", "ids.csv"):
        other = resolve_forget(f"indices:{tmp_path / name}", iris)
        np.testing.assert_array_equal(other.train_idx, fs.train_idx)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("150\n9999\n", "out of range (ids are 0..149): 150, 9999"),
        ("-1\n", "out of range (ids are 0..149): -1"),
        ("", "lists no record ids"),
        ("# nothing\n\n", "lists no record ids"),
        ("abc\n", "line 1 holds 'abc', not an integer record id"),
    ],
)
def test_forget_indices_errors(tmp_path, iris, content, fragment):
    path = tmp_path / "ids.txt"
    path.write_text(content)
    with pytest.raises(BadInputError) as err:
        resolve_forget(f"indices:{path}", iris)
    assert fragment in one_line(err) and str(path) in str(err.value)


def test_forget_indices_duplicates_and_foreign_splits(tmp_path, iris):
    path = tmp_path / "ids.txt"
    train, test, val = iris.ids["train"], iris.ids["test"], iris.ids["val"]
    path.write_text(f"{train[0]}\n{train[1]}\n{train[0]}\n")
    with pytest.raises(BadInputError, match=f"more than once: {train[0]};"):
        resolve_forget(f"indices:{path}", iris)
    path.write_text(f"{train[0]}\n{test[2]}\n{test[0]}\n{val[1]}\n")
    with pytest.raises(BadInputError) as err:
        resolve_forget(f"indices:{path}", iris)
    msg = one_line(err)
    assert "3 of 4 record ids are not in the train split of iris" in msg
    assert f"in the test split: {test[2]}, {test[0]}" in msg
    assert f"in the val split: {val[1]}" in msg


def test_forget_indices_outside_subsample(tmp_path):
    bundle = load_data(DataConfig(dataset="iris", samples_per_class=20))
    unused = sorted(set(range(150)) - set(np.concatenate(list(bundle.ids.values())).tolist()))
    path = tmp_path / "ids.txt"
    path.write_text(f"{unused[0]}\n")
    with pytest.raises(BadInputError, match=f"left out by samples_per_class\\): {unused[0]}"):
        resolve_forget(f"indices:{path}", bundle)


def test_forget_missing_file_and_whole_training_set(tmp_path, iris):
    with pytest.raises(BadInputError, match="cannot read forget indices file"):
        resolve_forget(f"indices:{tmp_path / 'absent.txt'}", iris)
    path = tmp_path / "all.txt"
    path.write_text("\n".join(str(i) for i in iris.ids["train"]))
    with pytest.raises(BadInputError) as err:
        resolve_forget(f"indices:{path}", iris)
    assert "nothing would be retained" in one_line(err)


def test_fashion_preset_uses_hqmls_ten_qubits():
    """`train --dataset fashion_mnist` gets HQML's n = 10 on its preset model (and on the conv
    model); an explicit --qubits or another model's own width still wins."""
    from qmu_qiskit.config import resolve_run_config

    assert resolve_run_config(dataset="fashion_mnist").model.qubits == 10
    assert resolve_run_config(dataset="fashion_mnist", model="hqml-conv").model.qubits == 10
    assert resolve_run_config(dataset="fashion_mnist", qubits=6).model.qubits == 6
    assert resolve_run_config(dataset="mnist").model.qubits == 8
    assert resolve_run_config(dataset="fashion_mnist", model="qmu-basic").model.qubits == 8
