"""The execution engine: batching primitives, gradients, one job per mini-batch, the transpile
cache and the job ledger — on real Qiskit / Aer code paths."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qmu_qiskit.circuits import hqml_circuit
from qmu_qiskit.exceptions import BackendError, BadInputError
from qmu_qiskit.execution.executor import Executor
from qmu_qiskit.execution.ledger import JobLedger
from qmu_qiskit.models.qnn import FusedEstimatorQNN, FusedSamplerQNN, QuantumLayer

N = 4


@pytest.fixture(scope="module")
def hqml():
    qc, x, w = hqml_circuit(N, 2)
    obs = [SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], N) for q in range(N)]
    rng = np.random.default_rng(11)
    X = rng.uniform(0, np.pi, (6, N))
    W = rng.uniform(0, 2 * np.pi, len(w))
    return qc, x, w, obs, X, W


def _reference(hqml):
    qc, x, w, obs, X, W = hqml
    ref = EstimatorQNN(
        circuit=qc,
        observables=obs,
        input_params=x,
        weight_params=w,
        estimator=StatevectorEstimator(),
        input_gradients=True,
        default_precision=0.0,
    )
    f = ref.forward(X, W)
    gi, gw = ref.backward(X, W)
    return f, gi, gw


@pytest.mark.parametrize("engine", ["exact", "aer"])
def test_batching_estimator_matches_reference_for_mixed_pubs(hqml, engine, tmp_path):
    qc, x, w, obs, X, W = hqml
    ex = Executor("aer", engine=engine, cache_dir=tmp_path)
    est = ex.estimator()
    qc2, _, _ = hqml_circuit(3, 1)
    vals = np.hstack([X, np.tile(W, (len(X), 1))])[:3]
    v2 = np.random.default_rng(2).uniform(0, 1, (2, qc2.num_parameters))
    obs_col = np.empty((2, 1), dtype=object)
    obs_col[0, 0], obs_col[1, 0] = obs[0], obs[1] + obs[2] * 0.5
    pubs = [
        (qc, obs[0], vals),  # what EstimatorQNN sends, one per observable
        (qc, obs[3], vals),
        (qc, obs_col, vals),  # broadcast (2, 1) × (3,) → (2, 3)
        (qc2, SparsePauliOp("ZZI"), v2),  # a second circuit → a second job
    ]
    jobs_before = ex.cost.total.jobs
    res = est.run(pubs).result()
    assert ex.cost.total.jobs - jobs_before == 2  # one broadcast job per circuit
    ref = StatevectorEstimator().run(pubs).result()
    for got, want in zip(res, ref):
        assert got.data.evs.shape == want.data.evs.shape
        np.testing.assert_allclose(got.data.evs, want.data.evs, atol=1e-10)


def test_stock_estimator_qnn_accepts_our_primitives_and_gradients(hqml, tmp_path):
    """The gradient classes keep qiskit-machine-learning's contract: a stock EstimatorQNN gives
    the reference forward and input/weight gradients through them."""
    qc, x, w, obs, X, W = hqml
    f0, gi0, gw0 = _reference(hqml)
    for engine in ("exact", "aer"):
        ex = Executor("aer", engine=engine, cache_dir=tmp_path)
        qnn = EstimatorQNN(
            circuit=qc,
            observables=obs,
            input_params=x,
            weight_params=w,
            estimator=ex.estimator(),
            gradient=ex.estimator_gradient(),
            input_gradients=True,
            default_precision=0.0,
        )
        f = qnn.forward(X, W)
        gi, gw = qnn.backward(X, W)
        np.testing.assert_allclose(f, f0, atol=1e-10)
        np.testing.assert_allclose(gi, gi0, atol=1e-9)
        np.testing.assert_allclose(gw, gw0, atol=1e-9)


def test_exact_gradient_within_1e6_of_finite_differences(hqml, tmp_path):
    qc, x, w, obs, X, W = hqml
    ex = Executor("aer", cache_dir=tmp_path)
    qnn = FusedEstimatorQNN(
        executor=ex,
        circuit=qc,
        observables=obs,
        input_params=x,
        weight_params=w,
        input_gradients=True,
    )
    gi, gw = qnn.backward(X, W)
    eps = 1e-6
    for j in range(len(W)):
        up, dn = W.copy(), W.copy()
        up[j] += eps
        dn[j] -= eps
        fd = (qnn.forward(X, up) - qnn.forward(X, dn)) / (2 * eps)
        assert np.abs(fd - gw[:, :, j]).max() < 1e-6
    for j in range(N):
        up, dn = X.copy(), X.copy()
        up[:, j] += eps
        dn[:, j] -= eps
        fd = (qnn.forward(up, W) - qnn.forward(dn, W)) / (2 * eps)
        assert np.abs(fd - gi[:, :, j]).max() < 1e-6


def test_noisy_parameter_shift_is_exact_under_device_noise(hqml, tmp_path):
    """performance.md lesson 6: the batched shift rule equals finite differences of the noisy
    (density-matrix, FakeBrisbane) model itself."""
    qc, x, w, obs, X, W = hqml
    ex = Executor("aer_noisy", cache_dir=tmp_path)
    qnn = FusedEstimatorQNN(
        executor=ex,
        circuit=qc,
        observables=obs,
        input_params=x,
        weight_params=w,
        input_gradients=False,
    )
    Xs = X[:3]
    _, gw = qnn.backward(Xs, W)
    eps = 1e-5
    for j in (0, 5, 11, len(W) - 1):
        up, dn = W.copy(), W.copy()
        up[j] += eps
        dn[j] -= eps
        fd = (qnn.forward(Xs, up) - qnn.forward(Xs, dn)) / (2 * eps)
        assert np.abs(fd - gw[:, :, j]).max() < 1e-6
    f_ideal = _reference(hqml)[0][:3]
    assert np.abs(qnn.forward(Xs, W) - f_ideal).max() > 1e-3  # the device noise is really there


def test_shot_based_gradient_within_statistical_tolerance(hqml, tmp_path):
    """Shot noise only (noise scale 0): the parameter-shift gradient from 20000 shots is within
    five standard errors of the exact gradient."""
    qc, x, w, obs, X, W = hqml
    shots = 20000
    ex = Executor("aer_noisy", shots=shots, noise_scale=0.0, cache_dir=tmp_path)
    qnn = FusedEstimatorQNN(
        executor=ex,
        circuit=qc,
        observables=obs,
        input_params=x,
        weight_params=w,
        input_gradients=False,
    )
    Xs = X[:2]
    _, gw = qnn.backward(Xs, W)
    _, _, gw0 = _reference(hqml)
    # each ±π/2 term has std ≤ 1/sqrt(shots): the half-difference has std ≤ 1/sqrt(2·shots)
    sigma = 1 / np.sqrt(2 * shots)
    assert np.abs(gw - gw0[:2]).max() < 5 * sigma
    assert np.abs(gw - gw0[:2]).max() > 0  # shots, not exact values


@pytest.mark.parametrize(
    "backend,kwargs", [("aer", {}), ("aer_noisy", {}), ("aer_noisy", {"shots": 256})]
)
def test_a_training_step_submits_one_job_per_mini_batch(hqml, backend, kwargs, tmp_path):
    qc, x, w, obs, X, W = hqml
    ex = Executor(backend, cache_dir=tmp_path, **kwargs)
    qnn = FusedEstimatorQNN(
        executor=ex,
        circuit=qc,
        observables=obs,
        input_params=x,
        weight_params=w,
        input_gradients=False,
    )
    layer = QuantumLayer(qnn, initial_weights=W)
    head = torch.nn.Linear(N, 3)
    opt = torch.optim.Adam(list(layer.parameters()) + list(head.parameters()), lr=0.01)
    xb = torch.tensor(X, dtype=torch.float32)
    yb = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(3):
        before = ex.cost.total.jobs
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(layer(xb)), yb).backward()
        opt.step()
        assert ex.cost.total.jobs - before == 1
    with torch.no_grad():
        before = ex.cost.total.jobs
        layer(xb)
        assert ex.cost.total.jobs - before == 1  # inference: one job, values only


def test_transpile_cache_second_process_spends_no_time_transpiling(hqml, tmp_path):
    qc, x, w, obs, X, W = hqml
    vals = np.hstack([X, np.tile(W, (len(X), 1))])
    first = Executor("aer_noisy", cache_dir=tmp_path)
    first.expectation_values(qc, obs, vals)
    assert first.cost.total.transpile_misses == 1
    # a fresh executor (as a new process would have) reads the ISA circuit from QPY on disk
    second = Executor("aer_noisy", cache_dir=tmp_path)
    ev2, _ = second.expectation_values(qc, obs, vals)
    assert second.cost.total.transpile_misses == 0
    assert second.cost.total.transpile_hits == 1
    assert second.cost.total.transpile_seconds == 0.0
    ev1, _ = first.expectation_values(qc, obs, vals)
    np.testing.assert_allclose(ev1, ev2, atol=1e-12)
    # a different optimisation level is another cache entry
    third = Executor("aer_noisy", cache_dir=tmp_path, optimization_level=0)
    third.prepare(qc)
    assert third.cost.total.transpile_misses == 1


def test_ledger_reads_back_finished_jobs_and_never_runs_them_twice(hqml, tmp_path):
    qc, x, w, obs, X, W = hqml
    vals = np.hstack([X, np.tile(W, (len(X), 1))])
    db = tmp_path / "ledger" / "jobs.sqlite"
    a = Executor("aer_noisy", shots=512, cache_dir=tmp_path, ledger=db, run_id="run-a")
    ev_a, _ = a.expectation_values(qc, obs, vals)
    assert a.cost.total.jobs == 1
    b = Executor("aer_noisy", shots=512, cache_dir=tmp_path, ledger=db, run_id="run-a")
    ev_b, _ = b.expectation_values(qc, obs, vals)
    assert b.cost.total.jobs == 0 and b.cost.total.jobs_reused == 1
    np.testing.assert_array_equal(ev_a, ev_b)  # the stored result, bit for bit
    ledger = JobLedger(db)
    assert ledger.duplicate_submissions() == []
    rows = ledger.jobs(run_id="run-a")
    assert (
        len(rows) == 1 and rows[0].status == "done" and rows[0].backend == "aer_noisy:ibm_brisbane"
    )
    assert oct(os.stat(db).st_mode & 0o777) == "0o600"
    # another run id is another job (fingerprints are per run)
    c = Executor("aer_noisy", shots=512, cache_dir=tmp_path, ledger=db, run_id="run-c")
    c.expectation_values(qc, obs, vals)
    assert c.cost.total.jobs == 1


def test_a_local_job_lost_with_its_process_is_rerun_once(hqml, tmp_path):
    qc, x, w, obs, X, W = hqml
    vals = np.hstack([X, np.tile(W, (len(X), 1))])[:2]
    db = tmp_path / "jobs.sqlite"
    ex = Executor("aer_noisy", shots=128, cache_dir=tmp_path, ledger=db, run_id="r")
    prepared = ex.prepare(qc)
    fp = ex._fingerprint("estimate", prepared, vals, prepared.observables(obs), None, None)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    ledger = JobLedger(db)
    ledger.record_submitted(
        job_id="ghost",
        fingerprint=fp,
        backend=ex.spec.name,
        runner="aer_shots",
        remote=False,
        session_id=None,
        run_id="r",
        tags={},
        num_pubs=1,
        circuit_evaluations=8,
        shots=0,
    )
    ledger._conn().execute("UPDATE jobs SET pid = ? WHERE job_id = 'ghost'", (int(dead.stdout),))
    ex.expectation_values(qc, obs, vals)
    assert ledger.get("ghost").status == "lost"
    assert ex.cost.total.jobs == 1
    assert ledger.duplicate_submissions() == []


def test_sampler_qnn_exact_probabilities_and_gradients(tmp_path):
    qc, x, w = hqml_circuit(3, 1)
    ex = Executor("aer", cache_dir=tmp_path)
    measured = qc.copy()
    measured.measure_all()
    qnn = FusedSamplerQNN(
        executor=ex, circuit=measured, input_params=x, weight_params=w, input_gradients=True
    )
    rng = np.random.default_rng(5)
    X = rng.uniform(0, np.pi, (3, 3))
    W = rng.uniform(0, 2 * np.pi, len(w))
    probs = qnn.forward(X, W)
    for b in range(3):
        ref = Statevector(qc.assign_parameters(_bind(qc, x, w, X[b], W)))
        np.testing.assert_allclose(probs[b], ref.probabilities(), atol=1e-12)
    gi, gw = qnn.backward(X, W)
    eps = 1e-6
    for j in range(len(W)):
        up, dn = W.copy(), W.copy()
        up[j] += eps
        dn[j] -= eps
        fd = (qnn.forward(X, up) - qnn.forward(X, dn)) / (2 * eps)
        assert np.abs(fd - gw[:, :, j]).max() < 1e-6
    assert gi.shape == (3, 8, 3)


def _bind(qc, x, w, xv, wv):
    return {**dict(zip(x, xv)), **dict(zip(w, wv))}


def test_executor_rejects_bad_settings(tmp_path):
    with pytest.raises(BadInputError, match="shots"):
        Executor("aer", shots=0, cache_dir=tmp_path)
    with pytest.raises(BadInputError, match="engine"):
        Executor("aer", engine="gpu", cache_dir=tmp_path)
    with pytest.raises(BackendError, match="unknown backend"):
        Executor("nonsense", cache_dir=tmp_path)
    from qmu_qiskit.backends.profiles import profile_for_fake
    from qmu_qiskit.execution.transpile import TranspileCache

    wide, _, _ = hqml_circuit(8, 1)
    with pytest.raises(BackendError, match="qubits"):
        TranspileCache(tmp_path).get_or_transpile(wide, profile_for_fake("fake_manila").target)


def test_sampled_shots_follow_aers_own_noisy_shot_distribution(tmp_path):
    """Shots drawn from Aer's exact noisy probabilities with the readout confusion applied have
    the distribution of Aer's own shot-by-shot sampling (readout error included)."""
    from qiskit_aer import AerSimulator

    from qmu_qiskit.execution.runners import _apply_confusion, _readout_confusions

    qc, _, _ = hqml_circuit(4, 2)
    ex = Executor("aer_noisy", shots=1000, cache_dir=tmp_path)
    prepared = ex.prepare(qc)
    measured = prepared.circuit.copy()
    measured.measure_all()
    vals = np.random.default_rng(0).uniform(0, 6, (5, qc.num_parameters))
    binds = [{p: vals[:, i] for i, p in enumerate(measured.parameters)}]
    shots = 200_000
    res = (
        AerSimulator(method="density_matrix", noise_model=prepared.noise_model)
        .run(measured, parameter_binds=binds, shots=shots, seed_simulator=3)
        .result()
    )
    aer = np.zeros((5, 16))
    for i in range(5):
        for key, c in res.data(i)["counts"].items():
            aer[i, int(key, 16)] = c / shots
    _, fn = ex.runner._counts_job(prepared, measured, vals, shots, seed=5)
    ours = fn()
    # the exact distribution both sample from
    bare = prepared.circuit.copy()
    bare.save_probabilities(label="p")
    exact = (
        AerSimulator(method="density_matrix", noise_model=prepared.noise_model)
        .run(bare, parameter_binds=binds, shots=1)
        .result()
    )
    p = np.array([exact.data(i)["p"] for i in range(5)])
    p = _apply_confusion(p, _readout_confusions(prepared.noise_model, list(range(4))))
    sigma = np.sqrt(p * (1 - p) / shots) + 1e-12
    assert np.abs(aer - p).max() / sigma.max() < 6
    assert (np.abs(ours - p) / np.maximum(sigma, 1e-4)).max() < 6
    assert np.abs(ours - p).max() > 0  # sampled, not exact
    assert not np.allclose(_readout_confusions(prepared.noise_model, [0])[0], np.eye(2))


