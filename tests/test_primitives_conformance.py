"""Our V2 primitives against the reference semantics of Qiskit's ``StatevectorEstimator`` and
``StatevectorSampler``, on every engine.

The cases are ported from Qiskit's ``test/python/primitives/test_statevector_estimator.py`` and
``test_statevector_sampler.py`` (the ones that apply: no ``seed`` option, see docs/execution.md)
and run against ``BatchingEstimator`` / ``BatchingSampler`` on the exact engine, the Aer engine,
``aer_noisy`` with ``noise_scale=0`` (density matrix, device basis, no noise: values comparable)
and a few on qiskit-ibm-runtime's local testing mode (``fake_manila``).
"""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter
from qiskit.circuit.library import get_standard_gate_name_mapping, real_amplitudes
from qiskit.primitives import StatevectorEstimator, StatevectorSampler
from qiskit.primitives.containers import BitArray
from qiskit.quantum_info import SparsePauliOp, Statevector

from qmu_qiskit.execution.executor import Executor
from qmu_qiskit.execution.structure import AER_BINDABLE

ENGINES = {
    "exact": lambda d: Executor("aer", engine="exact", cache_dir=d),
    "aer": lambda d: Executor("aer", engine="aer", cache_dir=d),
    "aer_noisy0": lambda d: Executor("aer_noisy", noise_scale=0.0, cache_dir=d),
}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def ex(request, tmp_path_factory):
    executor = ENGINES[request.param](tmp_path_factory.mktemp("cache"))
    yield executor
    executor.close()


@pytest.fixture(scope="module")
def runtime_ex(tmp_path_factory):
    executor = Executor("fake_manila", shots=4000, cache_dir=tmp_path_factory.mktemp("cache"))
    yield executor
    executor.close()


# ----------------------------------------------------------------------------- estimator cases
def _ham():
    h1 = SparsePauliOp.from_list(
        [
            ("II", -1.052373245772859),
            ("IZ", 0.39793742484318045),
            ("ZI", -0.39793742484318045),
            ("ZZ", -0.01128010425623538),
            ("XX", 0.18093119978423156),
        ]
    )
    return h1


def _psi():
    psi1 = real_amplitudes(2, reps=2)
    psi2 = real_amplitudes(2, reps=3)
    theta1 = [0, 1, 1, 2, 3, 5]
    theta2 = [0, 1, 1, 2, 3, 5, 8, 13]
    return psi1, psi2, theta1, theta2


def _close(got, want, atol=1e-8):
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, atol=atol)


def test_estimator_run_matches_the_reference(ex):
    """test_estimator_run: several PUBs, repeated circuits and observables in one call."""
    h1 = _ham()
    h2 = SparsePauliOp.from_list([("IZ", 1)])
    h3 = SparsePauliOp.from_list([("II", 1), ("IZ", 1), ("XY", 1)]) + SparsePauliOp("ZZ", 0.5)
    psi1, psi2, theta1, theta2 = _psi()
    pubs = [
        (psi1, h1, [theta1]),
        (psi2, h2, [theta2]),
        (psi1, h3, [theta1]),
        (psi1, [h1, h3], [theta1, theta1]),
    ]
    got = ex.estimator().run(pubs).result()
    want = StatevectorEstimator().run(pubs).result()
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        _close(g.data.evs, w.data.evs)
        assert g.metadata["target_precision"] == 0.0
    _close(got[0].data.evs, [-1.284366511861733])


@pytest.mark.parametrize(
    "obs_shape, val_shape, want",
    [
        ((), (), ()),
        ((2,), (), (2,)),
        ((), (3,), (3,)),
        ((4, 1), (3,), (4, 3)),
        ((2, 1), (2, 3), (2, 3)),
        ((1, 2), (3, 1), (3, 2)),
    ],
)
def test_result_shapes_under_broadcasting(ex, obs_shape, val_shape, want):
    psi1, _, theta1, _ = _psi()
    rng = np.random.default_rng(5)
    labels = ["ZZ", "XI", "IY", "XX"]
    obs = np.empty(obs_shape, dtype=object)
    for i, idx in enumerate(np.ndindex(obs_shape)):
        obs[idx] = SparsePauliOp(labels[i % 4])
    vals = rng.uniform(0, 3, val_shape + (psi1.num_parameters,))
    pub = (psi1, obs if obs_shape else SparsePauliOp("ZZ"), vals)
    got = ex.estimator().run([pub]).result()[0]
    ref = StatevectorEstimator().run([pub]).result()[0]
    assert got.data.evs.shape == got.data.stds.shape == got.data.shape == want
    _close(got.data.evs, ref.data.evs)


