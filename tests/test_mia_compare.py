"""``qmu-qiskit mia-compare``: QMU's MIA comparison, noiseless against noisy emulation.

The default suite runs it end to end on a tiny synthetic MNIST (both models, GA/SSD/RGA, the
noiseless and the noisy backend, a two-point shot sweep) and checks the outputs, the resume and
the up-front validation. The real study (MNIST, the protocol's sizes) is ``-m slow``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from qmu_qiskit.exceptions import BackendError, BadInputError, CredentialsError
from qmu_qiskit.studies.mia_compare import CSV_COLUMNS, CompareConfig, run_compare


def _synthetic_mnist(root: Path, per_class: int = 48) -> Path:
    """A small MNIST in torchvision's layout: a class-dependent stroke plus noise per image."""
    from qmu_qiskit.data.idx import write_idx

    rng = np.random.default_rng(0)
    n = 10 * per_class
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 4 + 2 * y : 7 + 2 * y, 4:24] = 255
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:20])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:20])
    return root


def _tiny(data_dir: Path, **kw) -> CompareConfig:
    base = {
        "backends": ("aer", "aer_noisy:ibm_brisbane"),
        "data_dir": str(data_dir),
        "samples_per_class": 40,
        "epochs": 1,
        "basic_layers": 1,
        "shots": (128, 1024),
        "attack_epochs": 60,
        "attack_members": 40,
        "method_options": {"ga": {"epochs": 3}, "rga": {"epochs": 3}},
    }
    base.update(kw)
    return CompareConfig(**base)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("mia")
    data = _synthetic_mnist(root / "data")
    cc = _tiny(data)
    result = run_compare(cc, root / "out", progress=False, echo=lambda m: None)
    return cc, root / "out", result


