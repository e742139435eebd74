"""Our gradients and QNNs against qiskit-machine-learning's own contracts, on every engine.

Cases ported from qiskit-machine-learning's ``test/gradients/test_estimator_gradient.py``,
``test_sampler_gradient.py``, ``test/neural_networks/test_estimator_qnn.py``,
``test_sampler_qnn.py`` and ``test/connectors/test_torch_connector.py``: stock ``EstimatorQNN``,
``SamplerQNN`` and ``TorchConnector`` run unmodified on our primitives and gradients; values are
compared with qiskit-machine-learning's reference path on ``StatevectorEstimator`` and with
``Statevector`` itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.circuit.library import efficient_su2, real_amplitudes, zz_feature_map
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.gradients import (
    EstimatorGradientResult,
    ParamShiftEstimatorGradient,
    SamplerGradientResult,
)
from qiskit_machine_learning.neural_networks import EstimatorQNN, SamplerQNN

from qmu_qiskit.execution.executor import Executor
from qmu_qiskit.models.qnn import FusedEstimatorQNN, FusedSamplerQNN, QuantumLayer

ENGINES = ("exact", "aer")


@pytest.fixture(scope="module", params=ENGINES)
def ex(request, tmp_path_factory):
    executor = Executor("aer", engine=request.param, cache_dir=tmp_path_factory.mktemp("c"))
    yield executor
    executor.close()


def _ref_grad(circuits, observables, values, parameters=None):
    grad = ParamShiftEstimatorGradient(StatevectorEstimator())
    return grad.run(circuits, observables, values, parameters, precision=0.0).result().gradients


def _probs(qc, values):
    return Statevector(
        qc.remove_final_measurements(inplace=False).assign_parameters(values)
    ).probabilities()


def _fd_probs(qc, values, eps=1e-6):
    values = np.asarray(values, dtype=float)
    out = []
    for j in range(len(values)):
        up, dn = values.copy(), values.copy()
        up[j] += eps
        dn[j] -= eps
        out.append((_probs(qc, up) - _probs(qc, dn)) / (2 * eps))
    return np.array(out)  # (P, K)


# ----------------------------------------------------------------------------- estimator gradient
def _operator_circuit():
    a = Parameter("a")
    qc = QuantumCircuit(1)
    qc.h(0)
    qc.p(a, 0)
    qc.h(0)
    return qc


@pytest.mark.parametrize(
    "value, want", [(np.pi / 4, -1 / np.sqrt(2)), (0.0, 0.0), (np.pi / 2, -1.0)]
)
def test_gradient_p(ex, value, want):
    """test_gradient_p: d<Z>/da of H P(a) H is -sin(a)."""
    qc = _operator_circuit()
    res = ex.estimator_gradient().run([qc], [SparsePauliOp("Z")], [[value]]).result()
    assert isinstance(res, EstimatorGradientResult)
    np.testing.assert_allclose(res.gradients[0], [want], atol=1e-10)
    assert res.metadata[0]["parameters"] == list(qc.parameters)


def _gate_circuits():
    a, b, c = Parameter("a"), Parameter("b"), Parameter("c")
    u = QuantumCircuit(1)
    u.h(0)
    u.u(a, b, c, 0)
    u.h(0)
    coeff = QuantumCircuit(2)  # test_gradient_parameter_coefficient: expressions of parameters
    coeff.rx(2 * a + 0.1, 0)
    coeff.ry(b * c, 1)  # non-affine
    coeff.cx(0, 1)
    coeff.rz(a.sin() + c, 1)  # non-affine
    coeff.crx(a - b, 1, 0)  # controlled: not 2-term shiftable itself
    su2 = efficient_su2(2, reps=1)
    gates = QuantumCircuit(2)
    gates.h([0, 1])
    gates.rxx(a, 0, 1)
    gates.ryy(b, 0, 1)
    gates.rzz(c, 0, 1)
    gates.rzx(a + b, 0, 1)
    gates.cry(c, 0, 1)
    gates.cp(a, 1, 0)
    return {"u": u, "coefficients": coeff, "efficient_su2": su2, "two_qubit_gates": gates}


@pytest.mark.parametrize("name", sorted(_gate_circuits()))
def test_gradients_match_the_reference(ex, name):
    """test_gradient_u / test_gradient_efficient_su2 / test_gradient_2qubit_gate /
    test_gradient_parameter_coefficient: every value of qiskit-machine-learning's reference."""
    qc = _gate_circuits()[name]
    rng = np.random.default_rng(7)
    n = qc.num_qubits
    obs = SparsePauliOp.from_list([("Z" * n, 1.0), ("X" + "Y" * (n - 1), 0.5)])
    values = [rng.uniform(-2, 2, qc.num_parameters) for _ in range(3)]
    got = ex.estimator_gradient().run([qc] * 3, [obs] * 3, values).result().gradients
    want = _ref_grad([qc] * 3, [obs] * 3, values)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-9)