def test_numpy_params_and_the_iter_pub(ex):
    """test_run_numpy_params: 2-D value arrays as a list of rows or one array."""
    qc = real_amplitudes(num_qubits=2, reps=2)
    op = SparsePauliOp.from_list([("IZ", 1), ("XI", 2), ("ZY", -1)])
    params_array = np.random.default_rng(3).random((5, qc.num_parameters))
    est = ex.estimator()
    r1 = est.run([(qc, op, params_array)]).result()[0]
    r2 = est.run([(qc, op, list(params_array))]).result()[0]
    ref = StatevectorEstimator().run([(qc, op, params_array)]).result()[0]
    _close(r1.data.evs, ref.data.evs)
    _close(r2.data.evs, ref.data.evs)


def test_circuits_without_parameters(ex):
    """A circuit with no parameters, with and without an (empty) value array."""
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    pubs = [(bell, "ZZ"), (bell, ["XX", "YY", "ZI"]), (bell, "XX", np.zeros((3, 0)))]
    got = ex.estimator().run(pubs).result()
    want = StatevectorEstimator().run(pubs).result()
    for g, w in zip(got, want):
        _close(g.data.evs, w.data.evs)
    _close(got[1].data.evs, [1.0, -1.0, 0.0])


def test_each_pub_keeps_its_own_precision(ex):
    """Two PUBs on one circuit with different precisions: each result reports its own."""
    psi1, _, theta1, _ = _psi()
    h1 = _ham()
    res = ex.estimator().run([(psi1, h1, [theta1], 0.0), (psi1, h1, [theta1], 0.2)]).result()
    assert res[0].metadata["target_precision"] == 0.0
    assert res[1].metadata["target_precision"] == 0.2
    _close(res[0].data.evs, [-1.284366511861733])
    res = ex.estimator().run([(psi1, h1, [theta1])], precision=0.3).result()
    assert res[0].metadata["target_precision"] == 0.3


def test_precision_adds_seeded_noise_of_that_size(tmp_path):
    """test_precision: precision > 0 on an exact estimator adds Gaussian noise of that size,
    seeded from the executor's seed (the same call gives the same numbers)."""
    psi1, _, theta1, _ = _psi()
    vals = np.tile(theta1, (400, 1))
    a = Executor("aer", cache_dir=tmp_path, seed=3).estimator()
    b = Executor("aer", cache_dir=tmp_path, seed=3).estimator()
    r = a.run([(psi1, _ham(), vals)], precision=0.1).result()[0]
    evs = r.data.evs
    assert abs(evs.std() - 0.1) < 0.015 and abs(evs.mean() + 1.284366511861733) < 0.02
    again = b.run([(psi1, _ham(), vals)], precision=0.1).result()[0].data.evs
    np.testing.assert_array_equal(evs, again)


def test_metadata_carries_the_circuit_metadata(ex):
    qc = QuantumCircuit(2, metadata={"experiment": "bell"})
    qc.h(0)
    res = ex.estimator().run([(qc, "ZZ")]).result()
    assert res[0].metadata["circuit_metadata"] == {"experiment": "bell"}
    assert res.metadata["version"] == 2


def _invalid_estimator_pubs():
    psi1, _, theta1, _ = _psi()
    h1 = _ham()
    return {
        "negative precision": ([(psi1, h1, [theta1], -1)], {}),
        "negative run precision": ([(psi1, h1, [theta1])], {"precision": -1}),
        "complex coefficients": ([(psi1, SparsePauliOp("ZZ", 1j), [theta1])], {}),
        "qubit-count mismatch": ([(psi1, SparsePauliOp("ZZZ"), [theta1])], {}),
        "parameter-count mismatch": ([(psi1, h1, [[0.0, 1.0]])], {}),
        "missing values": ([(psi1, h1)], {}),
        "not broadcastable": ([(psi1, ["ZZ", "XX"], np.zeros((3, 6)))], {}),
    }


