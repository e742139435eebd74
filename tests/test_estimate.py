"""``qmu-qiskit estimate`` / ``--dry-run``: the counts of a dry run equal the job ledger of the
same command run for real in local testing mode (``fake_<device>``), and the QPU-time model has
the properties its documentation states. The default tests use fake_manila (5 qubits, ~0.7 s per
local job) and, for mia-compare's 8-qubit models, fake_guadalupe (16 qubits); the fake_brisbane
comparisons of issue 16 (~7 s per local job) are marked slow."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from qiskit.quantum_info import SparsePauliOp
from test_mia_compare import _synthetic_mnist

from qmu_qiskit.backends.dryrun import activate, active
from qmu_qiskit.circuits import hqml_circuit, qmu_circuit
from qmu_qiskit.cli import main
from qmu_qiskit.execution.dry_run import ASSUMED_JOB_OVERHEAD_S, DryRun
from qmu_qiskit.execution.executor import Executor

#: The tiniest Iris run: 2 qubits, one layer, 30 samples, one epoch, 32 shots.
TINY = [
    "--dataset",
    "iris",
    "--qubits",
    "2",
    "--layers",
    "1",
    "--samples-per-class",
    "10",
    "--val-size",
    "0.2",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--no-progress",
]
UNLEARN = ["--forget", "class:0", "--method", "ga", "--option", "ga.epochs=1"]
UNLEARN += ["--method", "certified", "--no-progress", "--no-plots"]

#: The tiniest mia-compare: the HQNN (L=1) on 3 samples per class of a synthetic MNIST (10 test
#: samples), GA for one epoch, a 32-shot sweep (see :func:`_mia`).
MIA = [
    "--shots",
    "32",
    "--models",
    "qmu-hybrid",
    "--hybrid-layers",
    "1",
    "--methods",
    "ga",
    "--option",
    "ga.epochs=1",
    "--samples-per-class",
    "3",
    "--epochs",
    "1",
    "--attack-members",
    "2",
    "--attack-epochs",
    "5",
    "--no-progress",
]

COUNTS = ("jobs", "pubs", "circuit_evaluations", "shots")


def _mia(data: Path, device: str, *, noisy: bool = True) -> list[str]:
    """:data:`MIA` evaluated noiseless, on ``device`` (also the sweep's) and, with ``noisy``,
    on aer_noisy:ibm_brisbane."""
    backends = ",".join(["aer", *(["aer_noisy:ibm_brisbane"] if noisy else []), device])
    return ["--backends", backends, "--sweep-backend", device, *MIA, "--data-dir", str(data)]


def _run(argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(argv)
    return out.getvalue()


def _ledgers(root: Path, *, strip: int = 0) -> dict[str, tuple]:
    """Run directory (relative to ``root``, minus ``strip`` leading parts) → (jobs, PUBs,
    evaluations, shots) of its IBM Runtime jobs, from every job ledger under ``root``; a ledger
    shared by several run ids (mia-compare's evaluations) → one entry per ``"<dir> (<run id>)"``."""
    out = {}
    for path in sorted(root.rglob("ledger/jobs.sqlite")):
        con = sqlite3.connect(path)
        try:
            rows = con.execute(
                "SELECT run_id, num_pubs, circuit_evaluations, shots FROM jobs "
                "WHERE backend LIKE 'fake_%' OR backend LIKE 'ibm_%'"
            ).fetchall()
        finally:
            con.close()
        run = "/".join(path.parent.parent.relative_to(root).parts[strip:])
        run_ids = sorted({r[0] for r in rows})
        for run_id in run_ids:
            mine = [r[1:] for r in rows if r[0] == run_id]
            key = run if len(run_ids) == 1 else f"{run} ({run_id})"
            out[key] = (len(mine), *(int(sum(r[i] for r in mine)) for i in range(3)))
    return out


def _estimated(result: dict, *, strip: int = 0) -> dict[str, tuple]:
    return {
        "/".join(Path(r["run"]).parts[strip:]): tuple(r[k] for k in COUNTS) for r in result["runs"]
    }


def _estimate(tmp_path: Path, *argv) -> dict:
    path = tmp_path / f"estimate-{len(list(tmp_path.glob('estimate-*')))}.json"
    _run(["estimate", "--json", str(path), *argv])
    return json.loads(path.read_text())


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _check_totals(result: dict) -> None:
    total = result["total"]
    assert total["jobs"] == sum(r["jobs"] for r in result["runs"]) > 0
    # the model: every job's overhead plus its shots
    assert total["qpu_seconds"] == pytest.approx(
        result["overhead_seconds"] + result["shot_seconds"], abs=0.01
    )
    assert result["overhead_seconds"] == pytest.approx(total["jobs"] * ASSUMED_JOB_OVERHEAD_S)
    assert result["model"]["job_overhead_is_assumption"] is True
    assert result["limits"]["max_circuits_per_job"] == 100


@pytest.fixture(scope="module")
def aer_teacher(tmp_path_factory) -> Path:
    """The tiny Iris teacher on the exact engine (its oracle retrains there: no runtime jobs)."""
    out = tmp_path_factory.mktemp("est") / "teacher"
    _run(["train", *TINY, "--epochs", "2", "--out", str(out)])
    return out


# ---------------------------------------------------------------------------------------------
# counts = the job ledger of a real local-testing-mode run


def test_train_estimate_equals_the_ledger_of_the_fake_run(tmp_path):
    real = tmp_path / "real"
    _run(["train", *TINY, "--shots", "32", "--backend", "fake_manila", "--out", str(real)])
    never = tmp_path / "never"
    est = _estimate(
        tmp_path, "train", *TINY, "--shots", "32", "--backend", "fake_manila", "--out", str(never)
    )
    assert not never.exists()  # the dry run wrote nowhere but its scratch folder
    assert _estimated(est, strip=1) == _ledgers(real)
    assert est["total"]["jobs"] >= 4  # forward/gradient jobs of the epoch, then evaluation
    _check_totals(est)
    # --dry-run on the command prints the same estimate
    printed = _run(["train", *TINY, "--shots", "32", "--backend", "fake_manila", "--dry-run"])
    (line,) = [ln for ln in printed.splitlines() if ln.startswith("total ")]
    jobs, pubs, evals, _, shots = (int(v) for v in line.split()[1:6])
    assert (jobs, pubs, evals, shots) == tuple(est["total"][k] for k in COUNTS)
    assert "nothing was submitted" in printed and active() is None


def test_unlearn_estimate_equals_the_ledger_and_leaves_the_teacher_untouched(aer_teacher, tmp_path):
    real = tmp_path / "teacher"
    shutil.copytree(aer_teacher, real)
    _run(["unlearn", "--run", str(real), *UNLEARN, "--shots", "32", "--backend", "fake_manila"])
    before = _snapshot(aer_teacher)
    est = _estimate(
        tmp_path,
        "unlearn",
        "--run",
        str(aer_teacher),
        *UNLEARN,
        "--shots",
        "32",
        "--backend",
        "fake_manila",
    )
    assert _snapshot(aer_teacher) == before
    ledgers = _ledgers(real, strip=0)
    assert set(ledgers) == {"unlearn/class-0/ga", "unlearn/class-0/certified"}
    assert _estimated(est, strip=1) == ledgers
    _check_totals(est)


def test_study_estimate_equals_the_ledgers_of_the_fake_study(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\n"
        "datasets: [{name: iris, data: {samples_per_class: 10, val_size: 0.2}}]\n"
        "models: [{name: hqml-shallow, qubits: 2, layers: 1}]\n"
        "methods: [{method: ga, options: {epochs: 1}}]\n"
        "forget: [class:0]\n"
        "seeds: [0]\n"
        "backends: [{name: fake_manila, shots: 32}]\n"
        "training: {epochs: 1, batch_size: 16}\n"
        "executor: {kind: inline}\n"
    )
    _run(["study", str(spec), "--out", str(tmp_path / "real"), "--no-plots", "--quiet"])
    est = _estimate(tmp_path, "study", str(spec))
    ledgers = _ledgers(tmp_path / "real")
    assert len(ledgers) == 3  # teacher, retrain oracle, ga: all on the device
    assert _estimated(est) == ledgers
    _check_totals(est)


def test_mia_compare_estimate_counts_the_device_jobs_of_the_real_run(tmp_path):
    """Trained and unlearned on aer, evaluated on aer_noisy and fake_guadalupe: the estimate
    counts exactly the fake_guadalupe jobs the real run ledgers (exact and the 32-shot sweep),
    skips the aer_noisy evaluations and says which backends it did not count."""
    args = _mia(_synthetic_mnist(tmp_path / "data"), "fake_guadalupe")
    real = tmp_path / "real"
    _run(["mia-compare", *args, "--out", str(real)])
    ledgers = _ledgers(real)
    assert ledgers == {
        # the teacher's attack data (2 members + 2 forget-set members + 10 test samples) and
        # GA's forget set, one data-dependent circuit (PUB) per sample, 8 observables each
        "eval (mia-compare:fake_guadalupe:exact)": (2, 16, 128, 16 * 1024),
        "eval (mia-compare:fake_guadalupe:32)": (2, 16, 128, 16 * 32),
    }
    never = tmp_path / "never"
    est = _estimate(tmp_path, "mia-compare", *args, "--out", str(never))
    assert not never.exists()
    assert _estimated(est, strip=1) == ledgers
    assert list(est["backends"]) == ["fake_guadalupe"]
    assert set(est["not_counted"]) == {"aer", "aer_noisy:ibm_brisbane"}
    assert "skipped" in est["not_counted"]["aer_noisy:ibm_brisbane"]
    _check_totals(est)
    assert active() is None


@pytest.mark.slow
def test_mia_compare_dry_run_on_ibm_brisbane_equals_a_fake_brisbane_run(tmp_path, monkeypatch):
    """``mia-compare --backends aer,ibm_brisbane --dry-run`` (the hardware profile, no account)
    prints the totals a ``fake_brisbane`` run ledgers; the estimate's rows equal them per run
    id. Without --out, nothing is written to the default runs/mia-compare-s0."""
    data = _synthetic_mnist(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    _run(["mia-compare", *_mia(data, "fake_brisbane", noisy=False), "--out", "real"])
    ledgers = {
        k.replace("fake_brisbane", "ibm_brisbane"): v
        for k, v in _ledgers(tmp_path / "real").items()
    }
    assert set(ledgers) == {
        "eval (mia-compare:ibm_brisbane:exact)",
        "eval (mia-compare:ibm_brisbane:32)",
    }
    args = _mia(data, "ibm_brisbane", noisy=False)
    est = _estimate(tmp_path, "mia-compare", *args)
    assert _estimated(est, strip=1) == ledgers
    assert est["backends"]["ibm_brisbane"]["source"].startswith("hardware profile")
    assert est["not_counted"] == {"aer": "the models are trained and unlearned here"}
    _check_totals(est)
    printed = _run(["mia-compare", *args, "--dry-run"])
    (line,) = [ln for ln in printed.splitlines() if ln.startswith("total ")]
    jobs, pubs, evals, _, shots = (int(v) for v in line.split()[1:6])
    assert (jobs, pubs, evals, shots) == tuple(
        sum(v[i] for v in ledgers.values()) for i in range(4)
    )
    assert "not counted (nothing goes to IBM Quantum): aer (the models are trained" in printed
    assert not (tmp_path / "runs").exists() and active() is None


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "unlearn", "study"])
def test_estimate_on_ibm_brisbane_equals_a_fake_brisbane_run(command, aer_teacher, tmp_path):
    """Issue 16: ``estimate ... --backend ibm_brisbane`` (the device's hardware profile, no
    account) counts exactly what a ``fake_brisbane`` run records (~7 s per local job)."""
    shots = ["--shots", "32"]
    if command == "train":
        _run(["train", *TINY, *shots, "--backend", "fake_brisbane", "--out", str(tmp_path / "r")])
        ledgers = _ledgers(tmp_path / "r")
        est = _estimate(tmp_path, "train", *TINY, *shots, "--backend", "ibm_brisbane")
        assert _estimated(est, strip=1) == ledgers
    elif command == "unlearn":
        real = tmp_path / "teacher"
        shutil.copytree(aer_teacher, real)
        _run(["unlearn", "--run", str(real), *UNLEARN, *shots, "--backend", "fake_brisbane"])
        ledgers = _ledgers(real)
        est = _estimate(
            tmp_path, "unlearn", "--run", str(aer_teacher), *UNLEARN, *shots,
            "--backend", "ibm_brisbane",
        )  # fmt: skip
        assert _estimated(est, strip=1) == ledgers
    else:
        spec = tmp_path / "tiny.yaml"
        spec.write_text(
            "name: tiny\n"
            "datasets: [{name: iris, data: {samples_per_class: 10, val_size: 0.2}}]\n"
            "models: [{name: hqml-shallow, qubits: 2, layers: 1}]\n"
            "methods: [{method: ga, options: {epochs: 1}}]\n"
            "forget: [class:0]\n"
            "seeds: [0]\n"
            "backends: [{name: fake_brisbane, shots: 32}]\n"
            "training: {epochs: 1, batch_size: 16}\n"
        )
        _run(["study", str(spec), "--out", str(tmp_path / "real"), "--no-plots", "--quiet"])
        ledgers = {
            k.replace("fake_brisbane", "ibm_brisbane"): v
            for k, v in _ledgers(tmp_path / "real").items()
        }
        est = _estimate(tmp_path, "study", str(spec), "--backend", "ibm_brisbane")

        def unhashed(runs):  # teacher folders end in a config hash, which names the backend
            return {re.sub(r"-s0-[0-9a-f]+", "-s0", k): v for k, v in runs.items()}

        assert len(ledgers) == 3 and unhashed(_estimated(est)) == unhashed(ledgers)
    assert ledgers and est["backends"]["ibm_brisbane"]["source"].startswith("hardware profile")
    _check_totals(est)


# ---------------------------------------------------------------------------------------------
# the counting runner and the QPU-time model


def _z(q, n):
    return SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], n)