def test_gradient_parameters_subset(ex):
    """test_gradient_parameters: only the requested parameters, in the requested order."""
    qc = _gate_circuits()["coefficients"]
    a, b, c = qc.parameters
    obs = SparsePauliOp("ZX")
    vals = [[0.3, -0.7, 1.1]]
    got = ex.estimator_gradient().run([qc], [obs], vals, [[c, a]]).result()
    want = _ref_grad([qc], [obs], vals, [[c, a]])
    np.testing.assert_allclose(got.gradients[0], want[0], atol=1e-9)
    assert got.metadata[0]["parameters"] == [c, a]


def test_gradient_multi_arguments(ex):
    """test_gradient_multi_arguments: circuits with different parameter counts in one call."""
    qc1 = _operator_circuit()
    qc2 = _gate_circuits()["u"]
    obs = SparsePauliOp("Z")
    vals = [[np.pi / 4], [0.1, 0.2, 0.3], [np.pi / 2]]
    got = ex.estimator_gradient().run([qc1, qc2, qc1], [obs] * 3, vals).result().gradients
    want = _ref_grad([qc1, qc2, qc1], [obs] * 3, vals)
    assert [len(g) for g in got] == [1, 3, 1]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-9)


def test_gradient_validation(ex):
    """test_gradient_validation: the base class's ValueErrors."""
    qc = _operator_circuit()
    grad = ex.estimator_gradient()
    obs = SparsePauliOp("Z")
    with pytest.raises(ValueError):
        grad.run([qc], [obs], [[0.1], [0.2]])
    with pytest.raises(ValueError):
        grad.run([qc], [obs, obs], [[0.1]])
    with pytest.raises(ValueError):
        grad.run([qc], [SparsePauliOp("ZZ")], [[0.1]])
    with pytest.raises(ValueError):
        grad.run([qc], [obs], [[0.1, 0.2]])


def test_gradient_options(ex):
    """test_options: run options override the gradient's defaults in the result's options."""
    grad = ex.estimator_gradient()
    grad.update_default_options(shots=100)
    res = grad.run([_operator_circuit()], [SparsePauliOp("Z")], [[0.2]], shots=200).result()
    assert res.options.shots == 200


# ----------------------------------------------------------------------------- sampler gradient
def _sampler_circuits():
    a, b = Parameter("a"), Parameter("b")
    full = _operator_circuit()
    full.measure_all()
    partial = QuantumCircuit(3, 2)  # a subset of qubits, in scrambled clbit order
    partial.h(range(3))
    partial.ry(a, 0)
    partial.crz(b, 0, 2)
    partial.rx(a * b, 2)
    partial.h(2)
    partial.measure(2, 0)
    partial.measure(0, 1)
    bare = QuantumCircuit(2)  # no measurements at all: every qubit is read
    bare.ry(a, 0)
    bare.cx(0, 1)
    bare.rx(b, 1)
    return {"measure_all": full, "partial": partial, "unmeasured": bare}