@pytest.mark.parametrize("case", sorted(_invalid_estimator_pubs()))
def test_invalid_estimator_pubs_raise_the_references_value_error(ex, case):
    pubs, kwargs = _invalid_estimator_pubs()[case]
    with pytest.raises(ValueError):
        StatevectorEstimator().run(pubs, **kwargs).result()
    before = ex.cost.total.jobs
    with pytest.raises(ValueError):
        ex.estimator().run(pubs, **kwargs).result()
    assert ex.cost.total.jobs == before  # refused before anything ran


def test_fast_path_inputs_are_validated_too(ex):
    """What EstimatorQNN sends (circuit, SparsePauliOp, (N, P) array) takes a fast path: it must
    refuse what the reference refuses."""
    psi1, _, theta1, _ = _psi()
    with pytest.raises(ValueError):
        ex.estimator().run([(psi1, SparsePauliOp("ZZZ"), np.array([theta1]))])
    with pytest.raises(ValueError):
        ex.estimator().run([(psi1, SparsePauliOp("ZZ", 1j), np.array([theta1]))])
    with pytest.raises(ValueError):
        ex.estimator().run([(psi1, SparsePauliOp("ZZ"), np.zeros((2, 3)))])


# ----------------------------------------------------------------------------- every gate
def _param_gates():
    out = []
    for name, gate in sorted(get_standard_gate_name_mapping().items()):
        if gate.params and name not in ("delay", "global_phase"):
            out.append(name)
    return out


@pytest.mark.parametrize("engine", ["aer", "aer_noisy0"])
def test_every_parameterised_standard_gate_matches_statevector(engine, tmp_path):
    """crx/cry/crz/cp/cu1/cu3 were bound wrongly by qiskit-aer 0.18 (issue 10: crz with a = 0.3
    under XX gave 1.0 instead of 0.9888); every parameterised standard gate now matches
    ``Statevector`` with one and with several parameter sets, non-affine angles included."""
    ex = ENGINES[engine](tmp_path)
    rng = np.random.default_rng(0)
    qc = QuantumCircuit(3)
    qc.h(range(3))
    qc.ry(0.4, 0)
    qc.rx(0.3, 2)
    params = []
    for k, name in enumerate(_param_gates()):
        gate = get_standard_gate_name_mapping()[name]
        ps = [Parameter(f"{name}_{i}") for i in range(len(gate.params))]
        params += ps
        angles = list(ps)
        if len(ps) > 1:
            angles[0] = ps[0] * ps[1]  # a non-affine angle
        qubits = [(k + j) % 3 for j in range(gate.num_qubits)]
        qc.append(type(gate)(*angles), qubits)
        qc.cx(qubits[0], (qubits[0] + 1) % 3)
    obs = [SparsePauliOp("XXI"), SparsePauliOp.from_list([("ZYX", 0.7), ("IIZ", 0.2)])]
    vals = rng.uniform(-2, 2, (3, qc.num_parameters))
    got = ex.estimator().run([(qc, [[o] for o in obs], vals)]).result()[0].data.evs
    ref = np.array(
        [
            [Statevector(qc.assign_parameters(v)).expectation_value(o).real for v in vals]
            for o in obs
        ]
    )
    _close(got, ref, atol=1e-8)
    one = ex.estimator().run([(qc, obs[0], vals[0])]).result()[0].data.evs
    _close(one, ref[0, 0], atol=1e-8)


def test_the_crz_case_of_issue_10(ex):
    a = Parameter("a")
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.h(1)
    qc.crz(a, 0, 1)
    got = ex.estimator().run([(qc, "XX", [0.3])]).result()[0].data.evs
    _close(got, 0.988771077936042, atol=1e-8)