def test_broadcast_pubs_are_chunked_to_the_job_size_limit(hqml, tmp_path):
    qc, x, w, obs, X, W = hqml
    vals = np.random.default_rng(4).uniform(0, 3, (25, qc.num_parameters))
    whole = Executor("aer_noisy", cache_dir=tmp_path)
    chunked = Executor("aer_noisy", cache_dir=tmp_path, max_parameter_sets=10)
    ev_whole, _ = whole.expectation_values(qc, obs, vals)
    ev_chunk, _ = chunked.expectation_values(qc, obs, vals)
    assert whole.cost.total.jobs == 1 and chunked.cost.total.jobs == 3
    np.testing.assert_allclose(ev_chunk, ev_whole, atol=1e-12)


class _FlakyRunnerError(ConnectionError):
    """What a dropped connection to a remote service raises."""


def test_transient_submission_failures_are_retried_and_permanent_ones_name_the_job(
    hqml, tmp_path, monkeypatch
):
    from qmu_qiskit.exceptions import JobError

    qc, x, w, obs, X, W = hqml
    vals = np.random.default_rng(4).uniform(0, 3, (3, qc.num_parameters))
    ex = Executor("aer_noisy", cache_dir=tmp_path)
    real_submit = ex.runner.submit_estimate
    calls = {"n": 0}

    def flaky(*a, **k):  # the network drops the first attempt
        calls["n"] += 1
        if calls["n"] == 1:
            raise _FlakyRunnerError("connection reset by peer")
        return real_submit(*a, **k)

    monkeypatch.setattr(ex.runner, "submit_estimate", flaky)
    monkeypatch.setattr("qmu_qiskit.execution.executor.time.sleep", lambda s: None)
    ev, _ = ex.expectation_values(qc, obs, vals)
    assert calls["n"] == 2 and ev.shape == (4, 3)

    def broken_result(*a, **k):  # the job itself fails on the backend
        handle = real_submit(*a, **k)
        handle._fn = lambda: (_ for _ in ()).throw(RuntimeError("backend rejected the circuit"))
        return handle

    monkeypatch.setattr(ex.runner, "submit_estimate", broken_result)
    with pytest.raises(JobError, match=r"job \S+ on aer_noisy:ibm_brisbane failed"):
        ex.expectation_values(qc, obs, vals + 1)