@pytest.mark.parametrize("name", sorted(_sampler_circuits()))
def test_sampler_gradient_matches_finite_differences(ex, name):
    """test_gradient_p / test_gradient_random_parameters of test_sampler_gradient.py, plus the
    readouts a user may bring: partial and scrambled measurements, or none."""
    qc = _sampler_circuits()[name]
    rng = np.random.default_rng(3)
    values = [rng.uniform(-2, 2, qc.num_parameters) for _ in range(2)]
    res = ex.sampler_gradient().run([qc] * 2, values).result()
    assert isinstance(res, SamplerGradientResult)
    # exact engine: exact; Aer: outcome frequencies of 1024 shots per shifted set
    tol = 1e-8 if ex.exact_probabilities else 0.12
    if qc.num_clbits == 0:
        measured = list(range(qc.num_qubits))
        clbit_of = {q: q for q in measured}
    else:
        clbit_of = {}
        for inst in qc.data:
            if inst.operation.name == "measure":
                clbit_of[qc.find_bit(inst.qubits[0]).index] = qc.find_bit(inst.clbits[0]).index
    nbits = qc.num_clbits or qc.num_qubits
    for grads, v in zip(res.gradients, values):
        fd = _fd_probs(qc, v)  # (P, 2**n) over qubits
        for p, dist in enumerate(grads):
            want = np.zeros(2**nbits)
            for k in range(2**qc.num_qubits):
                key = sum(((k >> q) & 1) << c for q, c in clbit_of.items())
                want[key] += fd[p, k]
            got = np.zeros(2**nbits)
            for k, val in dist.items():
                got[k] = val
            np.testing.assert_allclose(got, want, atol=tol)


# ----------------------------------------------------------------------------- EstimatorQNN
def _qnn_circuit(num_inputs, num_weights):
    x = ParameterVector("x", num_inputs)
    w = ParameterVector("w", num_weights)
    qc = QuantumCircuit(2)
    qc.h([0, 1])
    for i, p in enumerate(x):
        qc.ry(p, i % 2)
    qc.cx(0, 1)
    for i, p in enumerate(w):
        qc.rx(p, i % 2)
    return qc, list(x), list(w)


@pytest.mark.parametrize("num_inputs, num_weights", [(0, 2), (2, 0), (2, 2), (1, 1)])
@pytest.mark.parametrize("num_obs", [1, 2])
def test_estimator_qnn_forward_backward(ex, num_inputs, num_weights, num_obs):
    """test_estimator_qnn_1_1 … 2_2: shapes and values for every mix of inputs, weights and
    observables, batched and single, against the reference QNN."""
    qc, x, w = _qnn_circuit(num_inputs, num_weights)
    obs = [SparsePauliOp("ZZ"), SparsePauliOp.from_list([("XI", 1.0), ("IY", -0.5)])][:num_obs]
    kwargs = {
        "circuit": qc,
        "observables": obs,
        "input_params": x,
        "weight_params": w,
        "input_gradients": True,
        "default_precision": 0.0,
    }
    ours = EstimatorQNN(estimator=ex.estimator(), gradient=ex.estimator_gradient(), **kwargs)
    ref = EstimatorQNN(estimator=StatevectorEstimator(), **kwargs)
    rng = np.random.default_rng(1)
    weights = rng.uniform(0, 3, num_weights)
    for inputs in (rng.uniform(0, 3, num_inputs), rng.uniform(0, 3, (4, num_inputs))):
        f = ours.forward(inputs, weights)
        assert f.shape == ref.forward(inputs, weights).shape
        np.testing.assert_allclose(f, ref.forward(inputs, weights), atol=1e-10)
        gi, gw = ours.backward(inputs, weights)
        ri, rw = ref.backward(inputs, weights)
        for g, r in ((gi, ri), (gw, rw)):
            assert (g is None) == (r is None)
            if g is not None:
                assert g.shape == r.shape
                np.testing.assert_allclose(g, r, atol=1e-9)