def test_dry_run_values_are_the_exact_engine_and_the_model_adds_up(tmp_path):
    qc, _, _ = hqml_circuit(2, 1)
    vals = np.random.default_rng(5).uniform(-np.pi, np.pi, (3, qc.num_parameters))
    x0 = SparsePauliOp.from_sparse_list([("X", [0], 1.0)], 2)
    with activate(DryRun()) as dry:
        ex = Executor("fake_manila", shots=100, cache_dir=tmp_path)
        commuting, _ = ex.expectation_values(qc, [_z(0, 2), _z(1, 2)], vals)
        mixed, _ = ex.expectation_values(qc, [_z(0, 2), x0], vals)
        Executor("fake_manila", shots=200, cache_dir=tmp_path).expectation_values(
            qc, [_z(0, 2), _z(1, 2)], vals
        )
    exact = Executor("aer", cache_dir=tmp_path)
    np.testing.assert_allclose(
        commuting, exact.expectation_values(qc, [_z(0, 2), _z(1, 2)], vals)[0], atol=1e-9
    )
    np.testing.assert_allclose(
        mixed, exact.expectation_values(qc, [_z(0, 2), x0], vals)[0], atol=1e-9
    )
    z, zx, z200 = dry.records
    assert (z.pubs, z.parameter_sets, z.circuit_evaluations, z.shots) == (1, 3, 6, 300)
    assert z.executed_circuits == 3 and zx.executed_circuits == 6  # Z,Z: one basis; Z,X: two
    assert z200.shot_seconds == pytest.approx(2 * z.shot_seconds)
    assert z.qpu_seconds == pytest.approx(ASSUMED_JOB_OVERHEAD_S + z.shot_seconds)
    timing = dry.devices["fake_manila"]
    assert timing.rep_delay == pytest.approx(250e-6)  # FakeManila's default_rep_delay
    per_shot = z.shot_seconds / z.executions
    # rep_delay + readout + gates: more than rep_delay and the readout, far less than a ms more
    assert timing.rep_delay + min(timing.measure.values()) < per_shot < timing.rep_delay + 1e-4
    assert 0 < z.longest_circuit_s < 1e-4


