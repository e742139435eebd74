"""QMU and DG-QMU circuits and models (methods.md §1): structure, exactness against Qiskit's
``Statevector``, adjoint gradients against finite differences, and small training smokes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit.quantum_info import SparsePauliOp, Statevector

from qmu_qiskit.circuits import bind_amplitude_encoding, dgqmu_circuit, qmu_circuit
from qmu_qiskit.circuits.qmu import amplitude_encoding, amplitude_parameters, bit_reversal
from qmu_qiskit.exceptions import BadInputError
from qmu_qiskit.execution.statevector import CompiledCircuit


def _z_ops(n):
    return [SparsePauliOp.from_sparse_list([("Z", [w], 1.0)], num_qubits=n) for w in range(n)]


def _random_row(circuit, inputs, rng, *, amplitude: bool):
    """Random values in ``circuit.parameters`` order (inputs: unit vector or angles in [0, π])."""
    x = rng.normal(size=len(inputs)) if amplitude else rng.uniform(0, np.pi, size=len(inputs))
    if amplitude:
        x /= np.linalg.norm(x)
    values = dict(zip(inputs, x))
    for p in circuit.parameters:
        values.setdefault(p, rng.uniform(-np.pi, np.pi))
    return values, np.array([values[p] for p in circuit.parameters])


# ------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("layers", [1, 3])
def test_qmu_circuit_structure(layers):
    qc, x, w = qmu_circuit(layers)
    assert qc.num_qubits == 8 and len(x) == 256 and len(w) == 8 * 3 * layers
    ops = qc.count_ops()
    assert (
        ops["ParameterizedInitialize"] == 1
        and qc.data[0].operation.name == "ParameterizedInitialize"
    )
    assert ops["u"] == 8 * layers and ops["cx"] == 8 * layers
    ring = [
        tuple(qc.find_bit(q).index for q in inst.qubits)
        for inst in qc.data
        if inst.operation.name == "cx"
    ]
    assert ring[:8] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 0)]
    # weights layer-major, then qubit, then (θ, φ, λ)
    first_u = [inst for inst in qc.data if inst.operation.name == "u"][1]
    assert [str(p) for p in first_u.operation.params] == ["theta[3]", "theta[4]", "theta[5]"]
    assert qc.find_bit(first_u.qubits[0]).index == 1


def test_dgqmu_circuit_has_72_parameters():
    qc, x, w = dgqmu_circuit()
    assert qc.num_qubits == 6 and len(x) == 4 and len(w) == 72
    ops = qc.count_ops()
    # per upload: 6 RY + 5 (CX RZ CX) encoding, then 3 × (6 RY, 6 RZ, 6-CX ring)
    assert ops == {"ry": 2 * (6 + 18), "rz": 2 * (5 + 18), "cx": 2 * (10 + 18)}
    assert set(qc.parameters) == set(x) | set(w)


def test_feature_order_matches_pennylane_wires():
    """PennyLane's AmplitudeEmbedding puts feature i on wires whose bits read i MSB-first
    (wire 0 most significant); with the default order, Qiskit qubit j holds wire j."""
    n = 3
    enc, x = amplitude_encoding(n)
    for i in range(2**n):
        e = np.zeros(2**n)
        e[i] = 1.0
        probs = Statevector(enc.assign_parameters(dict(zip(x, e)))).probabilities()
        k = int(np.argmax(probs))
        wires = [(i >> (n - 1 - j)) & 1 for j in range(n)]  # PennyLane: wire j's bit
        assert [(k >> j) & 1 for j in range(n)] == wires
    assert list(bit_reversal(3)) == [0, 4, 2, 6, 1, 5, 3, 7]
    enc_q, xq = amplitude_encoding(n, feature_order="qiskit")
    e = np.zeros(2**n)
    e[1] = 1.0
    assert np.argmax(Statevector(enc_q.assign_parameters(dict(zip(xq, e)))).probabilities()) == 1


def test_bad_circuit_arguments():
    with pytest.raises(BadInputError):
        qmu_circuit(0)
    with pytest.raises(BadInputError):
        qmu_circuit(1, 8, feature_order="big-endian")
    with pytest.raises(BadInputError):
        dgqmu_circuit(1)


# ------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("which", ["qmu-8x2", "qmu-qiskit-order", "dgqmu"])
def test_exact_engine_matches_statevector(which):
    rng = np.random.default_rng(7)
    if which == "dgqmu":
        qc, x, _ = dgqmu_circuit()
    else:
        order = "qiskit" if which == "qmu-qiskit-order" else "pennylane"
        qc, x, _ = qmu_circuit(2, 8, feature_order=order)
    amplitude = which != "dgqmu"
    ops = _z_ops(qc.num_qubits)
    cc = CompiledCircuit(qc)
    rows, refs = [], []
    for _ in range(3):
        values, row = _random_row(qc, x, rng, amplitude=amplitude)
        sv = Statevector(qc.assign_parameters(values))
        refs.append([sv.expectation_value(op).real for op in ops])
        rows.append(row)
    got = cc.expectation(torch.as_tensor(np.array(rows)), ops).numpy()
    np.testing.assert_allclose(got, np.array(refs), atol=1e-10, rtol=0)


@pytest.mark.parametrize("which", ["qmu-hybrid", "dgqmu"])
def test_adjoint_jacobian_matches_finite_differences(which):
    """Every column, amplitude inputs included (qmu-hybrid needs them: input_gradients=True).
    The raw amplitudes are differentiated through the engine's normalisation."""
    rng = np.random.default_rng(3)
    if which == "dgqmu":
        qc, x, _ = dgqmu_circuit()
    else:
        qc, x, _ = qmu_circuit(1, 8)
    ops = _z_ops(qc.num_qubits)
    cc = CompiledCircuit(qc)
    _, row = _random_row(qc, x, rng, amplitude=which != "dgqmu")
    row = row * (1.7 if which != "dgqmu" else 1.0)  # an unnormalised amplitude vector
    _, jac = cc.value_and_jacobian(row[None], ops)
    h = 1e-6
    p = len(row)
    shifted = np.repeat(row[None], 2 * p, 0)
    shifted[np.arange(p), np.arange(p)] += h
    shifted[p + np.arange(p), np.arange(p)] -= h
    evs = cc.expectation(torch.as_tensor(shifted), ops).numpy()
    fd = ((evs[:p] - evs[p:]) / (2 * h)).T  # (O, P)
    np.testing.assert_allclose(jac[0], fd, atol=1e-6, rtol=0)
    input_cols = [list(qc.parameters).index(q) for q in x]
    assert np.abs(jac[0][:, input_cols]).max() > 1e-3  # the inputs really are differentiated