# ---------------------------------------------------------------------------------------------
# data-dependent (amplitude-encoded) circuits, layouts, bounded caches


def _qmu_values(n: int, layers: int, samples: int, seed: int = 0):
    from qmu_qiskit.circuits import qmu_circuit

    qc, x, w = qmu_circuit(layers, n)
    obs = [SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], n) for q in range(n)]
    rng = np.random.default_rng(seed)
    index = {p: i for i, p in enumerate(qc.parameters)}
    vals = np.zeros((samples, qc.num_parameters))
    for p in x:
        vals[:, index[p]] = rng.normal(size=samples)
    for p in w:
        vals[:, index[p]] = rng.normal()
    return qc, x, w, obs, vals, index


def _tail(qc):
    tail = qc.copy_empty_like()
    for inst in qc.data[1:]:
        tail.append(inst)
    return tail


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backend": "aer", "engine": "aer"},
        {"backend": "aer_noisy", "noise_scale": 0.0, "amplitude_loading": "ideal"},
        {"backend": "aer_noisy", "noise_scale": 0.0, "amplitude_loading": "device"},
    ],
)
def test_amplitude_encoded_circuits_match_the_exact_engine_without_noise(kwargs, tmp_path):
    """Both loading modes (ideal: the state written on the laid-out qubits; device: a transpiled
    StatePreparation per sample) give the exact engine's values when the noise is off."""
    qc, x, w, obs, vals, _ = _qmu_values(3, 2, 5)
    exact, _ = Executor("aer", cache_dir=tmp_path).expectation_values(qc, obs, vals)
    kwargs = dict(kwargs)
    ex = Executor(kwargs.pop("backend"), cache_dir=tmp_path, **kwargs)
    evs, _ = ex.expectation_values(qc, obs, vals)
    np.testing.assert_allclose(evs, exact, atol=1e-9)
    assert ex.cost.total.jobs == 1 and ex.cost.total.pubs == 5  # one job, one pub per sample
    assert ex.describe()["amplitude_loading"]["circuits"] == 5