def test_rows_csv_plot_and_summary(compared):
    cc, out, result = compared
    rows = result.rows
    # per model: aer exact, noisy exact, noisy at 128 and 1024 shots; teacher + 3 methods each
    assert len(rows) == 2 * 4 * 4
    assert {r["model"] for r in rows} == {"qmu-basic", "qmu-hybrid"}
    assert {(r["backend"], r["shots"]) for r in rows} == {
        ("aer", None),
        ("aer_noisy:ibm_brisbane", None),
        ("aer_noisy:ibm_brisbane", 128),
        ("aer_noisy:ibm_brisbane", 1024),
    }
    for r in rows:
        assert 0.0 <= r["mia_success"] <= 1.0 and r["seed"] == 0
        assert r["amplitude_loading"] == ("exact" if r["backend"] == "aer" else "ideal")
        assert r["attack_trained_on"] == "aer"  # one attack, trained on the noiseless teacher
        if r["state"] == "teacher":  # its false-positive rate on class-4 test samples
            assert 0.0 <= r["nonmember_flagged"] <= 1.0
        else:
            assert r["nonmember_flagged"] is None
        if r["backend"] != "aer":
            assert r["layout"].startswith("path:")  # the ring stays on 8 qubits
    with open(result.csv, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == CSV_COLUMNS and len(table) == len(rows)
    assert result.plot.exists() and result.plot.stat().st_size > 10_000
    summary = json.loads(result.summary.read_text())
    assert summary["config"]["seed"] == 0 and "total" in summary["timings"]
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert [r.split("-")[:3] for r in runs] == [["qmu", "basic", "L1"], ["qmu", "hybrid", "L1"]]
    for run in (out / "runs").iterdir():  # the methods' run directories, no retrain oracle
        assert sorted(p.name for p in (run / "unlearn" / "class-4").iterdir()) == [
            "ga",
            "rga",
            "ssd",
        ]


def test_a_rerun_reuses_every_part_and_prints_the_table(compared, capsys):
    from qmu_qiskit.cli import main

    cc, out, result = compared
    evals = sorted((out / "eval").rglob("teacher.json"))
    stamps = [p.stat().st_mtime_ns for p in evals]
    main(
        [
            "mia-compare",
            "--backends",
            "aer,aer_noisy:ibm_brisbane",
            "--data-dir",
            cc.data_dir,
            "--out",
            str(out),
            "--samples-per-class",
            "40",
            "--epochs",
            "1",
            "--basic-layers",
            "1",
            "--shots",
            "128,1024",
            "--attack-epochs",
            "60",
            "--attack-members",
            "40",
            "--option",
            "ga.epochs=3",
            "--option",
            "rga.epochs=3",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert (
        "after ga" in printed
        and "qmu-hybrid L=1" in printed
        and "aer_noisy:ibm_brisbane" in printed
    )
    assert [p.stat().st_mtime_ns for p in evals] == stamps  # evaluations read back, not re-run
    with open(out / "results.csv", newline="") as fh:
        again = list(csv.DictReader(fh))
    before = [
        {k: ("" if r[k] is None else r[k]) for k in ("model", "backend", "state")}
        for r in result.rows
    ]
    assert [{k: r[k] for k in ("model", "backend", "state")} for r in again] == [
        {k: str(v) for k, v in b.items()} for b in before
    ]
    np.testing.assert_allclose(
        [float(r["mia_success"]) for r in again], [r["mia_success"] for r in result.rows], atol=1e-4
    )  # the CSV keeps 4 decimals


def test_the_attack_retrained_per_backend(compared):
    """--attack-on backend: the noiseless rows are the same attack; on the noisy backend the
    attack is retrained on that backend's teacher outputs (read back, no circuit runs)."""
    from dataclasses import replace

    cc, out, result = compared
    evals = sorted((out / "eval").rglob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in evals]
    per_backend = run_compare(
        replace(cc, attack_on="backend"), out, progress=False, echo=lambda m: None
    )
    assert [p.stat().st_mtime_ns for p in evals] == stamps
    key = lambda r: (r["model"], r["backend"], r["shots"], r["state"])  # noqa: E731
    ref = {key(r): r for r in result.rows}
    for r in per_backend.rows:
        assert r["attack_trained_on"] == r["backend"]
        if r["backend"] == "aer":
            assert r["mia_success"] == ref[key(r)]["mia_success"]
    with pytest.raises(BadInputError, match="--attack-on must be reference or backend"):
        run_compare(replace(cc, attack_on="device"), out, progress=False)


def test_bad_requests_fail_before_anything_is_written(tmp_path, monkeypatch):
    from qmu_qiskit.backends import runtime

    out = tmp_path / "out"
    data = tmp_path / "nodata"
    with pytest.raises(BadInputError, match="noiseless reference"):
        run_compare(_tiny(data, backends=("aer_noisy:ibm_brisbane",)), out, progress=False)
    with pytest.raises(BadInputError, match="qmu-hybrid"):
        run_compare(_tiny(data, train_on_noisy=True), out, progress=False)
    with pytest.raises(BackendError, match="unknown backend"):
        run_compare(_tiny(data, backends=("aer", "quantum_thing")), out, progress=False)
    with pytest.raises(BadInputError, match="unknown model"):
        run_compare(_tiny(data, models=("hqml-pca",)), out, progress=False)
    for key in [k for k in os.environ if k.startswith("QISKIT_IBM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(runtime, "_service", None)
    with pytest.raises(CredentialsError, match="no IBM Quantum account"):
        run_compare(_tiny(data, backends=("aer", "ibm_brisbane")), out, progress=False)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# the study itself (real MNIST; tens of minutes)

DATA = Path(os.environ.get("QMU_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.mark.slow
@pytest.mark.skipif(
    not (DATA / "MNIST" / "raw").exists(), reason="MNIST not in QMU_DATA_DIR or ../shared/data"
)
def test_the_study_shape_on_mnist(tmp_path):
    """QMU: ≈90% → 0% noiseless, ≈75% → ≈4% on hardware. Required shape: noiseless ≥ 80% before
    and ≤ 10% after; noisy lower than noiseless before and ≤ 10% after. Judged on the HQNN: the
    basic QNN (0.6 test accuracy noiseless, 0.1 under Brisbane noise) gives the attack no
    membership signal (held-out attack accuracy ≈ 0.5), so its rates are reported, not judged."""
    cc = CompareConfig(backends=("aer", "aer_noisy:ibm_brisbane"), data_dir=str(DATA))
    out = Path(os.environ.get("QMU_MIA_COMPARE_OUT", tmp_path / "out"))
    result = run_compare(cc, out, progress=False)
    for model in ("qmu-hybrid",):
        exact = {
            r["state"]: r["mia_success"]
            for r in result.rows
            if r["model"] == model and r["backend"] == "aer" and r["shots"] is None
        }
        noisy = {
            r["state"]: r["mia_success"]
            for r in result.rows
            if r["model"] == model and r["backend"] != "aer" and r["shots"] is None
        }
        assert exact["teacher"] >= 0.8, (model, exact)
        assert noisy["teacher"] < exact["teacher"], (model, noisy, exact)
        for m in cc.methods:
            assert exact[m] <= 0.1 and noisy[m] <= 0.1, (model, m, exact, noisy)


# ------------------------------------------------------------------------------------------
# several seeds: mean, std and 95% t-interval per cell, claims judged on the intervals


def test_interval_is_the_student_t_interval_of_the_mean():
    from qmu_qiskit.studies.mia_compare import interval

    ci = interval([0.9, 1.0, 0.8, None])  # None: a seed without that value
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(0.9)
    assert ci["std"] == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t_{0.975, 2}
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((0.9 - half, 0.9 + half))
    assert interval([0.5])["ci_low"] == interval([0.5])["ci_high"] == 0.5
    assert interval([None])["mean"] is None
    wide = interval([0.0, 0.0, 1.0], bounds=(0.0, 1.0))  # a rate: the interval stays in [0, 1]
    assert wide["ci_low"] == 0.0 and wide["ci_high"] == 1.0 and wide["mean"] == pytest.approx(1 / 3)


def test_claims_hold_only_when_the_intervals_separate():
    from qmu_qiskit.studies.mia_compare import aggregate_seeds, shape_claims

    def row(seed, state, success, flagged=None):
        return {
            "model": "m",
            "layers": 1,
            "backend": "aer",
            "shots": None,
            "trained_on": "aer",
            "amplitude_loading": "exact",
            "attack_trained_on": "aer",
            "state": state,
            "mia_success": success,
            "nonmember_flagged": flagged,
            "acc_forget": None,
            "acc_test": None,
            "seed": seed,
        }

    rows = []
    for seed, (before, flagged, ga, rga) in enumerate(
        [(0.95, 0.9, 0.0, 0.9), (0.97, 0.85, 0.02, 0.7), (0.99, 0.95, 0.01, 1.0)]
    ):
        rows += [row(seed, "teacher", before, flagged), row(seed, "ga", ga), row(seed, "rga", rga)]
    agg = aggregate_seeds(rows)
    assert len(agg) == 3 and all(a["n_seeds"] == 3 for a in agg)
    claims = {c["claim"]: c["holds"] for c in shape_claims(agg, ["ga", "rga"])}
    assert claims == {
        "after ga < before": True,
        "after rga < before": False,
        "before > non-members flagged": False,
    }


def test_several_seeds_end_to_end(tmp_path):
    from qmu_qiskit.studies.mia_compare import SEEDS_CSV_COLUMNS, run_compare_seeds

    data = _synthetic_mnist(tmp_path / "data")
    cc = _tiny(
        data,
        backends=("aer",),
        models=("qmu-hybrid",),
        shots=(),
        methods=("ga",),
        method_options={"ga": {"epochs": 2}},
    )
    res = run_compare_seeds(cc, tmp_path / "out", seeds=2, progress=False, echo=lambda m: None)
    assert [r.rows[0]["seed"] for r in res.per_seed] == [0, 1]
    assert (tmp_path / "out" / "seed-1" / "results.csv").exists()
    with open(res.csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == SEEDS_CSV_COLUMNS
    assert {r["state"] for r in rows} == {"teacher", "ga"}
    for r in rows:
        assert r["n_seeds"] == "2" and r["seeds"] == "0 1"
        per_seed = [
            x["mia_success"]
            for res_s in res.per_seed
            for x in res_s.rows
            if x["state"] == r["state"]
        ]
        assert float(r["mia_success_mean"]) == pytest.approx(np.mean(per_seed), abs=1e-4)
        assert (
            float(r["mia_success_ci_low"])
            <= float(r["mia_success_mean"])
            <= float(r["mia_success_ci_high"])
        )
    summary = json.loads((tmp_path / "out" / "summary_seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and "Student-t" in summary["interval"]
    assert any(c["claim"] == "after ga < before" for c in summary["claims"])
    with pytest.raises(BadInputError, match="--seeds"):
        run_compare_seeds(cc, tmp_path / "out2", seeds=0)