def test_estimator_qnn_on_zz_feature_map(ex):
    """qiskit-machine-learning's standard model: zz_feature_map ∘ real_amplitudes, non-affine
    input angles; values and input/weight gradients equal the reference."""
    fm = zz_feature_map(2)
    ansatz = real_amplitudes(2, reps=1)
    qc = fm.compose(ansatz)
    kwargs = {
        "circuit": qc,
        "observables": SparsePauliOp("ZZ"),
        "input_params": fm.parameters,
        "weight_params": ansatz.parameters,
        "input_gradients": True,
        "default_precision": 0.0,
    }
    ours = EstimatorQNN(estimator=ex.estimator(), gradient=ex.estimator_gradient(), **kwargs)
    ref = EstimatorQNN(estimator=StatevectorEstimator(), **kwargs)
    rng = np.random.default_rng(2)
    X, W = rng.uniform(0, 2, (5, 2)), rng.uniform(0, 3, ansatz.num_parameters)
    np.testing.assert_allclose(ours.forward(X, W), ref.forward(X, W), atol=1e-10)
    for g, r in zip(ours.backward(X, W), ref.backward(X, W)):
        np.testing.assert_allclose(g, r, atol=1e-9)


# ----------------------------------------------------------------------------- SamplerQNN
def _parity(x: int) -> int:
    return bin(x).count("1") % 2


@pytest.mark.parametrize("interpret, output_shape", [(None, None), (_parity, 2)])
def test_sampler_qnn_stock_and_fused(ex, interpret, output_shape):
    """test_sampler_qnn: a stock SamplerQNN on our sampler and gradient, and our fused one, give
    the exact probabilities (stock: counts of 1024 shots) and their gradients."""
    qc, x, w = _qnn_circuit(1, 2)
    kwargs = {"circuit": qc, "input_params": x, "weight_params": w, "input_gradients": True}
    if interpret is not None:
        kwargs.update(interpret=interpret, output_shape=output_shape)
    stock = SamplerQNN(sampler=ex.sampler(), gradient=ex.sampler_gradient(), **kwargs)
    fused = FusedSamplerQNN(executor=ex, **kwargs)
    X, W = np.array([[0.3], [1.2]]), np.array([0.4, -0.8])
    exact = np.array([_probs(qc, dict(zip(x + w, np.concatenate([xx, W])))) for xx in X])
    if interpret is not None:
        exact = np.stack(
            [exact[:, [k for k in range(4) if _parity(k) == v]].sum(1) for v in (0, 1)], 1
        )
    tol = 1e-10 if ex.exact_probabilities else 0.1
    np.testing.assert_allclose(fused.forward(X, W), exact, atol=tol)
    np.testing.assert_allclose(stock.forward(X, W), exact, atol=0.1)  # 1024 shots
    fi, fw = fused.backward(X, W)
    si, sw = stock.backward(X, W)
    assert fi.shape == si.shape == (2, exact.shape[1], 1)
    assert fw.shape == sw.shape == (2, exact.shape[1], 2)
    np.testing.assert_allclose(fw, sw, atol=1e-12 if ex.exact_probabilities else 0.2)