def test_amplitude_circuits_with_noise_keep_the_signal_only_with_ideal_loading(tmp_path):
    qc, x, w, obs, vals, _ = _qmu_values(3, 1, 6)
    exact, _ = Executor("aer", cache_dir=tmp_path).expectation_values(qc, obs, vals)
    ideal, _ = Executor(
        "aer_noisy", amplitude_loading="ideal", cache_dir=tmp_path
    ).expectation_values(qc, obs, vals)
    device, _ = Executor("aer_noisy", cache_dir=tmp_path).expectation_values(qc, obs, vals)
    err_ideal, err_device = np.abs(ideal - exact).mean(), np.abs(device - exact).mean()
    assert 0 < err_ideal < err_device  # the state preparation's own gates are noisy on a device


def test_parameter_shift_through_an_amplitude_encoding(tmp_path):
    """Weight gradients on a noisy backend keep the encoding as data (one pub per sample, all
    shifted rows of a sample in it); input gradients through amplitudes are refused."""
    qc, x, w, obs, vals, index = _qmu_values(3, 2, 3)
    cols = [index[p] for p in w]
    v0, j0 = (
        Executor("aer", cache_dir=tmp_path)
        .estimator_gradient()
        .values_and_jacobian(qc, obs, vals, cols)
    )
    ex = Executor("aer_noisy", noise_scale=0.0, amplitude_loading="ideal", cache_dir=tmp_path)
    grad = ex.estimator_gradient()
    v, j = grad.values_and_jacobian(qc, obs, vals, cols)
    np.testing.assert_allclose(v, v0, atol=1e-9)
    np.testing.assert_allclose(j, j0, atol=1e-9)
    assert ex.cost.total.jobs == 1 and ex.cost.total.pubs == 3
    with pytest.raises(BackendError, match="amplitude-encoded inputs"):
        grad.values_and_jacobian(qc, obs, vals, [index[x[0]]])


