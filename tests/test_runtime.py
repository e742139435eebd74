"""The IBM Runtime code path, offline: ``fake_<device>`` backends run qiskit-ibm-runtime's local
testing mode through exactly the code that serves ``ibm_<device>`` (Session/Batch, ISA circuits,
runtime primitives, job ids in the ledger). No test here touches the network."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from qiskit.quantum_info import SparsePauliOp

from qmu_qiskit.backends import runtime
from qmu_qiskit.circuits import hqml_circuit, qmu_circuit
from qmu_qiskit.exceptions import BackendError, BadInputError
from qmu_qiskit.execution import runtime_runner
from qmu_qiskit.execution.executor import Executor
from qmu_qiskit.execution.ledger import JobLedger

FAKE_TOKEN = f"qmu-test-token-{uuid.uuid4().hex}"


def _sub_env(tmp: Path, extra: dict | None = None) -> dict:
    """A subprocess environment with no IBM account anywhere: no QISKIT_IBM_* variables and an
    empty HOME (qiskit-ibm-runtime reads saved accounts from ~/.qiskit/qiskit-ibm.json)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM_")}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env.update({"HOME": str(home), "MPLCONFIGDIR": str(home / "mpl"), "PYTHONWARNINGS": "ignore"})
    env.update(extra or {})
    return env


