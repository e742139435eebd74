"""Bring your own data and circuit: CSV/NPZ files, from_arrays/from_torch, from_circuit,
load_model/predict, and the recorded hashes that make unlearn/evaluate refuse changed inputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from qiskit import QuantumCircuit, qpy
from qiskit.circuit import ParameterVector
from qiskit.circuit.library import real_amplitudes, zz_feature_map
from qiskit.quantum_info import SparsePauliOp, Statevector

from qmu_qiskit.cli import main
from qmu_qiskit.data import DataConfig, from_arrays, from_torch, load_data, resolve_forget
from qmu_qiskit.exceptions import BadInputError, DataError, RunError
from qmu_qiskit.models import from_circuit
from qmu_qiskit.models.circuit import circuit_fingerprint, split_parameters

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def angle_real(n: int = 4, reps: int = 1) -> QuantumCircuit:
    """Angle encoding RX(x_i) then qiskit's real_amplitudes ansatz."""
    x = ParameterVector("x", n)
    enc = QuantumCircuit(n)
    for i in range(n):
        enc.rx(x[i], i)
    return enc.compose(real_amplitudes(n, reps=reps))


def zz_real() -> QuantumCircuit:
    """The issue's circuit: qiskit's ZZ feature map, then real_amplitudes."""
    return zz_feature_map(4).compose(real_amplitudes(4))