def test_device_loading_is_transpiled_once_per_sample_content(tmp_path):
    qc, x, w, obs, vals, index = _qmu_values(3, 1, 4)
    ex = Executor("aer_noisy", cache_dir=tmp_path)
    ex.expectation_values(qc, obs, vals)
    misses = ex.cost.total.transpile_misses
    assert misses >= 4
    new_weights = vals.copy()
    new_weights[:, [index[p] for p in w]] += 0.5
    ex.expectation_values(qc, obs, new_weights)  # same samples, other weights (another model)
    assert ex.cost.total.transpile_misses == misses


def test_the_shot_sweep_reuses_one_simulation_per_sample(tmp_path):
    """At any shot count the counts are drawn from the same exact noisy distribution (readout
    error applied), simulated once: a sweep over shot counts costs one simulation."""
    from qmu_qiskit.execution import runners

    qc, x, w, obs, vals, _ = _qmu_values(3, 1, 5)
    exact = Executor("aer_noisy", amplitude_loading="ideal", cache_dir=tmp_path)
    ref, _ = exact.expectation_values(qc, obs, vals)
    cached = len(runners.distribution_cache)
    calls = []
    real = runners._AerBase._multi_simulator

    def counting(self, noise, method):
        calls.append(method)
        return real(self, noise, method)

    runners._AerBase._multi_simulator = counting
    try:
        for shots in (128, 8192):
            ev = Executor("aer_noisy", amplitude_loading="ideal", shots=shots, cache_dir=tmp_path)
            evs, stds = ev.expectation_values(qc, obs, vals)
            assert np.all(np.abs(evs - ref) < 6 * stds + 0.08)  # + the readout error's bias
    finally:
        runners._AerBase._multi_simulator = real
    assert calls == [] and len(runners.distribution_cache) == cached