def _cli(*args, env, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "qmu_qiskit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def _sql(path: Path, query: str) -> list:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


class _Spy:
    """Records the runtime primitives, sessions and batches the runner builds."""

    def __init__(self):
        self.primitives: list = []
        self.pubs: list = []
        self.modes: list = []
        self.fail_next_with: Exception | None = None


@pytest.fixture
def spy(monkeypatch):
    s = _Spy()
    real = runtime._primitive_classes

    def spying():
        Est, Sam, Session, Batch = real()

        class SpyEstimator(Est):
            def run(self, pubs, *a, **k):
                if s.fail_next_with is not None:
                    exc, s.fail_next_with = s.fail_next_with, None
                    raise exc
                s.primitives.append(self)
                s.pubs.append(list(pubs))
                return super().run(pubs, *a, **k)

        class SpySession(Session):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                s.modes.append(self)

        class SpyBatch(Batch):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                s.modes.append(self)

        return SpyEstimator, Sam, SpySession, SpyBatch

    monkeypatch.setattr(runtime, "_primitive_classes", spying)
    return s


def _isa_on(circuit, target) -> bool:
    return circuit.num_qubits == target.num_qubits and all(
        target.instruction_supported(
            inst.operation.name, tuple(circuit.find_bit(q).index for q in inst.qubits)
        )
        for inst in circuit.data
        if inst.operation.name != "barrier"
    )


# ---------------------------------------------------------------------------------------------
# `qmu-qiskit unlearn --backend fake_brisbane --method certified`, once for the tests below


@pytest.fixture(scope="module")
def fake_unlearn(tmp_path_factory, iris_teacher):
    """The CLI's ``unlearn --backend fake_brisbane --method certified`` on the Iris teacher, with a
    fake ``QISKIT_IBM_TOKEN`` in the environment. Certified removal runs two inference sweeps
    (features of D_r and D_f) and the evaluation three (train/val/test): 5 runtime jobs, ~30 s."""
    import shutil

    from qmu_qiskit.cli import main

    teacher = tmp_path_factory.mktemp("fake") / "iris"
    shutil.copytree(iris_teacher, teacher, ignore=shutil.ignore_patterns("unlearn", ".lock"))
    s = _Spy()
    built = []
    real_classes = runtime._primitive_classes
    real_init = runtime_runner.RuntimeRunner.__init__

    def spying():
        Est, Sam, Session, Batch = real_classes()

        class SpyEstimator(Est):
            def run(self, pubs, *a, **k):
                s.primitives.append(self)
                s.pubs.append(list(pubs))
                return super().run(pubs, *a, **k)

        class SpySession(Session):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                s.modes.append(self)

        return SpyEstimator, Sam, SpySession, Batch

    def init(self, *a, **k):
        real_init(self, *a, **k)
        built.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QISKIT_IBM_TOKEN", FAKE_TOKEN)
        mp.setattr(runtime, "_primitive_classes", spying)
        mp.setattr(runtime_runner.RuntimeRunner, "__init__", init)
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(
                [
                    "unlearn",
                    "--run",
                    str(teacher),
                    "--forget",
                    "class:0",
                    "--method",
                    "certified",
                    "--backend",
                    "fake_brisbane",
                    "--no-progress",
                ]
            )
    return {
        "teacher": teacher,
        "spy": s,
        "runners": built,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
    }


def test_fake_backend_unlearn_runs_the_runtime_path(fake_unlearn):
    from qiskit_ibm_runtime import EstimatorV2, Session
    from qiskit_ibm_runtime.fake_provider import FakeBrisbane

    run = fake_unlearn["teacher"] / "unlearn" / "class-0" / "certified"
    for name in ("metrics.json", "outputs.npz", "cost.json", "model.pt", "config.yaml", "run.json"):
        assert (run / name).exists(), name
    (runner,) = fake_unlearn["runners"]  # one runtime runner: the method's (the oracle runs on aer)
    assert runner.name == "runtime:local" and runner.local and not runner.remote
    assert runner.sessions_opened == 1  # one Session for the whole method and its evaluation
    spy = fake_unlearn["spy"]
    assert len(spy.modes) == 1 and isinstance(spy.modes[0], Session)
    assert spy.modes[0].session_id is None  # local testing mode has no service-side session
    assert spy.primitives and all(isinstance(p, EstimatorV2) for p in spy.primitives)
    assert all(p.mode is spy.modes[0] for p in spy.primitives)  # every job inside the session
    target = FakeBrisbane().target
    for pubs in spy.pubs:  # ISA circuits on the 127-qubit device, observables laid out too
        for circuit, obs, _ in pubs:
            assert _isa_on(circuit, target)
            assert all(op.num_qubits == target.num_qubits for op in obs.ravel())
    tags = spy.primitives[0].options.environment.job_tags
    assert "qmu-qiskit" in tags and any(t.startswith("run-") for t in tags)

    ledger = JobLedger(run / "ledger" / "jobs.sqlite")
    try:
        jobs = ledger.jobs()
    finally:
        ledger.close()
    assert len(jobs) == len(spy.primitives) >= 3
    for job in jobs:
        assert job.backend == "fake_brisbane" and job.runner == "runtime:local"
        assert job.job_id and job.status == "done"
    assert all(
        shots > 0 for (shots,) in _sql(run / "ledger" / "jobs.sqlite", "SELECT shots FROM jobs")
    )

    import json

    metrics = json.loads((run / "metrics.json").read_text())
    ex = metrics["execution"]
    assert ex["runner"]["runner"] == "runtime:local" and ex["runner"]["local_testing_mode"] is True
    assert ex["runner"]["mode"] == "session" and ex["runner"]["sessions_opened"] == 1
    assert ex["backend"]["name"] == "fake_brisbane"
    assert "fake_brisbane" in fake_unlearn["stdout"] or "certified" in fake_unlearn["stdout"]


def test_no_token_is_written_anywhere(fake_unlearn):
    """A grep of every file the run wrote — config, run.json, the ledger database and its stored
    results, outputs, metrics, cost, checkpoints — and of the command's output finds no token."""
    needle = FAKE_TOKEN.encode()
    files = [p for p in fake_unlearn["teacher"].rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files) and any(
        p.name == "metrics.json" for p in files
    )
    leaked = [str(p) for p in files if needle in p.read_bytes()]
    assert leaked == []
    assert FAKE_TOKEN not in fake_unlearn["stdout"] + fake_unlearn["stderr"]


# ---------------------------------------------------------------------------------------------
# accounts and devices


def test_ibm_backend_without_credentials_is_one_line_and_leaves_no_run(iris_teacher_copy, tmp_path):
    res = _cli(
        "unlearn",
        "--run",
        str(iris_teacher_copy),
        "--forget",
        "class:0",
        "--method",
        "certified",
        "--backend",
        "ibm_brisbane",
        env=_sub_env(tmp_path),
    )
    assert res.returncode == 3
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "no IBM Quantum account found" in lines[0] and "QISKIT_IBM_TOKEN" in lines[0]
    assert "Traceback" not in res.stderr
    unlearn = iris_teacher_copy / "unlearn"
    assert not any(p.name == "run.json" for p in unlearn.rglob("*")) if unlearn.exists() else True


def test_a_device_too_small_is_refused_before_any_run_directory(tmp_path):
    out = tmp_path / "run"
    res = _cli(
        "train",
        "--dataset",
        "digits",
        "--qubits",
        "8",
        "--backend",
        "fake_manila",
        "--out",
        str(out),
        env=_sub_env(tmp_path),
    )
    assert res.returncode == 3
    (line,) = res.stderr.strip().splitlines()
    assert "needs 8 qubits but fake_manila has 5" in line
    assert not out.exists()
    # the executor refuses too, and so does the path layout
    qc, _, _ = qmu_circuit(1, 8)
    tail = qc.copy_empty_like()
    for inst in qc.data[1:]:
        tail.append(inst)
    with pytest.raises(BackendError, match="needs 8 qubits"):
        Executor("fake_manila", cache_dir=tmp_path).prepare(tail)
    with pytest.raises(BackendError, match="needs 8 qubits"):
        Executor("fake_manila", cache_dir=tmp_path, layout="path").prepare(tail)


def test_unknown_runtime_options_and_ideal_loading_are_refused(tmp_path):
    with pytest.raises(BadInputError, match="unknown runtime option"):
        Executor("fake_manila", cache_dir=tmp_path, runtime_options={"resilience": 1})
    with pytest.raises(BadInputError, match="Aer emulation mode"):
        Executor("fake_manila", cache_dir=tmp_path, amplitude_loading="ideal")


# ---------------------------------------------------------------------------------------------
# sessions, batches and options (on the 5-qubit fake device: fast)


@pytest.fixture(scope="module")
def hqml4():
    qc, x, w = hqml_circuit(4, 1)
    obs = [SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], 4) for q in range(4)]
    vals = np.random.default_rng(3).uniform(0, np.pi, (6, qc.num_parameters))
    return qc, obs, vals


