"""The exact engine: statevectors equal Qiskit's, adjoint Jacobians equal autodiff and finite
differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.circuit.library import U2Gate
from qiskit.quantum_info import SparsePauliOp, Statevector

from qmu_qiskit.circuits import hqml_circuit
from qmu_qiskit.exceptions import BadInputError
from qmu_qiskit.execution.statevector import CompiledCircuit, jacobian_autograd


def _zoo(n: int) -> QuantumCircuit:
    """Every gate kind the engine handles, with affine and shared angles."""
    x = ParameterVector("x", n)
    w = ParameterVector("w", 3 * n * 2 + 10)
    qc = QuantumCircuit(n)
    for q in range(n):
        qc.rx(x[q], q)
        qc.ry(x[q], q)
        qc.rz(x[q], q)
    k = 0
    for _ in range(2):
        for q in range(n):
            qc.rx(w[k], q)
            qc.ry(w[k + 1], q)
            qc.rz(2 * w[k + 2] + 0.3, q)
            k += 3
        for q in range(n - 1):
            qc.cz(q, q + 1)
        qc.cz(n - 1, 0)
    qc.h(1)
    qc.cx(0, 2)
    qc.rzz(w[0], 1, 3)
    qc.swap(0, 3)
    qc.u(w[1], w[2], 0.4, 2)
    qc.cp(w[3], 2, 0)
    qc.crz(w[4], 1, 2)
    qc.ecr(0, 1)
    qc.sx(3)
    qc.t(1)
    qc.ccx(0, 1, 3)
    qc.ry(w[5], 3)
    qc.rx(w[6] + w[7], 0)
    qc.u(w[k], w[k + 1], w[k + 2], 1)
    qc.p(w[k + 3], 2)
    qc.r(w[k + 4], w[k + 5], 0)
    qc.append(U2Gate(w[k + 6], w[k + 7]), [3])
    qc.rx(0.5 * x[0], 1)
    return qc


def _obs(n):
    return [SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], n) for q in range(n)] + [
        SparsePauliOp(["XY" + "Z" * (n - 2), "ZZ" + "I" * (n - 2)], [0.5, 0.2])
    ]


@pytest.mark.parametrize("n", [4, 5])
def test_statevector_and_expectations_match_qiskit(n):
    qc = _zoo(n)
    cc = CompiledCircuit(qc)
    rng = np.random.default_rng(n)
    vals = rng.uniform(-np.pi, np.pi, (4, qc.num_parameters))
    sv = cc.statevector(torch.tensor(vals)).numpy()
    evs = cc.expectation(torch.tensor(vals), _obs(n)).numpy()
    for b in range(len(vals)):
        ref = Statevector(qc.assign_parameters(vals[b]))
        np.testing.assert_allclose(sv[b], ref.data, atol=1e-12)
        ref_evs = [ref.expectation_value(o).real for o in _obs(n)]
        np.testing.assert_allclose(evs[b], ref_evs, atol=1e-12)


@pytest.mark.parametrize("n", [4, 6])
def test_adjoint_jacobian_matches_autodiff_and_finite_differences(n):
    qc = _zoo(n)
    cc = CompiledCircuit(qc)
    rng = np.random.default_rng(7)
    vals = rng.uniform(-np.pi, np.pi, (3, qc.num_parameters))
    ev_ad, jac_ad = jacobian_autograd(cc, vals, _obs(n))
    ev, jac = cc.value_and_jacobian(vals, _obs(n))
    np.testing.assert_allclose(ev, ev_ad, atol=1e-13)
    np.testing.assert_allclose(jac, jac_ad, atol=1e-12)
    eps = 1e-6
    fd = np.zeros_like(jac)
    for p in range(qc.num_parameters):
        up, dn = vals.copy(), vals.copy()
        up[:, p] += eps
        dn[:, p] -= eps
        fd[:, :, p] = (
            cc.expectation(torch.tensor(up), _obs(n)).numpy()
            - cc.expectation(torch.tensor(dn), _obs(n)).numpy()
        ) / (2 * eps)
    assert np.abs(fd - jac).max() < 1e-6


@pytest.mark.parametrize("n,layers", [(2, 1), (4, 2), (8, 2), (4, 6)])
def test_hqml_fast_paths_are_exact(n, layers):
    """Local-Z observables and the product-state first layer use shortcuts; both are exact."""
    qc, _, _ = hqml_circuit(n, layers)
    cc = CompiledCircuit(qc)
    vals = np.random.default_rng(n + layers).uniform(-3, 3, (5, qc.num_parameters))
    local = [
        SparsePauliOp.from_sparse_list([("Z", [q], 1.5 if q == 0 else 1.0)], n)
        + SparsePauliOp("I" * n, 0.3)
        for q in range(n)
    ]
    for obs in (local, [SparsePauliOp("Z" * n)]):
        ev_ad, jac_ad = jacobian_autograd(cc, vals, obs)
        ev, jac = cc.value_and_jacobian(vals, obs)
        np.testing.assert_allclose(ev, ev_ad, atol=1e-13)
        np.testing.assert_allclose(jac, jac_ad, atol=1e-12)


def test_probability_jacobian_and_amplitude_encoding():
    from qiskit_machine_learning.circuit.library import raw_feature_vector

    n = 3
    w = ParameterVector("w", 2 * n)
    qc = QuantumCircuit(n)
    qc.compose(raw_feature_vector(2**n), inplace=True)
    for q in range(n):
        qc.u(w[q], w[n + q], 0.1, q)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    cc = CompiledCircuit(qc)
    vals = np.random.default_rng(3).normal(size=(4, qc.num_parameters))
    obs = _obs(n)[:n]
    ev, jac = cc.value_and_jacobian(vals, obs)
    ev_ad, jac_ad = jacobian_autograd(cc, vals, obs)
    np.testing.assert_allclose(jac, jac_ad, atol=1e-12)
    for b in range(len(vals)):
        ref = Statevector(qc.assign_parameters(vals[b]).decompose(reps=5))
        np.testing.assert_allclose(ev[b], [ref.expectation_value(o).real for o in obs], atol=1e-10)
    probs, pjac = cc.value_and_jacobian(vals, probabilities=True)
    x = torch.tensor(vals, requires_grad=True)
    p = cc.probabilities(x)
    ref_jac = torch.stack(
        [torch.autograd.grad(p[:, k].sum(), x, retain_graph=True)[0] for k in range(p.shape[1])], 1
    )
    np.testing.assert_allclose(pjac, ref_jac.numpy(), atol=1e-12)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)


def test_unsupported_circuits_are_refused_clearly():
    """What has no exact pure-state value is refused with one line, never evaluated."""
    from qiskit.circuit.library import RVGate

    a = ParameterVector("a", 3)
    cases = []
    qc = QuantumCircuit(2, 1)
    qc.h(0)
    qc.measure(0, 0)
    qc.x(1)
    cases.append((qc, "unitary"))  # a measurement (the runners strip final ones first)
    qc = QuantumCircuit(1)
    qc.h(0)
    qc.reset(0)
    cases.append((qc, "reset"))
    qc = QuantumCircuit(2)
    qc.x(0)
    qc.initialize([0, 1], [0])
    cases.append((qc, "initialize"))
    qc = QuantumCircuit(1, 1)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(0)
    cases.append((qc, "classical control"))
    qc = QuantumCircuit(1)
    qc.append(RVGate(a[0], a[1], a[2]), [0])
    cases.append((qc, "rv"))
    for circuit, match in cases:
        with pytest.raises(BadInputError, match=match):
            CompiledCircuit(circuit)


def test_fresh_resets_initialize_and_zero_parameters_are_exact():
    qc = QuantumCircuit(3)
    qc.reset(1)  # a no-op on a fresh qubit
    qc.initialize([0.6, 0.8j], [2])
    qc.h(0)
    qc.cx(0, 1)
    cc = CompiledCircuit(qc)
    assert cc.num_parameters == 0
    ref = Statevector(qc).data
    for vals in (torch.zeros(3, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)):
        sv = cc.statevector(vals).numpy()
        np.testing.assert_allclose(sv, np.broadcast_to(ref, sv.shape), atol=1e-12)
    obs = [SparsePauliOp("ZZI"), SparsePauliOp("XXX")]
    ev, jac = cc.value_and_jacobian(np.zeros((2, 0)), obs)
    assert jac.shape == (2, 2, 0)
    np.testing.assert_allclose(ev[0], [Statevector(qc).expectation_value(o).real for o in obs])


def test_feature_map_ladders_compile_to_one_diagonal_per_layer():
    """CX · P(φ) · CX ladders (zz_feature_map) stay diagonal in a permuted frame: one phase
    vector per feature-map layer, no dense or permutation step (the fast path for user circuits)."""
    from qiskit.circuit.library import zz_feature_map

    from qmu_qiskit.execution.statevector import _Dense, _Diagonal, _Permutation

    qc = zz_feature_map(4, reps=2)
    cc = CompiledCircuit(qc)
    kinds = [type(step) for step in cc._program]
    assert kinds.count(_Diagonal) == 2
    assert _Dense not in kinds and _Permutation not in kinds
    vals = np.random.default_rng(1).uniform(0, np.pi, (2, 4))
    sv = cc.statevector(torch.tensor(vals)).numpy()
    for b in range(2):
        np.testing.assert_allclose(
            sv[b], Statevector(qc.assign_parameters(vals[b])).data, atol=1e-12
        )


def _random_parameterised(n: int, depth: int, seed: int) -> QuantumCircuit:
    """A random circuit over the engine's gate kinds: affine, shared and non-affine angles,
    dense, diagonal and permutation gates in random order."""
    rng = np.random.default_rng(seed)
    p = ParameterVector("p", 6)
    qc = QuantumCircuit(n)

    def angle():
        i, j = rng.choice(len(p), 2, replace=False)
        pick = rng.integers(4)
        if pick == 0:
            return p[i]
        if pick == 1:
            return 1.5 * p[i] - 0.5 * p[j] + 0.2
        if pick == 2:
            return p[i] * p[j]  # non-affine: a per-sample virtual column
        return float(rng.uniform(-3, 3))

    one = ["rx", "ry", "rz", "p", "h", "sx", "u"]
    two = ["cx", "cz", "rzz", "crx", "swap", "cp", "rxx"]
    for _ in range(depth):
        if n > 1 and rng.random() < 0.4:
            name = two[rng.integers(len(two))]
            a, b = (int(q) for q in rng.choice(n, 2, replace=False))
            if name in ("cx", "cz", "swap"):
                getattr(qc, name)(a, b)
            else:
                getattr(qc, name)(angle(), a, b)
        else:
            name = one[rng.integers(len(one))]
            q = int(rng.integers(n))
            if name in ("h", "sx"):
                getattr(qc, name)(q)
            elif name == "u":
                qc.u(angle(), angle(), angle(), q)
            else:
                getattr(qc, name)(angle(), q)
    return qc


def _vjp_cases():
    hq, _, _ = hqml_circuit(4, 2)
    local = [SparsePauliOp.from_sparse_list([("Z", [q], 1.0 + q)], 4) for q in range(4)]
    # a second output on qubit 0, with a constant: still the single-qubit-Z shortcut
    local.append(SparsePauliOp.from_sparse_list([("Z", [0], -2.0), ("", [], 0.3)], 4))
    cases = {
        "zoo4": (_zoo(4), _obs(4)),
        "zoo5": (_zoo(5), _obs(5)),
        "hqml-local-z": (hq, local),
        "hqml-dense-obs": (hq, _obs(4)),
    }
    for seed in range(4):
        n = 2 + seed
        cases[f"random{seed}"] = (
            _random_parameterised(n, 30, seed),
            _obs(n) if n >= 2 else [SparsePauliOp("Z")],
        )
    return cases


@pytest.mark.parametrize("name", sorted(_vjp_cases()))
def test_one_sweep_vjp_equals_the_contracted_jacobian_and_finite_differences(name):
    """The lazy pullback (one adjoint sweep with the cotangent-weighted observable) equals
    Σ_o g_o ∂⟨O_o⟩/∂θ from the full Jacobian to 1e-10, and finite differences of Σ g·⟨O⟩."""
    qc, obs = _vjp_cases()[name]
    cc = CompiledCircuit(qc)
    rng = np.random.default_rng(11)
    vals = rng.uniform(-np.pi, np.pi, (4, qc.num_parameters))
    ev, jac = cc.value_and_jacobian(vals, obs)
    out, pullback = cc.forward_for_vjp(vals, obs)
    np.testing.assert_allclose(out, ev, atol=1e-13)
    g = rng.normal(size=ev.shape)
    vjp = pullback(g)
    assert vjp.shape == vals.shape
    assert np.abs(vjp).max() > 1e-3  # a real gradient, not zeros
    np.testing.assert_allclose(vjp, np.einsum("bo,bop->bp", g, jac), atol=1e-10)
    cols = [qc.num_parameters - 1, 0]
    np.testing.assert_allclose(pullback(g, cols), vjp[:, cols], atol=0)  # reusable, columns
    eps = 1e-6
    for p in range(qc.num_parameters):
        up, dn = vals.copy(), vals.copy()
        up[:, p] += eps
        dn[:, p] -= eps
        diff = cc.expectation(torch.tensor(up), obs) - cc.expectation(torch.tensor(dn), obs)
        fd = (diff.numpy() * g).sum(1) / (2 * eps)
        assert np.abs(fd - vjp[:, p]).max() < 1e-6


def test_one_sweep_vjp_of_probabilities_and_amplitude_encoding():
    from qiskit_machine_learning.circuit.library import raw_feature_vector

    n = 3
    w = ParameterVector("w", 2 * n)
    qc = QuantumCircuit(n)
    qc.compose(raw_feature_vector(2**n), inplace=True)
    for q in range(n):
        qc.u(w[q], w[n + q], 0.1, q)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    cc = CompiledCircuit(qc)
    rng = np.random.default_rng(4)
    vals = rng.normal(size=(5, qc.num_parameters))
    for obs in (None, _obs(n)):
        kw = {"probabilities": True} if obs is None else {}
        out, jac = cc.value_and_jacobian(vals, obs, **kw)
        out2, pullback = cc.forward_for_vjp(vals, obs, **kw)
        np.testing.assert_allclose(out2, out, atol=1e-13)
        g = rng.normal(size=out.shape)
        np.testing.assert_allclose(pullback(g), np.einsum("bo,bop->bp", g, jac), atol=1e-10)
    with pytest.raises(BadInputError, match="cotangent of shape"):
        pullback(np.zeros((5, 1)))


@pytest.mark.parametrize("n", [2, 3, 6])
def test_weight_layers_shared_by_the_batch_are_exact(n):
    """Rows that share a layer's angles (QNN weights) take the shared-unitary path: values,
    Jacobians and one-sweep VJPs still equal Qiskit and autodiff."""
    from qmu_qiskit.execution.statevector import _Segment

    qc, x, w = hqml_circuit(n, 2)
    cc = CompiledCircuit(qc)
    rng = np.random.default_rng(n)
    index = {p: i for i, p in enumerate(qc.parameters)}
    vals = np.empty((5, qc.num_parameters))
    vals[:, [index[p] for p in x]] = rng.uniform(0, np.pi, (5, n))
    vals[:, [index[p] for p in w]] = rng.uniform(0, 2 * np.pi, len(w))  # same in every row
    seg = next(s for s in cc._program if isinstance(s, _Segment) and s is not cc._program[0])
    _, _, prod = cc._segment_matrices(seg, torch.tensor(vals), torch.complex128)
    assert prod.stride(0) == 0  # the weight layer is built once for the batch
    sv = cc.statevector(torch.tensor(vals)).numpy()
    for b in range(len(vals)):
        np.testing.assert_allclose(
            sv[b], Statevector(qc.assign_parameters(vals[b])).data, atol=1e-12
        )
    local = [SparsePauliOp.from_sparse_list([("Z", [q], 0.5 + q)], n) for q in range(n)]
    for obs in (_obs(n) if n > 2 else [SparsePauliOp("XY"), SparsePauliOp("ZI")], local):
        ev_ad, jac_ad = jacobian_autograd(cc, vals, obs)
        ev, jac = cc.value_and_jacobian(vals, obs)
        np.testing.assert_allclose(jac, jac_ad, atol=1e-12)
        _, pullback = cc.forward_for_vjp(vals, obs)
        g = rng.normal(size=ev.shape)
        np.testing.assert_allclose(pullback(g), np.einsum("bo,bop->bp", g, jac), atol=1e-10)


def test_an_observable_edited_in_place_is_not_read_from_the_cache():
    qc, _, _ = hqml_circuit(3, 1)
    cc = CompiledCircuit(qc)
    vals = torch.tensor(np.random.default_rng(0).uniform(0, 3, (2, qc.num_parameters)))
    obs = [SparsePauliOp("ZII"), SparsePauliOp("IZI")]
    first = cc.expectation(vals, obs)
    obs[1].coeffs[0] = 2.0  # SparsePauliOp allows this
    second = cc.expectation(vals, obs)
    np.testing.assert_allclose(second[:, 1], 2 * first[:, 1], atol=1e-12)
    np.testing.assert_allclose(second[:, 0], first[:, 0], atol=1e-12)


@pytest.mark.parametrize("n", [5, 7])
def test_layers_applied_in_chunks_are_exact(n, monkeypatch):
    """Large registers apply layers as unitaries on chunks of a few qubits (and read reduced
    transitions per chunk); with the threshold lowered, small circuits take that path and still
    equal Qiskit, autodiff and the contracted Jacobian (shared and per-row layers)."""
    import qmu_qiskit.execution.statevector as sv_mod

    monkeypatch.setattr(sv_mod, "_CHUNK_FROM", 3)
    monkeypatch.setattr(sv_mod, "_CHUNK", 2)
    if n == 5:
        assert sv_mod._chunk_bounds(n) == [(0, 2), (2, 4), (4, 5)]
    for qc, obs in ((_zoo(n), _obs(n)), (hqml_circuit(n, 2)[0], _obs(n))):
        cc = CompiledCircuit(qc)
        rng = np.random.default_rng(n)
        vals = rng.uniform(-np.pi, np.pi, (3, qc.num_parameters))
        sv = cc.statevector(torch.tensor(vals)).numpy()
        for b in range(len(vals)):
            ref = Statevector(qc.assign_parameters(vals[b])).data
            np.testing.assert_allclose(sv[b], ref, atol=1e-12)
        tiled = vals.copy()
        tiled[1:, 3:] = tiled[0, 3:]  # rows share most angles: the shared-unitary path too
        for v in (vals, tiled):
            ev_ad, jac_ad = jacobian_autograd(cc, v, obs)
            ev, jac = cc.value_and_jacobian(v, obs)
            np.testing.assert_allclose(jac, jac_ad, atol=1e-12)
            _, pullback = cc.forward_for_vjp(v, obs)
            g = rng.normal(size=ev.shape)
            np.testing.assert_allclose(pullback(g), np.einsum("bo,bop->bp", g, jac), atol=1e-10)
