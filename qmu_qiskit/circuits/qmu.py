"""The QMU circuit: amplitude encoding + U3 layers with a CNOT ring (Su et al., "From
Membership-Privacy Leakage to Quantum Machine Unlearning", arXiv 2509.06086, public code
Sujun124/QMU ``HQNN.py``; docs/reference.md §1).

QMU's PennyLane code loads the 256-dim vector with ``AmplitudeEmbedding(wires=range(8))``, whose
wire 0 is the *most* significant bit of the amplitude index, then applies ``U3`` on every wire and
``CNOT(j, j+1)``, ``CNOT(7, 0)``, reading ⟨Z_j⟩. Qiskit's qubit 0 is the *least* significant bit.
With ``feature_order="pennylane"`` (the default) amplitude index ``i`` of the input is loaded onto
the Qiskit basis state ``bitrev(i)``, so Qiskit qubit ``j`` carries PennyLane wire ``j`` and the
circuit below — U3 on qubit j, CNOT j→j+1, ⟨Z_j⟩ — is QMU's model exactly, feature for feature.
``feature_order="qiskit"`` loads index ``i`` onto ``|i⟩`` (``raw_feature_vector`` as is); the two
differ by a fixed permutation of the inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

from ..exceptions import BadInputError

FEATURE_ORDERS = ("pennylane", "qiskit")


def bit_reversal(num_qubits: int) -> np.ndarray:
    """``perm[k]`` = index ``k`` with its ``num_qubits`` bits reversed (an involution)."""
    k = np.arange(2**num_qubits)
    out = np.zeros_like(k)
    for b in range(num_qubits):
        out |= ((k >> b) & 1) << (num_qubits - 1 - b)
    return out


def amplitude_encoding(num_qubits: int, *, feature_order: str = "pennylane") -> tuple[Any, Any]:
    """The amplitude-encoding circuit of ``2**num_qubits`` features and its input parameters.

    It is qiskit-machine-learning's ``raw_feature_vector`` (a ``ParameterizedInitialize`` that
    normalises its parameters); with ``feature_order="pennylane"`` its parameters are permuted so
    that feature ``i`` lands where PennyLane's ``AmplitudeEmbedding`` puts it (see module doc).

    Returns:
        ``(circuit, input_params)`` with ``input_params`` in feature order.
    """
    from qiskit_machine_learning.circuit.library import raw_feature_vector
    from qiskit_machine_learning.circuit.library.raw_feature_vector import ParameterizedInitialize

    if feature_order not in FEATURE_ORDERS:
        raise BadInputError(
            f"unknown feature order {feature_order!r}; use one of {', '.join(FEATURE_ORDERS)}"
        )
    dim = 2**num_qubits
    if feature_order == "qiskit":
        rfv = raw_feature_vector(dim)
        params = list(rfv.data[0].operation.params)
        return rfv, params
    x = ParameterVector("x", dim)
    perm = bit_reversal(num_qubits)
    qc = QuantumCircuit(num_qubits)
    qc.append(ParameterizedInitialize([x[int(perm[k])] for k in range(dim)]), qc.qubits)
    return qc, list(x)


def qmu_circuit(
    num_layers: int, num_qubits: int = 8, *, feature_order: str = "pennylane"
) -> tuple[QuantumCircuit, list, list]:
    """QMU's QNN: amplitude encoding of a ``2**n``-dim vector, then ``num_layers`` blocks of
    U3(θ₁, θ₂, θ₃) on every qubit followed by the CNOT ring 0→1 … (n−2)→(n−1), (n−1)→0.

    PennyLane's ``U3(θ, φ, δ)`` is Qiskit's ``U(θ, φ, λ)`` (same matrix), so the weights carry
    over unchanged.

    Args:
        num_layers: L ≥ 1 (QMU: 10 for the basic QNN, 1 in the HQNN unlearning runs).
        num_qubits: n ≥ 2 (QMU: 8, i.e. 256 features).
        feature_order: ``pennylane`` (QMU's wire order, default) or ``qiskit``.

    Returns:
        ``(circuit, input_params, weight_params)``: ``2**n`` inputs in feature order; 3·n·L
        weights, layer-major, then qubit, then (θ, φ, λ) — the order of QMU's
        ``QNN_param[k][j][0:3]``.

    Example:
        >>> qc, x, w = qmu_circuit(2, 3)
        >>> len(x), len(w)
        (8, 18)
    """
    if num_qubits < 2 or num_layers < 1:
        raise BadInputError(
            f"the qmu circuit needs at least 2 qubits and 1 layer, got {num_qubits} and {num_layers}"
        )
    encoding, x = amplitude_encoding(num_qubits, feature_order=feature_order)
    theta = ParameterVector("theta", 3 * num_qubits * num_layers)
    qc = QuantumCircuit(num_qubits, name=f"qmu_{num_qubits}x{num_layers}")
    qc.compose(encoding, inplace=True)
    k = 0
    for _ in range(num_layers):
        for w in range(num_qubits):
            qc.u(theta[k], theta[k + 1], theta[k + 2], w)
            k += 3
        for w in range(num_qubits - 1):
            qc.cx(w, w + 1)
        qc.cx(num_qubits - 1, 0)
    return qc, list(x), list(theta)


def amplitude_parameters(circuit: QuantumCircuit) -> list | None:
    """The parameters of a leading ``ParameterizedInitialize`` in amplitude order (``None`` when
    the circuit has no amplitude encoding). A circuit with one needs its data bound *before* it
    can be transpiled: the instruction has no definition while its parameters are free."""
    if not circuit.data:
        return None
    op = circuit.data[0].operation
    if op.name != "ParameterizedInitialize":
        return None
    return list(op.params)


def bind_amplitude_encoding(
    circuit: QuantumCircuit, input_params: Any, values: Any
) -> QuantumCircuit:
    """Replace the leading ``ParameterizedInitialize`` by a ``StatePreparation`` of one sample.

    The data-dependent part becomes a concrete (transpilable) state preparation; every other
    parameter (the weights) stays symbolic, so the transpiled circuit of a sample can be cached by
    the sample's content and reused for any weights (teacher, unlearned model, oracle).
    ``StatePreparation`` (not ``Initialize``) is used: it starts from |0…0⟩ without resets, which
    is what a device does at the start of a circuit anyway.

    Args:
        circuit: a circuit whose first instruction is a ``ParameterizedInitialize``.
        input_params: the circuit's input parameters, in the order of ``values``.
        values: one sample's input values (any nonzero real vector; it is normalised).

    Returns:
        A new circuit with the same qubits and the remaining parameters unbound.

    Raises:
        BadInputError: no amplitude encoding, a value count mismatch, or a zero vector.
    """
    from qiskit.circuit.library import StatePreparation

    amp_params = amplitude_parameters(circuit)
    if amp_params is None:
        raise BadInputError("the circuit does not start with an amplitude encoding")
    values = np.asarray(values, dtype=np.float64).ravel()
    if len(values) != len(input_params):
        raise BadInputError(f"expected {len(input_params)} input values, got {len(values)}")
    position = {p: i for i, p in enumerate(input_params)}
    try:
        amps = values[[position[p] for p in amp_params]]
    except KeyError as exc:
        raise BadInputError(
            "the amplitude encoding uses a parameter that is not among the input parameters"
        ) from exc
    norm = np.linalg.norm(amps)
    if not norm > 0:
        raise BadInputError("cannot amplitude-encode a zero vector")
    out = circuit.copy_empty_like()
    first = circuit.data[0]
    out.append(StatePreparation(amps / norm), first.qubits)
    for inst in circuit.data[1:]:
        out.append(inst)
    return out
