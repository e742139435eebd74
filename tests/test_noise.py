"""Restricted noise models: compacting circuit and noise onto the active qubits is exact."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from qmu_qiskit.backends.noise import (
    active_qubits,
    compact_circuit,
    compact_observable,
    noise_model_cache,
    restricted_noise_model,
)
from qmu_qiskit.backends.profiles import profile_for_fake
from qmu_qiskit.exceptions import BadInputError

N_QUBITS = 4
LAYERS = 2


def hqml_circuit(*, measure: bool = False):
    """The HQML circuit shape: RY data encoding, then per layer RX/RY/RZ on each qubit + CZ ring."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    x = ParameterVector("x", N_QUBITS)
    theta = ParameterVector("theta", 3 * N_QUBITS * LAYERS)
    circuit = QuantumCircuit(N_QUBITS)
    for q in range(N_QUBITS):
        circuit.ry(x[q], q)
    k = 0
    for _ in range(LAYERS):
        for q in range(N_QUBITS):
            circuit.rx(theta[k], q)
            circuit.ry(theta[k + 1], q)
            circuit.rz(theta[k + 2], q)
            k += 3
        for q in range(N_QUBITS):
            circuit.cz(q, (q + 1) % N_QUBITS)
    if measure:
        circuit.measure_all()
    return circuit


def bind(circuit):
    values = np.random.default_rng(7).uniform(-np.pi, np.pi, circuit.num_parameters)
    return circuit.assign_parameters(values)


@pytest.fixture(scope="module")
def fake():
    return profile_for_fake("fake_brisbane")


_FULL_BUILD_SECONDS: list[float] = []


@pytest.fixture(scope="module")
def full_noise(fake):
    from qiskit_aer.noise import NoiseModel

    start = time.perf_counter()
    model = NoiseModel.from_backend(fake)
    _FULL_BUILD_SECONDS.append(time.perf_counter() - start)
    return model


@pytest.fixture(scope="module")
def isa(fake):
    from qiskit import transpile

    return transpile(hqml_circuit(), fake, optimization_level=1, seed_transpiler=11)


def z_observables(isa_circuit, physical_qubits):
    """<Z_i> on each logical qubit, mapped through the layout and compacted."""
    from qiskit.quantum_info import SparsePauliOp

    layout = isa_circuit.layout
    return [
        compact_observable(
            SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], N_QUBITS).apply_layout(layout),
            physical_qubits,
        )
        for i in range(N_QUBITS)
    ]


def density_matrix_z(circuit, observables, qubits, noise_model):
    """Exact <Z_i> (density matrix) and the simulation time in seconds."""
    from qiskit_aer import AerSimulator

    circuit = circuit.copy()
    for i, op in enumerate(observables):
        # One save per observable over the same qubit list: qiskit-aer 0.18.2 returns the last
        # value for every save of an *identical* operator on different qubits.
        circuit.save_expectation_value(op, qubits, label=f"z{i}")
    simulator = AerSimulator(method="density_matrix", noise_model=noise_model)
    start = time.perf_counter()
    data = simulator.run(circuit).result().data()
    elapsed = time.perf_counter() - start
    return np.array([data[f"z{i}"] for i in range(len(observables))]), elapsed


# ------------------------------------------------------------------------------------------
# Active qubits and compaction
# ------------------------------------------------------------------------------------------


def test_active_qubits_ignore_delays_and_barriers():
    from qiskit import QuantumCircuit

    circuit = QuantumCircuit(7, 2)
    circuit.x(4)
    circuit.cz(3, 1)
    circuit.barrier()
    circuit.delay(160, 5)
    circuit.measure(6, 0)
    assert active_qubits(circuit) == [1, 3, 4, 6]


def test_active_qubits_of_transpiled_hqml(isa):
    active = active_qubits(isa)
    assert len(active) >= N_QUBITS and active == sorted(active)
    assert set(isa.layout.final_index_layout()) <= set(active)
    assert len(active) < isa.num_qubits == 127


def test_compact_circuit_keeps_parameters_phase_and_clbits(isa):
    from qiskit import QuantumCircuit
    from qiskit.circuit import ClassicalRegister

    active = active_qubits(isa)
    compact = compact_circuit(isa, active)
    assert compact.num_qubits == len(active)
    assert compact.parameters == isa.parameters
    assert compact.global_phase == isa.global_phase
    assert compact.count_ops() == isa.count_ops()

    circuit = QuantumCircuit(6)
    circuit.add_register(ClassicalRegister(2, "meas"))
    circuit.global_phase = 0.25
    circuit.rz(0.5, 5)
    circuit.ecr(5, 2)
    circuit.barrier([0, 2, 5])
    circuit.delay(80, 1)
    circuit.measure([2, 5], [1, 0])
    small = compact_circuit(circuit, [5, 2])  # physical 5 -> 0, 2 -> 1
    assert small.num_qubits == 2 and small.clbits == circuit.clbits and small.cregs == circuit.cregs
    assert small.global_phase == 0.25
    got = [
        (
            inst.operation.name,
            [small.find_bit(q).index for q in inst.qubits],
            [small.find_bit(c).index for c in inst.clbits],
        )
        for inst in small.data
    ]
    assert got == [
        ("rz", [0], []),
        ("ecr", [0, 1], []),
        ("barrier", [1, 0], []),
        ("measure", [1], [1]),
        ("measure", [0], [0]),
    ]


