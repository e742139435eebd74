"""The noisy exact engine (qmu_qiskit/execution/density.py) against qiskit-aer's density-matrix
estimator on the same compact ISA circuits and device noise, and its gradients against finite
differences and parameter shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.circuit.library import real_amplitudes, zz_feature_map
from qiskit.quantum_info import PTM, SparsePauliOp, SuperOp, random_unitary

from qmu_qiskit.circuits.hqml import hqml_circuit
from qmu_qiskit.execution.density import pauli_basis, ptm_from_superop, ptm_from_unitary
from qmu_qiskit.execution.density_runner import NoisyExactRunner
from qmu_qiskit.execution.executor import Executor
from qmu_qiskit.execution.gradients import BatchedParamShiftEstimatorGradient


def _z(n):
    return [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], n) for i in range(n)]


def _values(qc, rows, seed):
    """Rows that vary in the inputs (x…) and share the weights, as a QNN batch."""
    rng = np.random.default_rng(seed)
    shared = rng.uniform(-np.pi, np.pi, qc.num_parameters)
    vals = np.tile(shared, (rows, 1))
    for j, p in enumerate(qc.parameters):
        if p.name.startswith("x"):
            vals[:, j] = rng.uniform(-np.pi, np.pi, rows)
    return vals


def _pair(backend, tmp_path, **kw):
    ours = Executor(backend, cache_dir=tmp_path, **kw)
    ref = Executor(backend, cache_dir=tmp_path, engine="aer", **kw)
    assert isinstance(ours.runner, NoisyExactRunner)
    assert not isinstance(ref.runner, NoisyExactRunner)
    return ours, ref


def test_pauli_transfer_matrices_match_qiskit():
    """Our PTMs (Pauli index Σ p_j 4**j, I X Y Z per qubit) equal qiskit.quantum_info.PTM."""
    for m in (1, 2):
        u = random_unitary(2**m, seed=3 + m)
        ours = ptm_from_unitary(torch.as_tensor(u.data)[None])[0].numpy()
        assert np.allclose(ours, PTM(u).data, atol=1e-12)
        chan = SuperOp(u).compose(SuperOp(random_unitary(2**m, seed=9)))
        assert np.allclose(ptm_from_superop(chan.data, m), PTM(chan).data, atol=1e-12)
    basis = pauli_basis(2)
    assert np.allclose(basis[1 + 4 * 3], np.kron([[1, 0], [0, -1]], [[0, 1], [1, 0]]))


@pytest.mark.parametrize("backend", ["aer_noisy:ibm_torino", "aer_noisy"])
def test_hqml_batch_equals_aer_density_matrix(backend, tmp_path):
    """A batch of the 4-qubit HQML circuit (product encoding, shared weights) on Torino (cz) and
    Brisbane (ecr) noise: the same values as Aer's density-matrix estimator."""
    qc, _, _ = hqml_circuit(4, 2)
    ours, ref = _pair(backend, tmp_path)
    obs = _z(4) + [SparsePauliOp.from_list([("XXII", 0.5), ("IYZI", -0.25)])]
    vals = _values(qc, 24, seed=1)
    a, _ = ours.expectation_values(qc, obs, vals)
    b, _ = ref.expectation_values(qc, obs, vals)
    assert np.abs(a - b).max() < 1e-11
    ideal, _ = Executor("aer", cache_dir=tmp_path).expectation_values(qc, obs, vals)
    assert np.abs(a - ideal).max() > 1e-3  # the device noise is there


def test_entangling_encoding_and_single_rows(tmp_path):
    """zz_feature_map ∘ real_amplitudes: the encoding entangles (no product prefix); every row
    its own weights too, and a single row (the whole circuit in the Heisenberg picture)."""
    fm = zz_feature_map(3, reps=1)
    ansatz = real_amplitudes(3, reps=1)
    qc = fm.compose(ansatz)
    ours, ref = _pair("aer_noisy:ibm_torino", tmp_path)
    rng = np.random.default_rng(2)
    obs = _z(3)
    for vals in (
        rng.uniform(-2, 2, (6, qc.num_parameters)),
        rng.uniform(-2, 2, (1, qc.num_parameters)),
    ):
        a, _ = ours.expectation_values(qc, obs, vals)
        b, _ = ref.expectation_values(qc, obs, vals)
        assert np.abs(a - b).max() < 1e-11


def test_noise_scale_zero_is_the_ideal_state(tmp_path):
    qc, _, _ = hqml_circuit(3, 1)
    ex = Executor("aer_noisy:ibm_torino", noise_scale=0.0, cache_dir=tmp_path)
    vals = _values(qc, 5, seed=4)
    a, _ = ex.expectation_values(qc, _z(3), vals)
    ideal, _ = Executor("aer", cache_dir=tmp_path).expectation_values(qc, _z(3), vals)
    assert np.abs(a - ideal).max() < 1e-12