def test_bind_amplitude_encoding_gives_a_transpilable_circuit():
    """Noisy and hardware backends must bind the data before transpiling (the instruction has no
    definition while its parameters are free); the bound circuit keeps the weights symbolic."""
    from qiskit.providers.fake_provider import GenericBackendV2
    from qiskit.transpiler import generate_preset_pass_manager

    rng = np.random.default_rng(0)
    qc, x, w = qmu_circuit(1, 3)
    values, _ = _random_row(qc, x, rng, amplitude=True)
    assert amplitude_parameters(qc) is not None and amplitude_parameters(dgqmu_circuit()[0]) is None
    pm = generate_preset_pass_manager(
        optimization_level=1, backend=GenericBackendV2(num_qubits=5, seed=1), seed_transpiler=0
    )
    with pytest.raises(Exception, match="ParameterizedInitialize"):
        pm.run(qc)
    bound = bind_amplitude_encoding(qc, x, [values[p] for p in x])
    assert set(bound.parameters) == set(w) and "reset" not in bound.decompose(reps=4).count_ops()
    weights = {p: values[p] for p in w}
    ref = Statevector(qc.assign_parameters(values))
    got = Statevector(bound.assign_parameters(weights))
    assert abs(abs(np.vdot(ref.data, got.data)) - 1) < 1e-10
    isa = pm.run(bound)
    assert {p.name for p in isa.parameters} == {p.name for p in w}
    with pytest.raises(BadInputError):
        bind_amplitude_encoding(qc, x, np.zeros(len(x)))


# ------------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def executor(tmp_path_factory):
    from qmu_qiskit.execution.executor import Executor

    ex = Executor("aer", cache_dir=tmp_path_factory.mktemp("cache"))
    yield ex
    ex.close()