def test_data_dependent_circuits_in_a_dry_run(tmp_path):
    """Amplitude-encoded circuits (one transpiled circuit per sample, many PUBs in one job):
    counted per PUB, valued exactly."""
    n = 3
    qc, x, w = qmu_circuit(1, n)
    rng = np.random.default_rng(0)
    index = {p: i for i, p in enumerate(qc.parameters)}
    vals = np.zeros((4, qc.num_parameters))
    for p in x:
        vals[:, index[p]] = rng.normal(size=4)
    for p in w:
        vals[:, index[p]] = rng.normal()
    obs = [_z(q, n) for q in range(n)]
    with activate(DryRun()) as dry:
        evs, _ = Executor("fake_manila", shots=64, cache_dir=tmp_path).expectation_values(
            qc, obs, vals
        )
    (job,) = dry.records
    assert (job.pubs, job.parameter_sets, job.circuit_evaluations) == (4, 4, 12)
    exact, _ = Executor("aer", cache_dir=tmp_path).expectation_values(qc, obs, vals)
    np.testing.assert_allclose(evs, exact, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# bad input: one line, non-zero exit, nothing written


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["estimate", "train", "--backend", "aer"], "submits nothing to IBM Quantum"),
        (["train", "--backend", "aer_noisy", "--dry-run"], "submits nothing to IBM Quantum"),
        (["estimate", "train", "--backend", "ibm_nowhere"], "no hardware profile for ibm_nowhere"),
        (["estimate", "train", "--backend", "fake_nowhere"], "unknown fake backend"),
        (["estimate", "study", "studies/hqml_iris.yaml", "--report-only"], "nothing to estimate"),
        (["estimate", "study", "studies/hqml_iris.yaml"], "submits nothing to IBM Quantum"),
        (["estimate", "study", "studies/hqml_iris.yaml", "--backend"], "--backend needs a value"),
        (["estimate", "mia-compare", "--backends", "aer,aer_noisy"], "submits nothing to IBM"),
        (["mia-compare", "--backends", "aer", "--dry-run"], "add ibm_<device> (or fake_<device>)"),
        (
            ["estimate", "evaluate"],
            "'evaluate' is not one of 'train', 'unlearn', 'study', 'mia-compare'",
        ),
    ],
)
def test_bad_input_is_one_line(argv, said, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    out = tmp_path / "run"
    extra = ["--out", str(out)] if argv[:2] == ["estimate", "train"] else []
    with pytest.raises(SystemExit) as exc:
        main([*argv, *extra])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said.lower() in err[0].lower(), err
    assert not out.exists() and active() is None