def test_compact_circuit_rejects_missing_active_qubit(isa):
    active = active_qubits(isa)
    with pytest.raises(BadInputError, match="missing from physical_qubits"):
        compact_circuit(isa, active[:-1])
    with pytest.raises(BadInputError, match="repeat"):
        compact_circuit(isa, active + active[:1])
    with pytest.raises(BadInputError, match="not qubits"):
        compact_circuit(isa, active + [127])


def test_compact_observable_maps_terms_and_rejects_inactive_qubits():
    from qiskit.quantum_info import SparsePauliOp

    terms = [("ZX", [40, 7], 0.5), ("Y", [12], -2j), ("", [], 3.0)]
    op = SparsePauliOp.from_sparse_list(terms, 127)
    small = compact_observable(op, [12, 40, 7])
    assert small == SparsePauliOp.from_sparse_list(
        [("ZX", [1, 2], 0.5), ("Y", [0], -2j), ("", [], 3.0)], 3
    )
    with pytest.raises(BadInputError, match="Z on physical qubit 40"):
        compact_observable(op, [12, 7])
    with pytest.raises(BadInputError, match="SparsePauliOp"):
        compact_observable("ZZ", [0, 1])


# ------------------------------------------------------------------------------------------
# Restricted noise model
# ------------------------------------------------------------------------------------------


def test_restricted_model_holds_exactly_the_full_models_errors(fake, full_noise, isa):
    active = active_qubits(isa)
    small = restricted_noise_model(fake, active)
    old = dict(enumerate(active))

    expected = {
        (name, qubits)
        for name, by_qubits in full_noise._local_quantum_errors.items()
        for qubits in by_qubits
        if set(qubits) <= set(active)
    }
    got = {
        (name, tuple(old[q] for q in qubits))
        for name, by_qubits in small._local_quantum_errors.items()
        for qubits in by_qubits
    }
    assert got == expected
    assert any(len(qubits) == 2 for _, qubits in got)  # the couplers between active qubits
    for name, by_qubits in small._local_quantum_errors.items():
        for qubits, error in by_qubits.items():
            assert error == full_noise._local_quantum_errors[name][tuple(old[q] for q in qubits)]
    assert set(small._local_readout_errors) == {(i,) for i in range(len(active))}
    for (i,), error in small._local_readout_errors.items():
        assert error == full_noise._local_readout_errors[(old[i],)]
    assert sorted(small.basis_gates) == sorted(full_noise.basis_gates)


def test_restriction_is_exact_and_faster(fake, full_noise, isa, capsys):
    circuit = bind(isa)
    active = active_qubits(circuit)
    observables = z_observables(isa, active)

    full_z, full_s = density_matrix_z(circuit, observables, active, full_noise)
    noise_model_cache.clear()  # time a real build, not a cache hit
    start = time.perf_counter()
    small_noise = restricted_noise_model(fake, active)
    build_s = time.perf_counter() - start
    compact = compact_circuit(circuit, active)
    small_z, small_s = density_matrix_z(compact, observables, range(len(active)), small_noise)

    np.testing.assert_allclose(small_z, full_z, rtol=0, atol=1e-10)
    assert np.all(np.abs(full_z) < 1)  # noisy and non-trivial
    # The order of physical_qubits is free: reversed, the same numbers come out.
    order = active[::-1]
    reversed_z, _ = density_matrix_z(
        compact_circuit(circuit, order),
        z_observables(isa, order),
        range(len(order)),
        restricted_noise_model(fake, order),
    )
    np.testing.assert_allclose(reversed_z, full_z, rtol=0, atol=1e-10)
    with capsys.disabled():
        print(
            f"\n[restricted noise] {len(active)} of 127 qubits; density matrix: full model "
            f"{full_s * 1e3:.0f} ms, restricted {small_s * 1e3:.1f} ms, speed-up "
            f"{full_s / small_s:.0f}x; model build: full {_FULL_BUILD_SECONDS[0]:.2f} s, "
            f"restricted {build_s * 1e3:.0f} ms"
        )