def test_an_expired_session_is_reopened_and_the_run_resumes(hqml4, spy, tmp_path):
    qc, obs, vals = hqml4
    ex = Executor(
        "fake_manila", cache_dir=tmp_path, ledger=tmp_path / "jobs.sqlite", run_id="run-s"
    )
    first, _ = ex.expectation_values(qc, obs, vals[:3])
    assert ex.runner.sessions_opened == 1
    ex.runner.mode().close()  # the session expires between two calls (max_time reached)
    second, _ = ex.expectation_values(qc, obs, vals[3:])
    assert ex.runner.sessions_opened == 2 and len(spy.modes) == 2
    assert spy.primitives[-1].mode is spy.modes[-1]
    # a session the service closed under a submission: the runner reopens it and resubmits once
    spy.fail_next_with = RuntimeError("The session is closed (expired after max_time)")
    third, _ = ex.expectation_values(qc, obs, vals[:3] + 0.1)
    assert ex.runner.sessions_opened == 3 and third.shape == (4, 3)
    # the run resumes: jobs already done come back from the ledger, not from the device
    jobs_before = len(spy.primitives)
    again, _ = ex.expectation_values(qc, obs, vals[:3])
    assert len(spy.primitives) == jobs_before and ex.cost.total.jobs_reused == 1
    np.testing.assert_array_equal(again, first)
    ex.close()


def test_error_mitigation_options_reach_the_primitive(hqml4, spy, tmp_path):
    from qiskit_ibm_runtime import Batch

    qc, obs, vals = hqml4
    options = {
        "mode": "batch",
        "resilience_level": 2,
        "dynamical_decoupling": True,
        "twirling": True,
        "zne": True,
        "max_time": 600,
    }
    ex = Executor("fake_manila", cache_dir=tmp_path, run_id="run-opt", runtime_options=options)
    ex.expectation_values(qc, obs, vals[:2])
    prim = ex.runner.last_primitive
    assert prim is spy.primitives[-1]
    assert isinstance(prim.mode, Batch)
    o = prim.options
    assert o.resilience_level == 2
    assert o.dynamical_decoupling.enable is True
    assert o.twirling.enable_gates is True and o.twirling.enable_measure is True
    assert o.resilience.zne_mitigation is True
    assert o.environment.job_tags == ["qmu-qiskit", "run-opt"]
    desc = ex.describe()["runner"]
    assert desc["mode"] == "batch" and "without effect" in desc["error_mitigation"]
    assert desc["options"]["resilience_level"] == 2
    ex.close()