def test_fused_sampler_qnn_with_a_multi_dimensional_interpret(ex):
    """``interpret`` returning a tuple for a (2, 2) output shape."""
    qc, x, w = _qnn_circuit(1, 2)
    qnn = FusedSamplerQNN(
        executor=ex,
        circuit=qc,
        input_params=x,
        weight_params=w,
        interpret=lambda k: (k & 1, (k >> 1) & 1),
        output_shape=(2, 2),
    )
    X, W = np.array([[0.3], [1.2], [2.0]]), np.array([0.4, -0.8])
    out = qnn.forward(X, W)
    assert out.shape == (3, 2, 2)
    exact = np.array([_probs(qc, dict(zip(x + w, np.concatenate([xx, W])))) for xx in X])
    want = exact.reshape(3, 2, 2).transpose(0, 2, 1)  # [q0, q1]
    np.testing.assert_allclose(out, want, atol=1e-10 if ex.exact_probabilities else 0.1)
    _, gw = qnn.backward(X, W)
    assert gw.shape == (3, 2, 2, 2)
    tol = 1e-9 if ex.exact_probabilities else 0.2
    np.testing.assert_allclose(gw.sum(axis=(1, 2)), 0.0, atol=tol)  # probabilities sum to 1


# ----------------------------------------------------------------------------- TorchConnector
def test_torch_connector_gradients_and_a_training_step(ex):
    """test_torch_connector: autograd through the connector equals the QNN's own backward, and
    one optimiser step lowers the loss."""
    fm = zz_feature_map(2, reps=1)
    ansatz = real_amplitudes(2, reps=1)
    qnn = EstimatorQNN(
        circuit=fm.compose(ansatz),
        observables=SparsePauliOp("ZZ"),
        input_params=fm.parameters,
        weight_params=ansatz.parameters,
        estimator=ex.estimator(),
        gradient=ex.estimator_gradient(),
        input_gradients=True,
        default_precision=0.0,
    )
    torch.manual_seed(0)
    model = TorchConnector(qnn, initial_weights=np.linspace(0.1, 1.0, ansatz.num_parameters))
    X = torch.tensor(np.random.default_rng(0).uniform(0, 2, (6, 2)), requires_grad=True)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0]).reshape(-1, 1)
    out = model(X)
    loss = ((out - y) ** 2).mean()
    loss.backward()
    gi, gw = qnn.backward(X.detach().numpy(), model.weight.detach().numpy())
    dl = 2 * (out.detach().numpy() - y.numpy()) / len(y)  # (6, 1)
    np.testing.assert_allclose(model.weight.grad.numpy(), np.einsum("no,nop->p", dl, gw), atol=1e-6)
    np.testing.assert_allclose(X.grad.numpy(), np.einsum("no,nop->np", dl, gi), atol=1e-6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    with torch.no_grad():
        assert ((model(X) - y) ** 2).mean() < loss


# ----------------------------------------------------------------------------- lazy VJP
def _lazy_vjp_qnns(ex):
    fm = zz_feature_map(3, reps=1)
    ansatz = real_amplitudes(3, reps=1)
    est = {
        "circuit": fm.compose(ansatz),
        "observables": [SparsePauliOp("ZIZ"), SparsePauliOp(["XYI", "IIZ"], [0.5, -1.5])],
        "input_params": list(fm.parameters),
        "weight_params": list(ansatz.parameters),
        "input_gradients": True,
    }
    # a sampler reading two of three qubits, in swapped clbit order, through ``interpret`` (a
    # multi-dimensional output_shape would break the stock TorchConnector's input gradients)
    qc, x, w = _qnn_circuit(2, 3)
    wide = QuantumCircuit(3, 2)
    wide.compose(qc, [0, 2], inplace=True)
    wide.ry(w[0] * 0.5, 1)
    wide.cx(1, 0)
    wide.measure([2, 0], [0, 1])
    samp = {
        "circuit": wide,
        "input_params": x,
        "weight_params": w,
        "interpret": lambda k: k % 3,  # outcomes 0 and 3 share an output
        "output_shape": 3,
        "input_gradients": True,
    }
    return {
        "estimator": lambda: FusedEstimatorQNN(executor=ex, **est),
        "sampler": lambda: FusedSamplerQNN(executor=ex, **samp),
    }


@pytest.mark.parametrize("kind", ["estimator", "sampler"])
def test_lazy_vjp_equals_the_full_jacobian_path(ex, kind):
    """In training, QuantumLayer gets its gradients from one adjoint sweep after grad_output is
    known (exact engine) — the same input and weight gradients, to 1e-10 in float64, as the full
    Jacobian TorchConnector contracts; and the layer's autograd equals a stock TorchConnector's
    (float32)."""
    make = _lazy_vjp_qnns(ex)[kind]
    qnn = make()
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 2, (5, qnn.num_inputs))
    W = rng.uniform(-2, 2, qnn.num_weights)
    assert qnn.supports_vjp() == ex.runner.exact_gradients
    if qnn.supports_vjp():
        out, vjp = qnn.forward_with_vjp(X, W)
        np.testing.assert_allclose(out, qnn.forward(X, W), atol=1e-13)
        gi, gw = qnn.backward(X, W)
        g = rng.normal(size=out.shape)
        vi, vw = vjp(g)
        axes = "".join("abc"[: out.ndim - 1])
        np.testing.assert_allclose(vi, np.einsum(f"n{axes},n{axes}p->np", g, gi), atol=1e-10)
        np.testing.assert_allclose(vw, np.einsum(f"n{axes},n{axes}p->p", g, gw), atol=1e-10)
        assert np.abs(vw).max() > 1e-3
    layer = QuantumLayer(qnn, initial_weights=W)
    stock = TorchConnector(make(), initial_weights=W)
    grads = []
    for model in (layer, stock):
        xt = torch.tensor(X, dtype=torch.float32, requires_grad=True)
        out = model(xt)
        weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        (out * weights).sum().backward()
        grads.append((out.detach(), xt.grad, model.weight.grad))
    for mine, theirs in zip(*grads):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=2e-6)