def test_path_layout_keeps_the_qmu_ring_on_eight_qubits(tmp_path):
    """An 8-qubit CNOT ring does not embed in heavy-hex: the transpiler's own routing spreads it
    over 12 qubits; the path layout keeps it on 8 coupled ones (performance.md lesson 8)."""
    from qmu_qiskit.backends.noise import active_qubits
    from qmu_qiskit.circuits import qmu_circuit
    from qmu_qiskit.execution.layout import best_path, check_path

    tail = _tail(qmu_circuit(1, 8)[0])
    spread = Executor("aer_noisy", layout="device", cache_dir=tmp_path).prepare(
        tail, initially_zero=False
    )
    assert len(spread.physical_qubits) > 8
    ex = Executor(
        "aer_noisy", cache_dir=tmp_path
    )  # auto: the path, since the device layout spreads
    prepared = ex.prepare(tail, initially_zero=False)
    target = ex.runner.target
    path = best_path(target, 8)
    assert prepared.physical_qubits == tuple(sorted(path)) and prepared.circuit.num_qubits == 8
    assert check_path(target, path) == path
    assert ex.describe()["layout"]["used"] == {"path:" + ",".join(map(str, path)): 1}
    explicit = Executor("aer_noisy", layout=list(path), cache_dir=tmp_path).prepare(
        tail, initially_zero=False
    )
    assert explicit.physical_qubits == prepared.physical_qubits
    isa = ex.cache.get_or_transpile(tail, target)  # the unrestricted transpile, for comparison
    assert len(active_qubits(isa)) > 8
    with pytest.raises(BadInputError, match="not coupled"):
        Executor(
            "aer_noisy", layout=[path[0], path[2], *path[1:2], *path[3:]], cache_dir=tmp_path
        ).prepare(tail, initially_zero=False)