def test_gradients_equal_parameter_shift_and_finite_differences(tmp_path):
    """Per-row Jacobian and the summed vector–Jacobian product against Aer + parameter shift;
    the summed weight columns hold the row sum."""
    qc, _, _ = hqml_circuit(4, 1)
    ours, ref = _pair("aer_noisy:ibm_torino", tmp_path)
    obs = _z(4)
    vals = _values(qc, 5, seed=5)
    cols = list(range(qc.num_parameters))
    _, jac_ref = BatchedParamShiftEstimatorGradient(ref).values_and_jacobian(qc, obs, vals, cols)
    _, jac = ours.value_and_jacobian(qc, obs, vals, cols)
    assert np.abs(jac - jac_ref).max() < 1e-9
    cot = np.random.default_rng(6).normal(size=(5, 4))
    expected = np.einsum("no,noc->nc", cot, jac_ref)
    values, pullback = ours.values_and_pullback(qc, obs, vals)
    assert np.abs(pullback(cot, cols) - expected).max() < 1e-9  # exact per row
    shared = [j for j, p in enumerate(qc.parameters) if not p.name.startswith("x")]
    summed = pullback(cot, cols, sum_rows=shared)
    varying = [j for j in cols if j not in shared]
    assert np.abs(summed[:, varying] - expected[:, varying]).max() < 1e-9
    assert np.abs(summed[0, shared] - expected[:, shared].sum(0)).max() < 1e-9
    assert not summed[1:, shared].any()
    eps = 1e-6
    j = shared[2]
    up, dn = vals.copy(), vals.copy()
    up[:, j] += eps
    dn[:, j] -= eps
    fd = (ours.expectation_values(qc, obs, up)[0] - ours.expectation_values(qc, obs, dn)[0]) / (
        2 * eps
    )
    assert np.abs(fd - jac[:, :, j].T).max() < 1e-6


def test_unsupported_circuits_fall_back_to_aer(tmp_path):
    """A mid-circuit reset is not a gate: Aer's density matrix gives the values and parameter
    shift the gradient (both exact), through the same executor calls."""
    from qmu_qiskit.execution.gradients import ExactEstimatorGradient

    w = ParameterVector("w", 2)
    qc = QuantumCircuit(2)
    qc.ry(w[0], 0)
    qc.cx(0, 1)
    qc.reset(1)
    qc.rx(w[1], 1)
    qc.cx(0, 1)
    ours, ref = _pair("aer_noisy:ibm_torino", tmp_path)
    vals = np.array([[0.3, 0.1], [0.9, -0.7]])
    a, _ = ours.expectation_values(qc, _z(2), vals)
    b, _ = ref.expectation_values(qc, _z(2), vals)
    assert np.abs(a - b).max() < 1e-11
    values, pullback = ExactEstimatorGradient(ours).values_and_pullback(qc, _z(2), vals)
    _, jac = BatchedParamShiftEstimatorGradient(ref).values_and_jacobian(qc, _z(2), vals, [0, 1])
    cot = np.array([[1.0, -2.0], [0.5, 0.25]])
    assert np.abs(values - b.T).max() < 1e-11
    assert np.abs(pullback(cot, [0, 1]) - np.einsum("no,noc->nc", cot, jac)).max() < 1e-12


def test_runner_refuses_noisy_parameterised_gates(tmp_path):
    from qmu_qiskit.exceptions import BadInputError
    from qmu_qiskit.execution.density import NoisyCircuit

    qc = QuantumCircuit(1)
    qc.rz(Parameter("a"), 0)
    with pytest.raises(BadInputError, match="use --engine aer"):
        NoisyCircuit(qc, lambda op, q: None, frozenset({"rz"}))


def test_rows_are_contracted_in_passes_with_the_same_values(tmp_path):
    """Large evaluations go through the contraction ``ROWS_PER_PASS`` rows at a time."""
    qc, _, _ = hqml_circuit(3, 1)
    whole = Executor("aer_noisy:ibm_torino", cache_dir=tmp_path)
    passes = Executor("aer_noisy:ibm_torino", cache_dir=tmp_path)
    passes.runner.ROWS_PER_PASS = 4
    vals = _values(qc, 11, seed=8)
    a, _ = whole.expectation_values(qc, _z(3), vals)
    b, _ = passes.expectation_values(qc, _z(3), vals)
    assert a.shape == (3, 11) and np.abs(a - b).max() < 1e-13