# ----------------------------------------------------------------------------- runtime path
def test_runtime_local_mode_estimator_qnn(tmp_path):
    """A stock EstimatorQNN on fake_manila (local testing mode): forward within shot and device
    noise of the ideal values, gradients of the right shape and sign structure."""
    ex = Executor("fake_manila", shots=4000, cache_dir=tmp_path)
    qc, x, w = _qnn_circuit(1, 1)
    kwargs = {
        "circuit": qc,
        "observables": SparsePauliOp("ZZ"),
        "input_params": x,
        "weight_params": w,
    }
    ours = EstimatorQNN(estimator=ex.estimator(), gradient=ex.estimator_gradient(), **kwargs)
    ref = EstimatorQNN(estimator=StatevectorEstimator(), default_precision=0.0, **kwargs)
    X, W = np.array([[0.3], [1.4]]), np.array([0.9])
    assert np.abs(ours.forward(X, W) - ref.forward(X, W)).max() < 0.2
    _, gw = ours.backward(X, W)
    _, rw = ref.backward(X, W)
    assert gw.shape == rw.shape and np.abs(gw - rw).max() < 0.25
    ex.close()


# ----------------------------------------------------------------------------- public facade
def _readme_snippet() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("<!-- readme-snippet: primitives_for -->")
    block = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    return block


def test_the_readme_snippet_runs_with_plain_qiskit_machine_learning(capsys):
    """The README's primitives_for example, as written: a NeuralNetworkClassifier on our
    primitives learns two separated clusters, and its QNN equals the reference QNN."""
    ns: dict = {}
    exec(compile(_readme_snippet(), "README.md", "exec"), ns)
    assert "accuracy" in capsys.readouterr().out
    clf, qnn, X, y = ns["clf"], ns["qnn"], ns["X"], ns["y"]
    assert clf.score(X, y) >= 0.9
    assert ns["p"].executor.cost.total.jobs > 0
    ref = EstimatorQNN(
        circuit=qnn.circuit,
        observables=SparsePauliOp("ZZ"),
        input_params=qnn.input_params,
        weight_params=qnn.weight_params,
        estimator=StatevectorEstimator(),
        default_precision=0.0,
    )
    W = clf.weights
    np.testing.assert_allclose(qnn.forward(X, W), ref.forward(X, W), atol=1e-10)