def test_cli_runtime_flags_become_the_backend_config_and_unknown_options_are_refused():
    from qmu_qiskit.cli import backend_dict, runtime_items
    from qmu_qiskit.config import BackendConfig

    got = backend_dict(
        "fake_manila",
        None,
        None,
        None,
        None,
        runtime_items(1, dynamical_decoupling=True, twirling=False, zne=True, max_time=300),
    )
    assert got == {
        "name": "fake_manila",
        "runtime": {
            "resilience_level": 1,
            "max_time": 300,
            "dynamical_decoupling": True,
            "zne": True,
        },
    }
    assert BackendConfig(**got).runtime["max_time"] == 300
    assert "runtime" not in backend_dict("aer", None, None, None, None, runtime_items())
    with pytest.raises(
        BadInputError, match=r"runtime: unknown option\(s\) resilience; use mode, max_time"
    ):
        from qmu_qiskit.config import resolve_run_config

        resolve_run_config(
            dataset="iris", backend={"name": "fake_manila", "runtime": {"resilience": 1}}
        )


def test_amplitude_encoded_circuits_run_as_one_runtime_job(spy, tmp_path):
    """Data-dependent circuits on a device: each sample's amplitudes are bound and transpiled
    (cached by content), and all samples of a call go out as PUBs of one job."""
    n = 3
    qc, x, w = qmu_circuit(1, n)
    obs = [SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], n) for q in range(n)]
    rng = np.random.default_rng(0)
    index = {p: i for i, p in enumerate(qc.parameters)}
    vals = np.zeros((4, qc.num_parameters))
    for p in x:
        vals[:, index[p]] = rng.normal(size=4)
    for p in w:
        vals[:, index[p]] = rng.normal()
    ex = Executor(
        "fake_manila", shots=4000, cache_dir=tmp_path, ledger=tmp_path / "l.sqlite", run_id="run-a"
    )
    evs, stds = ex.expectation_values(qc, obs, vals)
    exact, _ = Executor("aer", cache_dir=tmp_path).expectation_values(qc, obs, vals)
    assert evs.shape == (n, 4) and len(spy.primitives) == 1 and len(spy.pubs[0]) == 4
    assert np.abs(evs - exact).max() < 0.35  # device noise + shot noise on a small device
    (job,) = ex.ledger.jobs()
    assert job.status == "done"
    assert _sql(tmp_path / "l.sqlite", "SELECT num_pubs FROM jobs") == [(4,)]
    misses = ex.cost.total.transpile_misses
    ex.expectation_values(
        qc,
        obs,
        vals + np.where(np.isin(np.arange(qc.num_parameters), [index[p] for p in w]), 0.3, 0),
    )
    assert ex.cost.total.transpile_misses == misses  # same samples, new weights: no transpiling
    ex.close()


@pytest.mark.hardware
@pytest.mark.skipif(
    not os.environ.get("QISKIT_IBM_TOKEN"), reason="needs an IBM Quantum account (QISKIT_IBM_TOKEN)"
)
def test_the_same_path_on_ibm_hardware(hqml4, tmp_path):  # pragma: no cover - needs the service
    """One small job on the least busy device the account can use: the path the fake_* tests
    exercise offline, on hardware (session, ISA circuit, job id in the ledger)."""
    qc, obs, vals = hqml4
    device = runtime.runtime_service().least_busy(operational=True, simulator=False)
    ex = Executor(
        device.name,
        shots=256,
        cache_dir=tmp_path,
        ledger=tmp_path / "l.sqlite",
        run_id="run-hw",
        runtime_options={"max_time": 300},
    )
    evs, _ = ex.expectation_values(qc, obs, vals[:2])
    assert evs.shape == (4, 2) and ex.runner.remote
    (job,) = ex.ledger.jobs()
    assert job.status == "done" and job.session_id
    ex.close()