def test_registry_and_run_config():
    from qmu_qiskit.config import resolve_run_config

    basic = resolve_run_config(dataset="mnist", model="qmu-basic")
    assert (basic.model.qubits, basic.model.layers) == (8, 10)
    assert (basic.data.input_kind, basic.data.n_features) == ("amplitude", 256)
    hybrid = resolve_run_config(dataset="mnist", model="qmu-hybrid")
    assert (hybrid.model.qubits, hybrid.model.layers, hybrid.data.input_kind) == (8, 1, "image")
    assert hybrid.data.n_features is None
    for dataset in ("iris", "covertype"):
        dg = resolve_run_config(dataset=dataset, model="dgqmu")
        assert (dg.model.qubits, dg.model.layers) == (6, 3)
        assert (dg.data.input_kind, dg.data.n_features) == ("angles", 4)
        assert tuple(dg.data.angle_range) == (0.0, pytest.approx(np.pi))


def test_model_shapes_and_parameter_counts(executor):
    from qmu_qiskit.models.hybrid import ModelSpec, build_model, count_parameters
    from qmu_qiskit.models.presets import SelectZ

    basic = build_model(
        ModelSpec("qmu-basic", qubits=8, layers=2), num_classes=10, executor=executor, seed=0
    )
    assert count_parameters(basic) == {"quantum": 48, "classical": 90, "total": 138}
    w = basic.quantum.weight.detach().numpy()
    assert abs(w.mean()) < 0.5 and 0.5 < w.std() < 1.5  # N(0, 1)

    hybrid = build_model(
        ModelSpec("qmu-hybrid", qubits=8, layers=1), num_classes=10, executor=executor, seed=0
    )
    assert isinstance(hybrid.encoder[4], torch.nn.Linear) and hybrid.encoder[4].in_features == 980
    assert hybrid.encoder[4].out_features == 256
    qw = hybrid.quantum.weight.detach().numpy()
    assert len(qw) == 24 and np.all(np.abs(qw) <= np.pi)
    assert [name for name, _ in hybrid.layer_groups()] == [
        "encoder.0",
        "encoder.4",
        "quantum",
        "head.0",
    ]

    dg = build_model(
        ModelSpec("dgqmu", qubits=6, layers=3), num_classes=3, executor=executor, seed=0
    )
    assert count_parameters(dg) == {"quantum": 72, "classical": 0, "total": 72}
    assert isinstance(dg.head[0], SelectZ)
    x = torch.rand(5, 4) * np.pi
    with torch.no_grad():
        z = dg.quantum(x)
        assert torch.allclose(dg(x), z[:, :3])
    dg7 = build_model(
        ModelSpec("dgqmu", qubits=6, layers=3), num_classes=7, executor=executor, seed=0
    )
    assert isinstance(dg7.head[0], torch.nn.Linear) and dg7.head[0].out_features == 7
    with pytest.raises(BadInputError):
        build_model(
            ModelSpec("dgqmu", qubits=6, layers=3, readout="sampler"),
            num_classes=3,
            executor=executor,
            seed=0,
        )


def test_qmu_hybrid_backpropagates_into_the_encoder(executor):
    from qmu_qiskit.models.hybrid import ModelSpec, build_model

    model = build_model(
        ModelSpec("qmu-hybrid", qubits=4, layers=1, image_side=8),
        num_classes=3,
        executor=executor,
        seed=1,
    )
    x = torch.rand(6, 1, 8, 8)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert model.quantum.weight.grad.abs().sum() > 0


def _adam_steps(model, X, y, steps, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_qmu_basic_trains_on_synthetic_amplitudes(executor):
    from qmu_qiskit.models.hybrid import ModelSpec, build_model

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 16, generator=gen)
    y = torch.arange(40) % 2
    X = centres[y] + 0.3 * torch.randn(40, 16, generator=gen)
    X = X / X.norm(dim=1, keepdim=True)
    model = build_model(
        ModelSpec("qmu-basic", qubits=4, layers=2), num_classes=2, executor=executor, seed=0
    )
    losses = _adam_steps(model, X, y, steps=15, lr=0.05)
    assert losses[-1] < losses[0] - 0.05


def test_dgqmu_trains_on_iris(tmp_path):
    from qmu_qiskit import pipeline
    from qmu_qiskit.config import resolve_run_config

    cfg = resolve_run_config(
        dataset="iris",
        model="dgqmu",
        seed=0,
        training={"epochs": 3, "batch_size": 108, "select": "last", "lr": 0.05},
    )
    summary = pipeline.train(cfg, tmp_path / "dg", progress=False)
    history = summary.metrics["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert summary.metrics["parameters"]["quantum"] == 72