def test_primitives_for_every_backend_kind(tmp_path):
    from qmu_qiskit.exceptions import BackendError, BadInputError
    from qmu_qiskit.execution import primitives_for

    with primitives_for("aer", engine="aer", seed=3, ledger=tmp_path / "jobs.sqlite") as p:
        assert p.executor.engine == "aer" and p.executor.seed == 3
        qc = _operator_circuit()
        p.estimator.run([(qc, "Z", [0.2])]).result()
        assert p.executor.ledger is not None
    for name in ("aer_noisy", "fake_manila"):
        with primitives_for(name, shots=100) as p:
            assert p.executor.spec.kind in ("aer_noisy", "fake") and p.executor.shots == 100
            assert hasattr(p.sampler_gradient, "run") and hasattr(p.estimator_gradient, "run")
    with pytest.raises(BadInputError, match="engine"):
        primitives_for("fake_manila", engine="aer")
    with pytest.raises(BackendError, match="unknown backend"):
        primitives_for("nonsense")


def test_gradient_ignores_a_parameterised_global_phase(ex):
    """A parameter in the global phase (a ``global_phase`` gate or the circuit's phase) changes
    no expectation value: its gradient is 0 and the others are unaffected."""
    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(1, global_phase=2 * a)
    qc.ry(a, 0)
    qc.rz(b, 0)
    qc.rx(a * b, 0)
    from qiskit.circuit.library import GlobalPhaseGate

    qc.append(GlobalPhaseGate(b), [])
    obs = SparsePauliOp("Y")
    vals = [[0.4, -1.1], [1.3, 0.2]]
    got = ex.estimator_gradient().run([qc] * 2, [obs] * 2, vals).result().gradients
    want = _ref_grad([qc] * 2, [obs] * 2, vals)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-9)


def test_torch_connector_on_a_stock_sampler_qnn(ex):
    """test_torch_connector (SamplerQNN case): a stock SamplerQNN with an interpret, on our
    sampler and gradient, through TorchConnector: output shape, and input/weight gradients equal
    the QNN's own backward."""
    qc, x, w = _qnn_circuit(2, 2)
    qnn = SamplerQNN(
        circuit=qc,
        input_params=x,
        weight_params=w,
        interpret=_parity,
        output_shape=2,
        sampler=ex.sampler(),
        gradient=ex.sampler_gradient(),
        input_gradients=True,
    )
    model = TorchConnector(qnn, initial_weights=np.array([0.3, -0.6]))
    X = torch.tensor([[0.1, 0.9], [1.4, -0.2], [0.7, 0.7]], dtype=torch.float64, requires_grad=True)
    out = model(X)
    assert tuple(out.shape) == (3, 2)
    coeff = torch.tensor([1.0, -2.0], dtype=out.dtype)
    (out * coeff).sum().backward()
    gi, gw = qnn.backward(X.detach().numpy(), model.weight.detach().numpy())
    c = coeff.numpy()
    tol = 1e-6 if ex.exact_probabilities else 0.3
    np.testing.assert_allclose(model.weight.grad.numpy(), np.einsum("o,nop->p", c, gw), atol=tol)
    np.testing.assert_allclose(X.grad.numpy(), np.einsum("o,nop->np", c, gi), atol=tol)


def test_gradient_of_a_parameter_that_only_sets_the_global_phase(ex):
    """The unique-parameter circuit has no parameters left: every gradient is 0 (the Aer
    engine's gradient once failed here on reshaping an empty array)."""
    a = Parameter("a")
    qc = QuantumCircuit(1, global_phase=a)
    qc.h(0)
    res = ex.estimator_gradient().run([qc] * 3, [SparsePauliOp("X")] * 3, [[0.1], [0.2], [0.3]])
    np.testing.assert_allclose(np.array(res.result().gradients), 0.0, atol=1e-12)