def test_restriction_gives_identical_seeded_counts(fake, full_noise):
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    circuit = bind(
        transpile(hqml_circuit(measure=True), fake, optimization_level=1, seed_transpiler=3)
    )
    active = active_qubits(circuit)
    assert len(active) < 127  # measurements only on the used qubits
    counts = [
        AerSimulator(method="density_matrix", noise_model=model, seed_simulator=1234)
        .run(run, shots=3000)
        .result()
        .get_counts()
        for model, run in (
            (full_noise, circuit),
            (restricted_noise_model(fake, active), compact_circuit(circuit, active)),
        )
    ]
    assert counts[0] == counts[1]


def test_scale_zero_is_ideal_and_scale_two_is_noisier(fake, isa):
    """scale=0 is the ideal result; scale=2 moves every <Z_i> further from it, lowers the total
    |<Z>| and the purity. (|<Z_i>| itself may grow for a qubit near <Z>=0: T1 decay pulls
    towards |0>, so it is not a per-qubit criterion.)"""
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel

    circuit = bind(isa)
    active = active_qubits(circuit)
    compact = compact_circuit(circuit, active)
    observables = z_observables(isa, active)
    qubits = range(len(active))

    ideal, _ = density_matrix_z(compact, observables, qubits, NoiseModel())
    zero = restricted_noise_model(fake, active, scale=0)
    assert zero.is_ideal()
    at_zero, _ = density_matrix_z(compact, observables, qubits, zero)
    np.testing.assert_allclose(at_zero, ideal, rtol=0, atol=1e-12)

    models = {s: restricted_noise_model(fake, active, scale=s) for s in (1, 2)}
    z = {s: density_matrix_z(compact, observables, qubits, m)[0] for s, m in models.items()}
    assert np.all(np.abs(z[2] - ideal) > np.abs(z[1] - ideal))
    assert np.all(np.abs(z[1] - ideal) > 0)
    assert np.abs(z[2]).sum() < np.abs(z[1]).sum() < np.abs(ideal).sum()

    def purity(model):
        run = compact.copy()
        run.save_density_matrix()
        rho = AerSimulator(method="density_matrix", noise_model=model).run(run).result().data()
        rho = np.asarray(rho["density_matrix"])
        return float(np.real(np.trace(rho @ rho)))

    assert purity(zero) == pytest.approx(1.0)
    assert purity(models[2]) < purity(models[1]) < 1 - 1e-3


def test_scale_definition_on_readout_errors(fake):
    qubit = 10  # readout error 0.02 in the FakeBrisbane snapshot

    def readout(scale):
        model = restricted_noise_model(fake, [qubit], scale=scale)
        return model._local_readout_errors[(0,)].probabilities

    base, doubled, saturated = readout(1), readout(2), readout(100)
    assert doubled[0, 1] == pytest.approx(2 * base[0, 1])
    assert doubled[1, 0] == pytest.approx(2 * base[1, 0])
    assert saturated[0, 1] == 1.0 and saturated[1, 0] == 1.0  # capped at probability 1
    with pytest.raises(BadInputError, match="too large"):
        restricted_noise_model(fake, [qubit], scale=1e6)


@pytest.mark.parametrize("scale", [-0.5, math.nan, math.inf, "1", True, None])
def test_scale_must_be_finite_and_non_negative(fake, scale):
    with pytest.raises(BadInputError, match="noise scale"):
        restricted_noise_model(fake, [0, 1], scale=scale)


def test_noise_model_cache(fake):
    noise_model_cache.clear()
    first = restricted_noise_model(fake, [3, 4])
    assert restricted_noise_model(fake, (3, 4), scale=1) is first
    assert noise_model_cache.hits == 1 and noise_model_cache.misses == 1
    assert restricted_noise_model(fake, [4, 3]) is not first
    assert restricted_noise_model(fake, [3, 4], scale=0.5) is not first
    keys = noise_model_cache.keys()
    assert [key[:3] for key in keys] == [
        ("fake_brisbane", (3, 4), 1.0),
        ("fake_brisbane", (4, 3), 1.0),
        ("fake_brisbane", (3, 4), 0.5),
    ]


def test_profile_name_gives_the_same_model_as_the_fake(fake):
    by_name = restricted_noise_model("brisbane", [37, 38])
    by_fake = restricted_noise_model(fake, [37, 38])
    assert by_name is not by_fake  # different backend names: separate cache entries
    assert by_name._local_quantum_errors == by_fake._local_quantum_errors
    assert by_name._local_readout_errors == by_fake._local_readout_errors
    with pytest.raises(BadInputError, match="unknown hardware profile"):
        restricted_noise_model("nowhere", [0])
    with pytest.raises(BadInputError, match="not qubits"):
        restricted_noise_model(fake, [200])