def test_deep_parameterised_rings_transpile_in_milliseconds(tmp_path):
    """Qiskit's target-aware BasisTranslator takes time exponential in the parameters carried by
    a global phase once SWAPs are routed in (Qiskit #16520: L = 10 never finished); the cache
    rewrites U gates as RZ·RY·RZ (same unitary up to global phase) first."""
    from qmu_qiskit.circuits import qmu_circuit

    tail = _tail(qmu_circuit(10, 8)[0])
    ex = Executor("aer_noisy", layout="path", cache_dir=tmp_path)
    t0 = time.perf_counter()
    prepared = ex.prepare(tail, initially_zero=False)
    assert time.perf_counter() - t0 < 20
    assert prepared.circuit.num_qubits == 8
    assert [p.name for p in prepared.circuit.parameters] == [p.name for p in tail.parameters]


def test_prepared_circuits_are_bounded_and_rebuilt_from_the_transpile_cache(hqml, tmp_path):
    ex = Executor("aer_noisy", cache_dir=tmp_path, max_prepared=2)
    circuits = [hqml_circuit(N, layers)[0] for layers in (1, 2, 3)]
    for c in circuits:
        ex.prepare(c)
    assert len(ex._prepared) == 2
    misses = ex.cost.total.transpile_misses
    hits = ex.cost.total.transpile_hits
    ex.prepare(circuits[0])  # evicted: prepared again, from the transpile cache
    assert ex.cost.total.transpile_misses == misses and ex.cost.total.transpile_hits > hits
    assert len(ex._prepared) == 2
    with pytest.raises(BadInputError):
        Executor("aer", cache_dir=tmp_path, max_prepared=0)


def test_bad_layout_and_loading_settings_are_refused(tmp_path):
    with pytest.raises(BadInputError, match="unknown layout"):
        Executor("aer_noisy", cache_dir=tmp_path, layout="ring")
    with pytest.raises(BadInputError, match="amplitude loading"):
        Executor("aer_noisy", cache_dir=tmp_path, amplitude_loading="perfect")
    # execution settings can come through a run's BackendConfig.runtime
    ex = Executor(
        "aer_noisy",
        cache_dir=tmp_path,
        runtime_options={"layout": "path", "amplitude_loading": "ideal"},
    )
    assert ex.layout == "path" and ex.amplitude_loading == "ideal" and ex.runtime_options == {}