def test_aer_bindable_gates_are_bound_correctly():
    """The allow-list of gates handed to Aer with runtime parameter binding, checked on Aer
    itself: a new qiskit-aer that breaks one of them fails here."""
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import EstimatorV2

    est = EstimatorV2()
    est._backend = AerSimulator(method="statevector", runtime_parameter_bind_enable=True)
    rng = np.random.default_rng(1)
    for name in sorted(AER_BINDABLE):
        gate = get_standard_gate_name_mapping()[name]
        ps = [Parameter(f"p{i}") for i in range(len(gate.params))]
        qc = QuantumCircuit(2)
        qc.h([0, 1])
        qc.ry(0.3, 1)
        qc.append(type(gate)(*ps), range(gate.num_qubits))
        obs = SparsePauliOp.from_list([("XX", 1.0), ("YZ", 0.5), ("ZY", 0.3)])
        vals = rng.uniform(-2, 2, (3, len(ps)))
        ref = [Statevector(qc.assign_parameters(v)).expectation_value(obs).real for v in vals]
        got = est.run([(qc, obs, vals)]).result()[0].data.evs
        _close(got, ref, atol=1e-8)


def test_composite_instructions_and_initialize(ex):
    """A library circuit appended as one gate (twice, with different definitions under the same
    name) and ``initialize``: decomposed before execution, never confused with each other."""
    from qiskit.circuit.library import zz_feature_map

    one = zz_feature_map(2, reps=1).to_gate()
    two = zz_feature_map(2, reps=2).to_gate()
    assert one.name == two.name
    results = []
    for block in (one, two):
        qc = QuantumCircuit(2)
        qc.initialize([0.6, 0.8], [1])
        qc.append(block, [0, 1])
        vals = np.array([[0.3, 1.1], [0.9, -0.4]])
        got = ex.estimator().run([(qc, ["XZ", "YY"], vals[:, None, :])]).result()[0].data.evs
        ref = StatevectorEstimator().run([(qc, ["XZ", "YY"], vals[:, None, :])]).result()[0]
        _close(got, ref.data.evs)
        results.append(got)
    assert np.abs(results[0] - results[1]).max() > 1e-3


# ----------------------------------------------------------------------------- sampler cases
def _deterministic_circuits():
    """Circuits whose every shot is known: X gates, measurements in scrambled order, several
    registers (test_run_reverse_meas_order, test_circuit_with_multiple_cregs)."""
    q = QuantumRegister(3, "q")
    c1, c2 = ClassicalRegister(1, "c1"), ClassicalRegister(3, "c2")
    qc = QuantumCircuit(q, c1, c2)
    qc.x(0)
    qc.x(2)
    qc.measure(0, c1[0])  # 1
    qc.measure(2, c2[0])  # 1
    qc.measure(1, c2[2])  # 0; c2[1] never measured: 0
    reverse = QuantumCircuit(3, 3)
    reverse.x(0)
    reverse.measure([0, 1, 2], [2, 1, 0])
    return {
        "multiple_cregs": (qc, {"c1": "1", "c2": "001"}),
        "reverse_meas_order": (reverse, {"c": "100"}),
    }


@pytest.mark.parametrize("case", sorted(_deterministic_circuits()))
def test_sampler_registers_hold_the_measured_bits(ex, case):
    qc, want = _deterministic_circuits()[case]
    res = ex.sampler().run([qc], shots=50).result()[0]
    ref = StatevectorSampler(seed=1).run([qc], shots=50).result()[0]
    assert list(res.data) == list(ref.data) == list(want)
    for name, bits in want.items():
        arr = getattr(res.data, name)
        assert isinstance(arr, BitArray)
        assert arr.num_bits == getattr(ref.data, name).num_bits and arr.num_shots == 50
        assert arr.get_counts() == {bits: 50} == getattr(ref.data, name).get_counts()
    assert res.metadata["shots"] == 50


def test_sampler_shapes_shots_and_bell_statistics(ex):
    """test_sampler_run / test_run_numpy_params / test_run_with_shots_option: results shaped like
    the parameter values, per-PUB shots, Bell-state counts only 00 and 11 in equal parts."""
    a = Parameter("a")
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.rz(a, 0)  # no effect on Z-basis counts
    qc.measure_all()
    vals = np.linspace(0, 1, 6).reshape(2, 3, 1)
    res = ex.sampler().run([(qc, vals), (qc, vals[0, 0], 200)], shots=400).result()
    assert res[0].data.meas.shape == (2, 3) and res[0].data.meas.num_shots == 400
    assert res[1].data.meas.shape == () and res[1].data.meas.num_shots == 200
    assert res[0].metadata["shots"] == 400 and res[1].metadata["shots"] == 200
    counts = res[0].data.meas.get_counts()
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 2400
    assert abs(counts.get("00", 0) / 2400 - 0.5) < 0.05  # 5 sigma of a fair coin over 2400


