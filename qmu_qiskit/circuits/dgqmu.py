"""The DG-QMU circuit (Malik, Khalid, Faryad, "Distribution-Guided and Constrained Quantum Machine
Unlearning", arXiv 2601.04413; no public code; docs/reference.md §1).

What the paper fixes: 6 qubits, 4 features scaled to [0, π], an encoding of "RY per qubit plus
CX–RZ–CX entangling blocks, uploaded twice", a variational block of "RY RZ on every qubit + CNOT
ring, 3 repetitions", 72 trainable parameters, Z-expectation readout and a softmax.

How we read it (the project's formulation, documented because the paper leaves it open):

* One variational repetition has 2·6 = 12 angles, so 3 repetitions have 36; the 72 of the paper
  are matched by data re-uploading in which *each* upload is followed by its own 3-repetition
  variational block: ``[encode → (RY RZ, ring) × 3] × 2`` = 2·3·12 = 72. (Reading the encoding
  as uploaded twice before a single 36-angle block would give 36.)
* Encoding: RY(x_{w mod 4}) on qubit w (the 4 features cycle over the 6 qubits), then for each
  neighbouring pair (w, w+1), w = 0 … n−2, the block CX(w, w+1) · RZ(x_{w mod 4}) on w+1 ·
  CX(w, w+1) — a ZZ rotation exp(−i x/2 Z_w Z_{w+1}) driven by the control qubit's feature. The
  angle is kept affine in the features (not ZZFeatureMap's product (π−x_i)(π−x_j)) so the exact
  engine and its adjoint gradients apply.
* Ring: CX(0,1) … CX(n−2, n−1), CX(n−1, 0), as in the QMU circuit.
"""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

from ..exceptions import BadInputError


def dgqmu_circuit(
    num_qubits: int = 6, num_features: int = 4, reps: int = 3, uploads: int = 2
) -> tuple[QuantumCircuit, list, list]:
    """DG-QMU's re-uploading classifier circuit (see the module doc for the reading).

    Args:
        num_qubits: n ≥ 2 (DG-QMU: 6).
        num_features: input features f ≥ 1 (DG-QMU: 4, scaled to [0, π] by the data layer).
        reps: variational repetitions after each upload (DG-QMU: 3).
        uploads: how often the data is encoded (DG-QMU: 2).

    Returns:
        ``(circuit, input_params, weight_params)``; ``uploads·reps·2n`` weights (72 for the
        defaults), upload-major, then repetition, then qubit, then (RY, RZ).

    Example:
        >>> qc, x, w = dgqmu_circuit()
        >>> len(x), len(w)
        (4, 72)
    """
    if num_qubits < 2 or num_features < 1 or reps < 1 or uploads < 1:
        raise BadInputError(
            "the dgqmu circuit needs ≥ 2 qubits and ≥ 1 feature, repetition and upload; got "
            f"{num_qubits} qubits, {num_features} features, {reps} reps, {uploads} uploads"
        )
    x = ParameterVector("x", num_features)
    theta = ParameterVector("theta", 2 * num_qubits * reps * uploads)
    qc = QuantumCircuit(num_qubits, name=f"dgqmu_{num_qubits}x{reps}x{uploads}")
    k = 0
    for _ in range(uploads):
        for w in range(num_qubits):
            qc.ry(x[w % num_features], w)
        for w in range(num_qubits - 1):
            qc.cx(w, w + 1)
            qc.rz(x[w % num_features], w + 1)
            qc.cx(w, w + 1)
        for _ in range(reps):
            for w in range(num_qubits):
                qc.ry(theta[k], w)
                qc.rz(theta[k + 1], w)
                k += 2
            for w in range(num_qubits - 1):
                qc.cx(w, w + 1)
            if num_qubits > 2:
                qc.cx(num_qubits - 1, 0)
    return qc, list(x), list(theta)