def write_iris_csv(path: Path, seed: int = 0) -> np.ndarray:
    """Iris with shuffled 4-digit record ids and class names as labels; returns the ids."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    ids = np.random.default_rng(seed).permutation(np.arange(5000, 5150))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *FEATURES, "label"])
        for rid, x, y in zip(ids, bunch.data, bunch.target):
            w.writerow([rid, *x, bunch.target_names[y]])
    return ids


def cli(args, capsys):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------------------------
# data files


@pytest.mark.parametrize(
    "text, target, id_column, message",
    [
        ("a,b,label\n1,x,p\n2,y,q\n", "label", None, "column 'b' is not numeric (row 0 holds 'x')"),
        ("a,label\n1,p\n,q\n", "label", None, "column 'a' has a missing value in row 1"),
        ("a,label\n1,p\nnan,q\n", "label", None, "column 'a' has a missing value in row 1"),
        ("a,label\n1,p\n2,p\n", "label", None, "every record has the same label 'p'"),
        ("a,label\n1,p\n2,q\n3,p\n4,q\n", "label", None, "too few for stratified splits"),
        ("id,a,label\n1,1,p\n1,2,q\n", "label", "id", "record ids [1] appear more than once"),
        (
            "id,a,label\nu1,1,p\nu2,2,q\n",
            "label",
            "id",
            "record id of row 0 is 'u1', not an integer",
        ),
        ("a,label\n1,p\n", "lab", None, "has no column 'lab' for --target"),
    ],
)
def test_csv_errors_are_one_line(tmp_path, text, target, id_column, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(BadInputError) as exc:
        load_data(DataConfig(dataset=str(path), target=target, id_column=id_column))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_file_config_fields_are_checked(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,label\n1,p\n")
    with pytest.raises(BadInputError, match="name its label column with --target"):
        DataConfig(dataset=str(path))
    with pytest.raises(BadInputError, match="does not exist"):
        DataConfig(dataset=str(tmp_path / "none.npz"))
    with pytest.raises(BadInputError, match="apply only to a data file"):
        DataConfig(dataset="iris", target="label")
    # a file named like a built-in dataset does not take its name (nor its preset)
    iris = tmp_path / "iris.csv"
    iris.write_text("a,label\n1,p\n")
    assert DataConfig(dataset=str(iris), target="label").dataset == "iris_file"


def test_npz_ids_name_records_and_preprocessing_is_fitted_on_train_only(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    y = np.repeat(["a", "b", "c"], 40)
    ids = rng.permutation(np.arange(100, 220))
    cfg = from_arrays(X, y, ids, name="toy", directory=tmp_path)
    assert cfg.dataset == "toy" and Path(cfg.path).parent == tmp_path
    assert from_arrays(X, y, ids, name="toy", directory=tmp_path).path == cfg.path  # by content
    bundle = load_data(cfg)
    assert bundle.class_names == ("a", "b", "c") and bundle.n_records == 120
    all_ids = np.concatenate([bundle.ids[s] for s in ("train", "val", "test")])
    assert sorted(all_ids.tolist()) == sorted(ids.tolist())
    for split in ("train", "val", "test"):  # each sample is its own record, by id
        rows = np.searchsorted(np.sort(ids), bundle.ids[split])
        by_id = X[np.argsort(ids)][rows]
        labels = np.array([0, 1, 2])[np.searchsorted(["a", "b", "c"], y[np.argsort(ids)][rows])]
        assert (bundle.y[split] == labels).all()
        assert np.all(np.diff(bundle.ids[split]) > 0)
        if split == "train":
            # MinMax to (0, π) fitted on train: train spans exactly the interval
            lo, hi = bundle.X[split].min(0), bundle.X[split].max(0)
            assert np.allclose(lo, 0, atol=1e-6) and np.allclose(hi, np.pi, atol=1e-6)
            order = np.argsort(by_id[:, 0])
            assert np.all(np.diff(bundle.X[split][order, 0]) >= -1e-6)  # monotone encoding

    # an outlier in a test record changes nothing of the training features
    test_id = int(bundle.ids["test"][0])
    X2 = X.copy()
    X2[np.flatnonzero(ids == test_id)[0]] = 1e6
    bundle2 = load_data(from_arrays(X2, y, ids, name="toy", directory=tmp_path))
    assert np.array_equal(bundle2.X["train"], bundle.X["train"])
    assert not np.array_equal(bundle2.X["test"], bundle.X["test"])

    fset = resolve_forget(f"indices:{_ids_file(tmp_path, bundle.ids['train'][:3])}", bundle)
    assert fset.record_ids.tolist() == bundle.ids["train"][:3].tolist()
    with pytest.raises(BadInputError, match="not record ids of the file: 7"):
        resolve_forget(f"indices:{_ids_file(tmp_path, [7])}", bundle)


def _ids_file(folder: Path, ids) -> Path:
    path = folder / f"ids-{len(list(folder.iterdir()))}.txt"
    path.write_text("\n".join(str(int(i)) for i in ids) + "\n")
    return path


def test_from_torch_matches_from_arrays(tmp_path):
    X = np.random.default_rng(2).random((30, 2)).astype(np.float32)
    y = np.arange(30) % 2
    ds = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    a = from_torch(ds, name="t", directory=tmp_path)
    b = from_arrays(X, y, name="t", directory=tmp_path)
    assert a.sha256 == b.sha256 and load_data(a).fingerprint == load_data(b).fingerprint
    with pytest.raises(BadInputError, match="empty"):
        from_torch(torch.utils.data.TensorDataset(torch.zeros(0, 2)), name="e")


def test_changed_data_file_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(3)
    np.savez(path, X=rng.random((40, 2)), y=np.arange(40) % 2)
    cfg = DataConfig(dataset=str(path))
    load_data(cfg)
    np.savez(path, X=rng.random((40, 2)), y=np.arange(40) % 2)
    with pytest.raises(DataError, match="changed since the run was made"):
        load_data(cfg)
    path.unlink()  # a recorded config still validates; loading says what is missing
    with pytest.raises(DataError, match="is missing; restore it"):
        load_data(DataConfig(**cfg.model_dump()))
    with pytest.raises(BadInputError, match="64 lower-case hex"):
        DataConfig(**{**cfg.model_dump(), "sha256": "abc"})


# ---------------------------------------------------------------------------------------------
# circuits


@pytest.mark.parametrize("readout", ["estimator", "sampler"])
@pytest.mark.parametrize("kind", ["angle", "zz"])
def test_from_circuit_matches_quantum_info(readout, kind):
    circuit = angle_real(3) if kind == "angle" else zz_feature_map(3).compose(real_amplitudes(3))
    model = from_circuit(circuit, num_classes=2, readout=readout, head="mlp:5", seed=4)
    assert [type(m).__name__ for m in model.head] == ["Linear", "ReLU", "Linear"]
    assert model.head[0].out_features == 5
    inputs, weights = split_parameters(circuit)
    assert [p.name for p in inputs] == ["x[0]", "x[1]", "x[2]"]
    assert len(weights) == (6 if kind == "angle" else 12)
    X = np.random.default_rng(5).uniform(0, np.pi, (4, 3)).astype(np.float32)
    with torch.no_grad():
        got = model.quantum(torch.from_numpy(X)).double().numpy()
    w = model.quantum.weight.detach().numpy()
    for row, x in zip(got, X):
        bound = circuit.assign_parameters(
            {**dict(zip(inputs, x.astype(float))), **dict(zip(weights, w))}
        )
        state = Statevector(bound)
        if readout == "estimator":
            want = [
                state.expectation_value(SparsePauliOp.from_sparse_list([("Z", [q], 1)], 3)).real
                for q in range(3)
            ]
        else:
            want = state.probabilities()
        assert np.allclose(row, want, atol=1e-5)
    proba = model.predict_proba(X)
    assert proba.shape == (4, 2) and np.allclose(proba.sum(1), 1)
    assert (model.predict(X) == proba.argmax(1)).all()


def test_circuit_checks_and_fingerprint():
    assert circuit_fingerprint(angle_real()) == circuit_fingerprint(angle_real())  # new UUIDs
    assert circuit_fingerprint(angle_real()) != circuit_fingerprint(angle_real(3))
    with pytest.raises(BadInputError, match="no ParameterVector named 'x'"):
        from_circuit(real_amplitudes(2), num_classes=2)
    measured = angle_real(2)
    measured.measure_all()
    with pytest.raises(BadInputError, match="measurements"):
        from_circuit(measured, num_classes=2)
    with pytest.raises(BadInputError, match="unknown head"):
        from_circuit(angle_real(2), num_classes=2, head="mlp:0")
    only_inputs = QuantumCircuit(1)
    only_inputs.rx(ParameterVector("x", 1)[0], 0)
    with pytest.raises(BadInputError, match="no trainable parameters"):
        from_circuit(only_inputs, num_classes=2)


# ---------------------------------------------------------------------------------------------
# the commands: train on a CSV with a .qpy circuit, unlearn the CSV's own ids


def test_csv_and_qpy_train_unlearn_predict(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ids = write_iris_csv(tmp_path / "my.csv")
    with open(tmp_path / "zz_real.qpy", "wb") as fh:
        qpy.dump(zz_real(), fh)
    code, out, err = cli(
        [
            "train",
            "--dataset",
            "my.csv",
            "--target",
            "label",
            "--id-column",
            "id",
            "--circuit",
            "zz_real.qpy",
            "--epochs",
            "4",
            "--out",
            "runs/x",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    run = tmp_path / "runs" / "x"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["path"] == str(tmp_path / "my.csv")
    assert config["model"]["name"] == "circuit" and config["model"]["head"] == "linear"
    assert config["model"]["circuit_sha256"] == circuit_fingerprint(zz_real())
    assert (run / "circuit.qpy").is_file()

    # forget three of the CSV's own record ids (they are train records of the split)
    bundle = load_data(DataConfig(**config["data"]))
    forget_ids = bundle.ids["train"][[0, 10, 20]]
    assert set(forget_ids) <= set(ids)
    (tmp_path / "ids.txt").write_text("\n".join(map(str, forget_ids)) + "\n")
    code, out, err = cli(
        [
            "unlearn",
            "--run",
            "runs/x",
            "--forget",
            "indices:ids.txt",
            "--method",
            "ga",
            "--option",
            "ga.epochs=1",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert "retrain (oracle)" in out and "\nga " in out
    ga_dir = next((run / "unlearn").glob("indices-*/ga"))
    U = np.load(ga_dir / "outputs.npz")
    assert sorted(U["ids"][U["forget"]].tolist()) == sorted(forget_ids.tolist())
    code, out, err = cli(["evaluate", "--run", ga_dir], capsys)
    assert code == 0 and "acc_forget_unlearn" in out

    # load_model predicts raw CSV rows exactly as the run's saved outputs say
    import qmu_qiskit

    model = qmu_qiskit.load_model(run)
    assert model.class_names == ("setosa", "versicolor", "virginica")
    with open(tmp_path / "my.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    raw = {int(r["id"]): [float(r[f]) for f in FEATURES] for r in rows}
    from qmu_qiskit.evaluation.outputs import Outputs

    T = Outputs.load(run / "outputs.npz")
    test = T.mask("test")
    X = np.array([raw[int(i)] for i in T.ids[test]])
    assert len(X) == 30
    assert (model.predict(X) == T.logits[test].argmax(1)).all()
    assert np.allclose(model.predict_proba(X), T.probs[test], atol=1e-5)
    unlearned = qmu_qiskit.load_model(ga_dir)
    assert unlearned.predict_proba(X).shape == (len(X), 3)

    # a changed circuit copy in the run is refused before anything runs
    with open(run / "circuit.qpy", "wb") as fh:
        qpy.dump(zz_feature_map(4).compose(real_amplitudes(4, reps=2)), fh)
    code, out, err = cli(
        ["unlearn", "--run", "runs/x", "--forget", "class:0", "--method", "ga", "--no-progress"],
        capsys,
    )
    assert code != 0 and "differs from the run's" in err and len(err.strip().splitlines()) == 1
    (run / "circuit.qpy").unlink()  # never rebuilt from the recorded source instead
    code, out, err = cli(["evaluate", "--run", ga_dir], capsys)
    assert code == 0  # evaluate needs no circuit: it works from the saved outputs
    with pytest.raises(RunError, match="has no regular file circuit.qpy"):
        qmu_qiskit.load_model(run)


def test_user_data_and_circuit_in_a_job_spec(tmp_path):
    """CSV + module:function circuit in a spec, run by spawned workers (relative paths)."""
    write_iris_csv(tmp_path / "my.csv")
    (tmp_path / "mycircuits.py").write_text(
        "from qiskit import QuantumCircuit\nfrom qiskit.circuit import ParameterVector\n"
        "from qiskit.circuit.library import real_amplitudes\n\n"
        "def angle_real():\n    x = ParameterVector('x', 4)\n    c = QuantumCircuit(4)\n"
        "    for i in range(4):\n        c.rx(x[i], i)\n"
        "    return c.compose(real_amplitudes(4, reps=1))\n"
    )
    spec = {
        "name": "byo",
        "datasets": [{"name": "my.csv", "data": {"target": "label", "id_column": "id"}}],
        "models": [{"name": "circuit", "circuit": "mycircuits:angle_real", "head": "mlp:8"}],
        "methods": ["ga"],
        "forget": ["class:2"],
        "seeds": [0],
        "training": {"epochs": 2},
        "options": {"ga": {"epochs": 1}},
        "executor": {"kind": "local", "workers": 1, "threads_per_worker": 1},
    }
    # `jobs` is the grid command's old name, kept working
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    exe = Path(sys.executable).parent / "qmu-qiskit"
    proc = subprocess.Popen(
        [str(exe), "jobs", "submit", "spec.yaml", "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    ga = list((tmp_path / "runs" / "byo" / "teachers").glob("my-circuit-*/unlearn/class-2/ga"))
    assert len(ga) == 1
    teacher = ga[0].parents[2]
    cfg = yaml.safe_load((teacher / "config.yaml").read_text())
    assert cfg["data"]["path"] == str(tmp_path / "my.csv") and cfg["model"]["head"] == "mlp:8"
    status = json.loads((teacher / "run.json").read_text())
    assert status["pid"] != proc.pid  # trained by a spawned worker from the recorded config
    assert (teacher / "circuit.qpy").is_file()
    metrics = json.loads((ga[0] / "metrics.json").read_text())
    assert metrics["forget_size"] == 36  # 80% train × 90% of 50 virginica records


def test_arrays_config_resolves_like_a_file(tmp_path):
    from qmu_qiskit.config import resolve_run_config

    rng = np.random.default_rng(6)
    data = from_arrays(
        rng.random((60, 3)), np.arange(60) % 3, name="arr", directory=tmp_path, test_size=0.25
    )
    cfg = resolve_run_config(dataset=data, seed=2)
    assert cfg.data.path == data.path and cfg.data.sha256 == data.sha256
    assert cfg.data.test_size == 0.25 and cfg.data.seed == 2
    assert cfg.model.name == "hqml-shallow" and cfg.model.qubits == 3  # one qubit per column
    # a data file is identified by its name and content, not by where it lies
    (tmp_path / "moved").mkdir()
    moved = tmp_path / "moved" / Path(data.path).name
    moved.write_bytes(Path(data.path).read_bytes())
    again = resolve_run_config(
        dataset=DataConfig(dataset="arr", path=str(moved), test_size=0.25), seed=2
    )
    assert again.data.path != cfg.data.path and again.fingerprint() == cfg.fingerprint()
    np.savez(moved, X=rng.random((60, 3)), y=np.arange(60) % 3)
    changed = resolve_run_config(
        dataset=DataConfig(dataset="arr", path=str(moved), test_size=0.25), seed=2
    )
    assert changed.fingerprint() != cfg.fingerprint()
    with pytest.raises(BadInputError, match="apply to --circuit models only"):
        resolve_run_config(dataset=data, head="mlp:4")


# ---------------------------------------------------------------------------------------------
# a general circuit: qiskit's ZZ feature map ∘ real_amplitudes, on both noiseless engines


def test_zz_feature_map_real_amplitudes_trains_and_unlearns_on_iris(tmp_path):
    """zz_feature_map(4) ∘ real_amplitudes(4) (non-affine input angles, composite gates):
    training lowers the loss and beats chance, ga lowers the forget accuracy, and the exact and
    aer engines agree on every number. Margins measured over seeds 0-2: loss 1.11-1.14 → ≤ 0.85,
    train accuracy ≥ 0.48 (chance 0.33)."""
    from qmu_qiskit import pipeline
    from qmu_qiskit.config import resolve_run_config
    from qmu_qiskit.evaluation.outputs import Outputs

    path = tmp_path / "zz_real.qpy"
    with open(path, "wb") as fh:
        qpy.dump(zz_real(), fh)
    results = {}
    for engine in ("exact", "aer"):
        cfg = resolve_run_config(
            dataset="iris",
            circuit=str(path),
            head="mlp:16",
            seed=0,
            training={"epochs": 8, "lr": 0.05, "patience": 0},
            backend={"engine": engine},
        )
        run = tmp_path / engine
        summary = pipeline.train(cfg, run, progress=False)
        history = summary.metrics["history"]
        assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.15
        assert summary.metrics["acc_train"] >= 0.42
        assert summary.metrics["execution"]["engine"] == engine
        unl = {
            s.method: s.metrics
            for s in pipeline.unlearn(
                run, "class:0", ["ga"], options={"ga": {"epochs": 2}}, progress=False
            )
        }
        ga = unl["ga"]
        assert ga["acc_forget_unlearn"] < ga["acc_forget_orig"]
        results[engine] = (Outputs.load(run / "outputs.npz").logits, ga)
    (logits_exact, ga_exact), (logits_aer, ga_aer) = results["exact"], results["aer"]
    assert np.allclose(logits_exact, logits_aer, atol=1e-4)
    for key in ("acc_forget_unlearn", "acc_retain_unlearn", "acc_test_unlearn"):
        assert ga_exact[key] == pytest.approx(ga_aer[key], abs=1e-9)
