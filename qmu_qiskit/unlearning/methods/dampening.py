"""Selective synaptic dampening (Foster et al. 2023), the training-free method QMU uses, with an
optional quantum-geometric importance for the circuit parameters (docs/reference.md §3)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..base import MethodResult, Option, UnlearnContext, register_method
from ._common import diag_fisher

_PAULI = {"rx": "X", "ry": "Y", "rz": "Z"}


def _qnn_circuit(qnn):
    circuit = qnn.circuit
    if circuit.num_clbits:
        circuit = circuit.remove_final_measurements(inplace=False)
    return circuit


def _pauli_rotations(circuit):
    """The circuit with U/U3 gates written as RZ(λ)·RY(θ)·RZ(φ) and P/U1 as RZ.

    Both equal the original gates up to a global phase that depends on the parameters
    (U(θ,φ,λ) = e^{i(φ+λ)/2} RZ(φ)RY(θ)RZ(λ)); the Fubini–Study metric is a metric on rays, blind
    to such phases, so its diagonal is that of the rewritten circuit, where every weight drives
    one Pauli rotation.
    """
    from qiskit import QuantumCircuit

    out = QuantumCircuit(*circuit.qregs, *circuit.cregs, name=circuit.name)
    for inst in circuit.data:
        op, qargs = inst.operation, inst.qubits
        if op.name in ("u", "u3"):
            theta, phi, lam = op.params
            out.rz(lam, qargs[0])
            out.ry(theta, qargs[0])
            out.rz(phi, qargs[0])
        elif op.name in ("p", "u1"):
            out.rz(op.params[0], qargs[0])
        else:
            out.append(op, qargs, inst.clbits)
    return out


def _rotation_sites(circuit, weight_params) -> dict | None:
    """For every weight parameter the instruction index, qubit, Pauli generator and angle
    coefficient a (angle = a·θ + b) of the one rotation it drives; ``None`` when some weight is not
    of that form (shared, inside a non-Pauli-rotation gate, or mixed with another parameter)."""
    from qiskit.circuit import ParameterExpression

    wanted = set(weight_params)
    sites: dict = {}
    for k, inst in enumerate(circuit.data):
        for value in inst.operation.params:
            if not isinstance(value, ParameterExpression):
                continue
            used = set(value.parameters) & wanted
            if not used:
                continue
            if len(used) != 1 or len(value.parameters) != 1 or inst.operation.name not in _PAULI:
                return None
            (theta,) = used
            if theta in sites:
                return None
            coeff = value.gradient(theta)
            if isinstance(coeff, ParameterExpression):
                return None
            qubit = circuit.find_bit(inst.qubits[0]).index
            sites[theta] = (k, qubit, _PAULI[inst.operation.name], float(coeff))
    return sites if len(sites) == len(wanted) else None


def _asap_layers(circuit) -> list[int]:
    """ASAP layer of every instruction: one more than the latest layer on any of its wires, so the
    instructions of layers ≤ t form a prefix closed under causal precedence."""
    last: dict = defaultdict(int)
    layers = []
    for inst in circuit.data:
        wires = [("q", circuit.find_bit(q).index) for q in inst.qubits]
        wires += [("c", circuit.find_bit(c).index) for c in inst.clbits]
        layer = 1 + max((last[w] for w in wires), default=0)
        for w in wires:
            last[w] = layer
        layers.append(layer)
    return layers


def fubini_study_diagonal(model, X: torch.Tensor) -> tuple[np.ndarray, str]:
    """Diagonal of the Fubini–Study metric (the quantum geometric tensor's real part, QFI/4) of the
    circuit weights, per sample: (N, P) in the QNN's weight order.

    For a weight θ_j that drives one rotation exp(−i(a·θ_j + b)G/2) with a Pauli generator G
    (RX, RY, RZ; U/U3 and P/U1 gates are first written as such rotations),
    g_jj = a²/4 · (1 − ⟨G⟩²) with ⟨G⟩ taken in the state right after that rotation. ⟨G⟩ depends
    only on the reduced state of the rotation's qubit, so it can be read at any causally closed
    prefix of the circuit that contains the rotation and no later gate on its qubit: weights are
    grouped by the last ASAP layer before the next gate on their qubit and each group is one
    estimator job (all samples broadcast, one observable per weight) on the run's executor — so
    it runs on every backend, is counted in the cost, and for the HQML circuit needs 3 circuits
    per variational layer instead of a full QGT. (qiskit-machine-learning's ``QFI(LinCombQGT)``
    gives the same numbers — the tests check it — but computes the full P×P tensor with
    Hadamard-test circuits: about a second per Iris sample on the reference estimator, and it
    fails on circuits that reuse a weight.) Circuits whose weights are not single Pauli rotations
    fall back to the exact statevector of the project's engine with forward-mode autodiff — a
    noiseless reference, whatever the run's backend.

    Returns:
        ``(g, engine)``: the diagonal and which route computed it.
    """
    qnn = model.quantum.qnn
    circuit = _qnn_circuit(qnn)
    weight_params = list(qnn.weight_params)
    input_params = list(qnn.input_params)
    with torch.no_grad():
        was_training = model.training
        model.eval()
        inputs = model.encoder(X).detach().double().numpy().reshape(len(X), -1)
        model.train(was_training)
    weights = model.quantum.weight.detach().double().numpy()
    full = np.hstack([inputs, np.broadcast_to(weights, (len(X), len(weights)))])
    column = {p: i for i, p in enumerate(input_params + weight_params)}

    rotations = _pauli_rotations(circuit)
    sites = _rotation_sites(rotations, weight_params)
    if sites is None:
        return _exact_diagonal(
            circuit, full, input_params + weight_params, weight_params
        ), "exact statevector (forward-mode autodiff), noiseless reference"
    circuit = rotations

    from qiskit import QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp

    layers = _asap_layers(circuit)
    next_layer = {}
    for theta, (k, qubit, _, _) in sites.items():
        later = [
            layers[m]
            for m in range(k + 1, len(circuit.data))
            if any(circuit.find_bit(q).index == qubit for q in circuit.data[m].qubits)
        ]
        next_layer[theta] = (min(later) - 1) if later else max(layers)
    groups: dict[int, list] = defaultdict(list)
    for theta, cut in next_layer.items():
        groups[cut].append(theta)
    executor = qnn.executor
    n = circuit.num_qubits
    g = np.zeros((len(X), len(weight_params)))
    index = {p: j for j, p in enumerate(weight_params)}
    for cut, thetas in sorted(groups.items()):
        prefix = QuantumCircuit(*circuit.qregs, name=f"{circuit.name}_fs{cut}")
        for inst, layer in zip(circuit.data, layers):
            if layer <= cut:
                prefix.append(inst.operation, inst.qubits, inst.clbits)
        observables = [
            SparsePauliOp.from_sparse_list([(sites[t][2], [sites[t][1]], 1.0)], num_qubits=n)
            for t in thetas
        ]
        values = full[:, [column[p] for p in prefix.parameters]]
        evs, _ = executor.expectation_values(prefix, observables, values)
        for row, theta in enumerate(thetas):
            a = sites[theta][3]
            g[:, index[theta]] = a * a / 4.0 * (1.0 - np.clip(evs[row], -1.0, 1.0) ** 2)
    return g, "executor (Pauli-rotation prefix circuits)"


def _exact_diagonal(circuit, full: np.ndarray, params: list, weight_params: list) -> np.ndarray:
    """g_jj = ⟨∂_jψ|∂_jψ⟩ − |⟨ψ|∂_jψ⟩|² from the exact statevector, ∂_jψ by forward-mode autodiff
    through the project's batched statevector (one pass per weight, all samples at once)."""
    from ...execution.statevector import CompiledCircuit

    compiled = CompiledCircuit(circuit)
    position = {p: i for i, p in enumerate(params)}
    values = torch.from_numpy(
        np.ascontiguousarray(full[:, [position[p] for p in compiled.parameters]])
    )
    column = {p: i for i, p in enumerate(compiled.parameters)}
    g = np.zeros((len(full), len(weight_params)))
    for j, theta in enumerate(weight_params):
        if theta not in column:
            continue  # a weight the circuit does not use moves nothing
        tangent = torch.zeros_like(values)
        tangent[:, column[theta]] = 1.0
        psi, dpsi = torch.func.jvp(compiled.statevector, (values,), (tangent,))[:2]
        overlap = (psi.conj() * dpsi).sum(1)
        g[:, j] = ((dpsi.conj() * dpsi).real.sum(1) - (overlap.conj() * overlap).real).numpy()
    return g


@register_method(
    "ssd",
    options={
        "alpha": Option(
            float, 10.0, "selection weighting α: dampen θ_j where I_F,j > α·I_D,j", minimum=0.0
        ),
        "lam": Option(
            float, 1.0, "dampening constant λ: θ_j ← min(λ·I_D,j/I_F,j, 1)·θ_j", minimum=0.0
        ),
        "batch_size": Option(
            int,
            lambda r: r.batch_size,
            "mini-batch size of the importance estimates (default: the teacher's)",
            minimum=1,
        ),
        "quantum_importance": Option(
            str,
            "fisher",
            "importance of the circuit weights: fisher (the "
            "diagonal Fisher, as for every weight) or fubini_study (the "
            "diagonal of the Fubini–Study metric)",
            choices=("fisher", "fubini_study"),
        ),
    },
    summary="selective synaptic dampening: shrink weights far more important to D_f than to D_tr",
    source="Foster et al. 2023 (SSD), AAAI 2024; used by QMU",
    family="dampening",
)
def ssd(ctx: UnlearnContext) -> MethodResult:
    """Selective Synaptic Dampening (Foster, Schoepf & Brintrup, "Fast Machine Unlearning Without
    Retraining through Selective Synaptic Dampening", 2023, §3): importances are diagonal Fisher
    estimates at θ0 — the mean over mini-batches of squared batch gradients — on the full
    training set D_tr = D_r ∪ D_f (I_D) and on D_f (I_F); every parameter with
    I_F,j > α·I_D,j is multiplied by min(λ·I_D,j / I_F,j, 1). No training.

    With ``quantum_importance=fubini_study`` the circuit weights use instead the sample mean of
    the Fubini–Study metric diagonal over D_tr and over D_f (:func:`fubini_study_diagonal`): how
    strongly each weight moves the quantum state on those inputs, independent of labels and head.

    ``info``: how many parameters were dampened, per parameter tensor, and the dampened circuit
    weight indices.
    """
    opts = ctx.options
    model = ctx.copy_teacher()
    (Xr, yr), (Xf, yf) = ctx.tensors("retain"), ctx.tensors("forget")
    X_all, y_all = torch.cat([Xr, Xf]), torch.cat([yr, yf])
    imp_d = diag_fisher(model, X_all, y_all, opts["batch_size"], ctx.generator(salt=2))
    imp_f = diag_fisher(model, Xf, yf, opts["batch_size"], ctx.generator(salt=3))
    names = [n for n, _ in model.named_parameters()]
    quantum = {id(p) for p in model.quantum_parameters()}
    info: dict = {"quantum_importance": opts["quantum_importance"]}
    if opts["quantum_importance"] == "fubini_study":
        g_all, engine = fubini_study_diagonal(model, X_all)
        n_r = len(Xr)
        g_d = torch.from_numpy(g_all.mean(0))
        g_f = torch.from_numpy(g_all[n_r:].mean(0))
        for i, p in enumerate(model.parameters()):
            if id(p) in quantum:
                imp_d[i], imp_f[i] = g_d.reshape(p.shape), g_f.reshape(p.shape)
        info["fubini_study_engine"] = engine
    dampened = {}
    with torch.no_grad():
        for name, p, d, f in zip(names, model.parameters(), imp_d, imp_f):
            mask = f > opts["alpha"] * d
            factor = torch.clamp(opts["lam"] * d / f.clamp_min(1e-300), max=1.0)
            p[mask] = (p.double()[mask] * factor[mask]).to(p.dtype)
            dampened[name] = int(mask.sum())
            if id(p) in quantum:
                info["dampened_quantum_indices"] = torch.nonzero(mask.flatten()).flatten().tolist()
    info["dampened"] = dampened
    info["dampened_total"] = sum(dampened.values())
    return MethodResult(model, info)
