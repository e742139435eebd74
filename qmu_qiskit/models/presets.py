"""Models of the QMU and DG-QMU studies (docs/reference.md §1), registered in the model registry.

* ``qmu-basic`` — QMU basic QNN: PCA(256) amplitudes → qmu circuit (L = 10) → Linear(8→C);
  weights N(0, 1) (Su et al., arXiv 2509.06086; code Sujun124/QMU ``QNN/``).
* ``qmu-hybrid`` — QMU HQNN: Conv(1→5, k5, p2) ReLU MaxPool2 → Linear(980→256) → LeakyReLU(0.01)
  → L2 normalise → qmu circuit (L = 1) → Linear(8→C); weights U(−π, π) (``HQNN.py``).
* ``dgqmu`` — DG-QMU classifier: 4 angles in [0, π] → dgqmu circuit (6 qubits, 72 weights) →
  softmax over the first C ⟨Z⟩ (Malik et al., arXiv 2601.04413).

Loaded by the model registry (:data:`qmu_qiskit.models.hybrid.MODELS`) with the built-ins.
"""

from __future__ import annotations

from torch import nn

from ..exceptions import BadInputError
from .hybrid import (
    HybridModel,
    L2Normalize,
    ModelInfo,
    quantum_layer,
    register_model,
    seeded_classical,
)


class SelectZ(nn.Module):
    """The first ``num_classes`` expectation values ⟨Z_0⟩ … ⟨Z_{C−1}⟩ used directly as logits
    (DG-QMU: "Z expectations → softmax"; the softmax is the loss's / the metrics')."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = int(num_classes)

    def forward(self, z):
        return z[..., : self.num_classes]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


def _qmu_basic(spec, num_classes, executor, generator) -> HybridModel:
    from ..circuits import qmu_circuit

    circuit, x, w = qmu_circuit(spec.layers, spec.qubits)
    quantum, width = quantum_layer(
        circuit,
        x,
        w,
        executor=executor,
        readout=spec.readout,
        input_gradients=False,
        generator=generator,
        init="normal",
    )
    head = seeded_classical(generator, lambda: nn.Sequential(nn.Linear(width, num_classes)))
    return HybridModel(quantum, head)


def _qmu_hybrid(spec, num_classes, executor, generator) -> HybridModel:
    from ..circuits import qmu_circuit

    n = spec.qubits
    pooled = spec.image_side // 2
    flat = 5 * pooled * pooled  # 980 for 28×28 MNIST
    encoder = seeded_classical(
        generator,
        lambda: nn.Sequential(
            nn.Conv2d(1, 5, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(flat, 2**n),
            nn.LeakyReLU(0.01),
            L2Normalize(),
        ),
    )
    circuit, x, w = qmu_circuit(spec.layers, n)
    quantum, width = quantum_layer(
        circuit,
        x,
        w,
        executor=executor,
        readout=spec.readout,
        input_gradients=True,
        generator=generator,
        init="uniform_pi",
    )
    head = seeded_classical(generator, lambda: nn.Sequential(nn.Linear(width, num_classes)))
    return HybridModel(quantum, head, encoder)


def _dgqmu(spec, num_classes, executor, generator) -> HybridModel:
    from ..circuits import dgqmu_circuit

    if spec.readout != "estimator":
        raise BadInputError("the dgqmu model reads Z expectations; use --readout estimator")
    n = spec.qubits
    circuit, x, w = dgqmu_circuit(n, DGQMU_FEATURES, reps=spec.layers)
    quantum, width = quantum_layer(
        circuit,
        x,
        w,
        executor=executor,
        readout="estimator",
        input_gradients=False,
        generator=generator,
    )
    if num_classes <= width:
        head = nn.Sequential(SelectZ(num_classes))
    else:
        # More classes than qubits (Covertype: 7 > 6): a linear map from the n ⟨Z⟩ to C logits.
        head = seeded_classical(generator, lambda: nn.Sequential(nn.Linear(width, num_classes)))
    return HybridModel(quantum, head)


#: DG-QMU's input width (Iris; Covertype reduced by PCA).
DGQMU_FEATURES = 4

register_model(
    ModelInfo(
        name="qmu-basic",
        input_kind="amplitude",
        default_qubits=8,
        default_layers=10,
        source="QMU basic QNN: PCA(2^n) amplitudes → U3 layers + CNOT ring (L=10) → Linear(n→C)",
        build=_qmu_basic,
        features=lambda qubits: 2**qubits,
    )
)
register_model(
    ModelInfo(
        name="qmu-hybrid",
        input_kind="image",
        default_qubits=8,
        default_layers=1,
        source="QMU HQNN: Conv(1→5,k5) ReLU MaxPool → Linear(→2^n) LeakyReLU → L2 → qmu(L=1) → Linear",
        build=_qmu_hybrid,
        features=lambda qubits: None,
    )
)
register_model(
    ModelInfo(
        name="dgqmu",
        input_kind="angles",
        default_qubits=6,
        default_layers=3,
        source="DG-QMU: 4 angles → [RY + CX–RZ–CX encoding, (RY RZ, CNOT ring)×3]×2 → softmax ⟨Z⟩",
        build=_dgqmu,
        features=lambda qubits: DGQMU_FEATURES,
    )
)