def test_sampler_shots_are_seeded(tmp_path):
    qc = QuantumCircuit(1)
    qc.h(0)
    qc.measure_all()
    one = Executor("aer", cache_dir=tmp_path, seed=4).sampler().run([qc], shots=64).result()
    two = Executor("aer", cache_dir=tmp_path, seed=4).sampler().run([qc], shots=64).result()
    assert one[0].data.meas.get_bitstrings() == two[0].data.meas.get_bitstrings()
    assert one[0].metadata["seed"] == two[0].metadata["seed"]


@pytest.mark.parametrize("shots", [0, -1])
def test_sampler_refuses_non_positive_shots(ex, shots):
    qc = QuantumCircuit(1)
    qc.measure_all()
    with pytest.raises(ValueError, match="shots must be positive"):
        StatevectorSampler().run([qc], shots=shots)
    with pytest.raises(ValueError, match="shots must be positive"):
        ex.sampler().run([qc], shots=shots)
    with pytest.raises(ValueError, match="shots must be positive"):
        ex.sampler().run([(qc, None, shots)])


def test_sampler_errors_and_empty_registers(ex):
    """test_run_errors / test_no_cregs / test_empty_creg."""
    a = Parameter("a")
    qc = QuantumCircuit(1)
    qc.rx(a, 0)
    qc.measure_all()
    b = Parameter("b")
    two = QuantumCircuit(1)
    two.rx(a, 0)
    two.ry(b, 0)
    two.measure_all()
    for bad in ([(two, [0.1, 0.2, 0.3])], [(two,)], [(qc, [[0.1], [0.2]], 1.5)]):
        with pytest.raises((ValueError, TypeError)):
            StatevectorSampler().run(bad)
        with pytest.raises((ValueError, TypeError)):
            ex.sampler().run(bad)
    # an empty parameter array is valid: an empty result of shape (0,)
    got = ex.sampler().run([(qc, [])]).result()[0]
    assert got.data.meas.shape == (0,) and got.data.shape == (0,)
    got = ex.estimator().run([(qc.remove_final_measurements(inplace=False), "Z", [])]).result()[0]
    assert got.data.evs.shape == (0,)
    bare = QuantumCircuit(1)
    bare.h(0)
    with pytest.warns(UserWarning, match="no output classical registers"):
        res = ex.sampler().run([bare]).result()
    assert list(res[0].data) == []
    empty = QuantumCircuit(QuantumRegister(1), ClassicalRegister(0, "e"), ClassicalRegister(2, "c"))
    empty.x(0)
    empty.measure(0, 2 - 1)
    got = ex.sampler().run([empty], shots=10).result()[0]
    ref = StatevectorSampler().run([empty], shots=10).result()[0]
    assert got.data.e.num_bits == 0 and got.data.c.get_counts() == ref.data.c.get_counts()


def test_sampler_feeds_plain_sampler_qnn_counts(ex):
    """SamplerQNN reads ``pub.data.meas.get_counts(i)`` per row: the rows must be separate."""
    a = Parameter("a")
    qc = QuantumCircuit(1)
    qc.ry(a, 0)
    qc.measure_all()
    res = ex.sampler().run([(qc, [[0.0], [np.pi]])], shots=100).result()[0]
    assert res.data.meas.get_counts(0) == {"0": 100}
    assert res.data.meas.get_counts(1) == {"1": 100}


