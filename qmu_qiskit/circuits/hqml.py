"""The HQML circuit (Crivoi & Ionescu, "Machine Unlearning in the Era of Quantum Machine
Learning", arXiv 2512.19253, public code CrivoiCarla/HQML; docs/reference.md §1)."""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

from ..exceptions import BadInputError


def hqml_circuit(num_qubits: int, num_layers: int) -> tuple[QuantumCircuit, list, list]:
    """Angle encoding RX(x_w) RY(x_w) RZ(x_w) on each qubit, then ``num_layers`` blocks of
    RX(θ) RY(θ) RZ(θ) on every qubit followed by a CZ ring CZ(0,1) … CZ(n−2,n−1), CZ(n−1,0).

    Args:
        num_qubits: n ≥ 1 (the ring is omitted for n = 1, a single CZ for n = 2).
        num_layers: L ≥ 1.

    Returns:
        ``(circuit, input_params, weight_params)``; 3·n·L weights, layer-major, qubit, then
        RX/RY/RZ — the order of HQML's ``weights[l, w, 0:3]``.
    """
    if num_qubits < 1 or num_layers < 1:
        raise BadInputError(
            f"the hqml circuit needs at least 1 qubit and 1 layer, got {num_qubits} and {num_layers}"
        )
    x = ParameterVector("x", num_qubits)
    theta = ParameterVector("theta", 3 * num_qubits * num_layers)
    qc = QuantumCircuit(num_qubits, name=f"hqml_{num_qubits}x{num_layers}")
    for w in range(num_qubits):
        qc.rx(x[w], w)
        qc.ry(x[w], w)
        qc.rz(x[w], w)
    k = 0
    for _ in range(num_layers):
        for w in range(num_qubits):
            qc.rx(theta[k], w)
            qc.ry(theta[k + 1], w)
            qc.rz(theta[k + 2], w)
            k += 3
        if num_qubits == 2:
            qc.cz(0, 1)
        elif num_qubits > 2:
            for w in range(num_qubits - 1):
                qc.cz(w, w + 1)
            qc.cz(num_qubits - 1, 0)
    return qc, list(x), list(theta)
