"""Seeded random circuits over Qiskit's standard gate set, for cross-checks against
``qiskit.quantum_info.Statevector``.

:func:`random_circuit` draws a unitary circuit of at most 5 qubits with fixed and parameterised
standard gates (controlled, multi-controlled and open-controlled rotations included), composite
blocks (a sub-circuit appended as one gate or instruction, a ``PauliEvolutionGate``, a
``StatePreparation``, a ``UnitaryGate``), an optional leading ``initialize`` and non-affine
parameter expressions (products, sums and functions of inputs and weights, as in
``zz_feature_map``). The same seed always gives the same circuit.
"""

from __future__ import annotations

import math

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterExpression, ParameterVector
from qiskit.circuit import library as lib
from qiskit.quantum_info import SparsePauliOp, random_unitary

FIXED_1Q = ["h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "sxdg", "id"]
FIXED_2Q = ["cx", "cy", "cz", "ch", "swap", "iswap", "dcx", "ecr", "cs", "csdg", "csx"]
FIXED_3Q = ["ccx", "ccz", "cswap", "rccx"]
FIXED_4Q = ["c3sx", "rcccx"]
# gate class, number of qubits, number of angles
PARAM_GATES = [
    (lib.RXGate, 1, 1),
    (lib.RYGate, 1, 1),
    (lib.RZGate, 1, 1),
    (lib.PhaseGate, 1, 1),
    (lib.U1Gate, 1, 1),
    (lib.U2Gate, 1, 2),
    (lib.U3Gate, 1, 3),
    (lib.UGate, 1, 3),
    (lib.RGate, 1, 2),
    (lib.RXXGate, 2, 1),
    (lib.RYYGate, 2, 1),
    (lib.RZZGate, 2, 1),
    (lib.RZXGate, 2, 1),
    (lib.CRXGate, 2, 1),
    (lib.CRYGate, 2, 1),
    (lib.CRZGate, 2, 1),
    (lib.CPhaseGate, 2, 1),
    (lib.CU1Gate, 2, 1),
    (lib.CU3Gate, 2, 3),
    (lib.CUGate, 2, 4),
    (lib.XXPlusYYGate, 2, 2),
    (lib.XXMinusYYGate, 2, 2),
]


def random_expression(rng: np.random.Generator, params: list, *, nonaffine: float = 0.35):
    """A real angle: a constant, an affine form, or (with probability ``nonaffine``) a product,
    sum or function of parameters."""
    if not params or rng.random() < 0.08:
        return float(rng.uniform(-math.pi, math.pi))
    pick = [params[i] for i in rng.integers(len(params), size=3)]
    if rng.random() >= nonaffine:
        a, b = rng.uniform(-2, 2, 2)
        return a * pick[0] + b if rng.random() < 0.5 else pick[0]
    kind = int(rng.integers(6))
    if kind == 0:  # zz_feature_map's pair angle
        return 2 * (math.pi - pick[0]) * (math.pi - pick[1])
    if kind == 1:
        return pick[0] * pick[1] + 0.5 * pick[2]
    if kind == 2:
        return pick[0].sin() * pick[1]
    if kind == 3:
        return (0.3 * pick[0]).exp() - pick[1].cos()
    if kind == 4:
        return pick[0] * pick[0] - 0.7
    return (pick[0] + pick[1]) * (pick[2] - 1.1)


def _block(rng: np.random.Generator, k: int, params: list) -> QuantumCircuit:
    """A small sub-circuit to be appended as one composite instruction."""
    sub = QuantumCircuit(k, name=f"blk{int(rng.integers(1000))}")
    for _ in range(int(rng.integers(2, 6))):
        _random_gate(rng, sub, params, composite=False)
    if rng.random() < 0.3:
        sub.global_phase = random_expression(rng, params)
    return sub


def _random_gate(rng, qc: QuantumCircuit, params: list, *, composite: bool) -> None:
    n = qc.num_qubits
    roll = rng.random()
    qubits = [int(q) for q in rng.permutation(n)]
    if roll < 0.18:
        qc.append(lib.get_standard_gate_name_mapping()[rng.choice(FIXED_1Q)], [qubits[0]])
    elif roll < 0.55:
        options = [g for g in PARAM_GATES if g[1] <= n]
        cls, k, nargs = options[int(rng.integers(len(options)))]
        angles = [random_expression(rng, params) for _ in range(nargs)]
        gate = cls(*angles)
        if k == 2 and rng.random() < 0.15 and hasattr(gate, "ctrl_state"):
            gate = cls(*angles, ctrl_state=0)
        qc.append(gate, qubits[:k])
    elif roll < 0.68 and n >= 2:
        names = FIXED_2Q + (FIXED_3Q if n >= 3 else []) + (FIXED_4Q if n >= 4 else [])
        gate = lib.get_standard_gate_name_mapping()[rng.choice(names)]
        qc.append(gate, qubits[: gate.num_qubits])
    elif roll < 0.76 and n >= 2:
        # multi-controlled: mcphase, a controlled rotation with 2 controls, open controls
        c = int(rng.integers(1, min(n - 1, 3) + 1))
        angle = random_expression(rng, params)
        choice = int(rng.integers(3))
        if choice == 0:
            gate = lib.MCPhaseGate(angle, c)
        else:
            base = [lib.RXGate, lib.RYGate, lib.RZGate, lib.PhaseGate][int(rng.integers(4))](angle)
            gate = base.control(c, ctrl_state=int(rng.integers(2**c)))
        qc.append(gate, qubits[: c + 1])
    elif roll < 0.80:
        qc.append(lib.GlobalPhaseGate(random_expression(rng, params)), [])
    elif roll < 0.82 and composite:
        qc.barrier()
    elif composite and roll < 0.90:
        k = int(rng.integers(1, min(n, 3) + 1))
        block = _block(rng, k, params)
        op = block.to_gate() if rng.random() < 0.6 else block.to_instruction()
        qc.append(op, qubits[:k])
    elif composite and roll < 0.94 and n >= 2:
        k = int(rng.integers(1, min(n, 3) + 1))
        labels = ["".join(rng.choice(list("IXYZ"), k)) for _ in range(2)]
        op = SparsePauliOp(labels, rng.uniform(-1, 1, 2))
        qc.append(lib.PauliEvolutionGate(op, time=random_expression(rng, params)), qubits[:k])
    elif composite and roll < 0.97:
        k = int(rng.integers(1, min(n, 2) + 1))
        qc.append(
            lib.UnitaryGate(random_unitary(2**k, seed=int(rng.integers(1 << 30)))), qubits[:k]
        )
    else:
        k = int(rng.integers(1, min(n, 2) + 1))
        amps = rng.normal(size=2**k) + 1j * rng.normal(size=2**k)
        qc.append(lib.StatePreparation(amps / np.linalg.norm(amps)), qubits[:k])


def random_circuit(seed: int, *, max_qubits: int = 5, max_gates: int = 14):
    """A seeded random unitary circuit.

    Returns:
        ``(circuit, observables)``: the circuit (parameters named ``x[i]`` and ``w[j]``) and two
        random Hermitian ``SparsePauliOp`` observables on all its qubits.
    """
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, max_qubits + 1))
    x = ParameterVector("x", int(rng.integers(0, 4)))
    w = ParameterVector("w", int(rng.integers(0, 5)))
    params = list(x) + list(w)
    qc = QuantumCircuit(n)
    if rng.random() < 0.12:  # a state load on fresh qubits first
        k = int(rng.integers(1, min(n, 3) + 1))
        amps = rng.normal(size=2**k) + 1j * rng.normal(size=2**k)
        qc.initialize(amps / np.linalg.norm(amps), list(range(k)))
    for _ in range(int(rng.integers(3, max_gates + 1))):
        _random_gate(rng, qc, params, composite=True)
    if rng.random() < 0.2:
        qc.global_phase = random_expression(rng, params)
    observables = []
    for _ in range(2):
        labels = ["".join(rng.choice(list("IXYZ"), n)) for _ in range(3)]
        observables.append(SparsePauliOp(labels, rng.uniform(-1, 1, 3)))
    return qc, observables


def random_values(seed: int, circuit: QuantumCircuit, rows: int = 2) -> np.ndarray:
    """Parameter values (rows, num_parameters) in circuit.parameters order."""
    rng = np.random.default_rng(seed + 10_000)
    return rng.uniform(-math.pi, math.pi, (rows, circuit.num_parameters))


def is_nonaffine(expr) -> bool:
    """Whether a gate parameter is a non-affine expression of the parameters."""
    if not isinstance(expr, ParameterExpression):
        return False
    return any(getattr(expr.gradient(p), "parameters", None) for p in expr.parameters)