# ----------------------------------------------------------------------------- runtime path
def test_runtime_local_mode_estimator_contract(runtime_ex):
    psi1, _, theta1, _ = _psi()
    obs = [[SparsePauliOp("ZZ")], [SparsePauliOp("IZ")]]
    vals = np.array([theta1, theta1, theta1])
    est = runtime_ex.estimator()
    res = est.run([(psi1, obs, vals), (psi1, "ZZ", theta1, 0.05)]).result()
    ref = StatevectorEstimator().run([(psi1, obs, vals)]).result()[0]
    assert res[0].data.evs.shape == (2, 3)
    assert res[0].metadata["shots"] == 4000 and res[1].metadata["shots"] == 400
    assert res[1].metadata["target_precision"] == 0.05
    # device noise and 4000 shots: within 0.25 of the ideal value
    assert np.abs(res[0].data.evs - ref.data.evs).max() < 0.25
    with pytest.raises(ValueError):
        est.run([(psi1, SparsePauliOp("ZZZ"), theta1)])


def test_runtime_local_mode_sampler_registers(runtime_ex):
    qc, want = _deterministic_circuits()["multiple_cregs"]
    res = runtime_ex.sampler().run([qc], shots=300).result()[0]
    assert list(res.data) == ["c1", "c2"]
    for name, bits in want.items():
        counts = getattr(res.data, name).get_counts()
        assert sum(counts.values()) == 300 and counts.get(bits, 0) > 240  # readout error only


# Statevector evaluates the reference evolution with scipy's sparse expm, which warns about it
@pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")
def test_pauli_evolutions_are_exact_or_refused(ex):
    """A PauliEvolutionGate's definition is a Trotter product: with a numeric time it runs as its
    exact unitary (as Statevector does), with a parameterised time only if its terms commute
    (then the product is exact); otherwise Aer refuses in one line, never a wrong value."""
    from qiskit.circuit.library import PauliEvolutionGate

    from qmu_qiskit.exceptions import BackendError

    t = Parameter("t")
    noncommuting = SparsePauliOp(["XX", "ZI", "YZ"], [0.7, 0.4, -0.3])
    commuting = SparsePauliOp(["ZZ", "ZI", "IZ"], [0.7, 0.4, -0.3])
    obs = SparsePauliOp(["XY", "ZZ", "YI"], [1.0, 0.5, 0.2])
    cases = [(noncommuting, 0.9), (commuting, t), (noncommuting, t)]
    for op, time in cases:
        qc = QuantumCircuit(2)
        qc.h(0)
        qc.rx(0.3, 1)
        qc.append(PauliEvolutionGate(op, time=time), [0, 1])
        vals = [[0.8]] if qc.num_parameters else None
        pub = (qc, obs, vals) if vals else (qc, obs)
        if op is noncommuting and qc.num_parameters and ex.engine != "exact":
            if ex.spec.kind == "aer":
                with pytest.raises(BackendError, match="non-commuting"):
                    ex.estimator().run([pub])
            continue
        if op is noncommuting and qc.num_parameters:
            continue  # the exact engine's own cross-check covers it
        ref = StatevectorEstimator().run([pub]).result()[0].data.evs
        _close(ex.estimator().run([pub]).result()[0].data.evs, ref)


@pytest.mark.parametrize("backend, kwargs", [("aer", {}), ("aer_noisy", {"noise_scale": 0.0})])
def test_shot_based_aer_estimates_any_pauli(backend, kwargs, tmp_path):
    """With --shots, X and Y terms are measured in their own bases (device-basis rotations):
    estimates within 5 standard errors of the reference, and the errors they report are right."""
    psi1, _, theta1, _ = _psi()
    ex = Executor(backend, shots=20000, cache_dir=tmp_path, seed=2, **kwargs)
    obs = [
        [SparsePauliOp.from_list([("XX", 0.18), ("IZ", 0.4), ("YI", -0.3), ("ZY", 0.7)])],
        [SparsePauliOp("XY")],
        [SparsePauliOp("ZZ")],
    ]
    vals = [theta1, [0.3, -1, 0.2, 2, 1, 0.5]]
    got = ex.estimator().run([(psi1, obs, vals)]).result()[0]
    ref = StatevectorEstimator().run([(psi1, obs, vals)]).result()[0].data.evs
    assert got.data.evs.shape == ref.shape == (3, 2)
    assert np.all(got.data.stds > 0) and np.all(got.data.stds < 0.015)
    assert np.all(np.abs(got.data.evs - ref) < 5 * got.data.stds + 1e-3)
