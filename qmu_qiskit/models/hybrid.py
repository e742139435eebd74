"""Hybrid quantum-classical models of the studies (docs/reference.md §1) and their registry.

A :class:`HybridModel` is ``encoder → quantum layer → head``: an optional classical front-end
(convolutions, a projection to angles), the QNN in a ``TorchConnector``, and a classical head.
Unlearning methods see it as an ordered list of *layer groups* (:meth:`HybridModel.layer_groups`)
— what CF-k/EU-k freeze or re-initialise — and as ``features`` + a last linear layer (what the
certified-removal head works on).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np
import torch
from torch import nn

from ..exceptions import BadInputError
from ..registry import ENTRY_POINT_GROUPS, Registry

if TYPE_CHECKING:
    from ..data.features import Encoder

_M = TypeVar("_M", bound=nn.Module)


@dataclass(frozen=True)
class ModelInfo:
    """What a model needs from the data and how it is built.

    Attributes:
        name: registry name.
        input_kind: ``angles``, ``image`` or ``amplitude`` (see :mod:`qmu_qiskit.data`).
        default_qubits: qubits when the user does not choose (``None``: from the dataset).
        default_layers: variational layers L.
        source: the study that defines it.
        build: ``(spec, num_classes, executor, generator) -> HybridModel``.
    """

    name: str
    input_kind: str
    default_qubits: int | None
    default_layers: int
    source: str
    build: Callable
    features: Callable[[int], int | None] = lambda qubits: qubits


def _load_builtins() -> None:
    # The papers' models (presets) and the from-circuit model register themselves on import.
    from . import circuit as _circuit  # noqa: F401
    from . import presets as _presets  # noqa: F401


#: Every hybrid model by name: the built-ins, then installed plugins (entry-point group
#: ``qmu_qiskit.models``), loaded on first use.
MODELS: Registry[ModelInfo] = Registry(
    "model",
    group=ENTRY_POINT_GROUPS["model"],
    builtins=_load_builtins,
    hint="see `qmu-qiskit models`",
)


def register_model(info: ModelInfo) -> ModelInfo:
    """Register a model under ``info.name``; a plugin calls it in its ``qmu_qiskit.models``
    entry-point module, and the model appears in ``qmu-qiskit models`` and ``train --model``."""
    return MODELS.register(info.name, info)


def get_model_info(name: str) -> ModelInfo:
    if name not in MODELS:
        raise BadInputError(f"unknown model {name!r}; use one of: {', '.join(sorted(MODELS))}")
    return MODELS[name]


class PiTanh(nn.Module):
    """π·tanh: maps a real projection to rotation angles in (−π, π) (HQML conv model)."""

    def forward(self, x):
        return math.pi * torch.tanh(x)


class L2Normalize(nn.Module):
    """Row-wise L2 normalisation (QMU HQNN, before amplitude encoding)."""

    def forward(self, x):
        return nn.functional.normalize(x, dim=-1, eps=1e-12)


class HybridModel(nn.Module):
    """``encoder → quantum → head``.

    Args:
        quantum: the :class:`~qmu_qiskit.models.qnn.QuantumLayer`.
        head: classical layers after the quantum layer (ending in a Linear to the classes).
        encoder: classical layers before it (``None``: inputs go straight to the circuit).
    """

    def __init__(self, quantum: nn.Module, head: nn.Sequential, encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else nn.Identity()
        self.quantum = quantum
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the last linear layer: the fixed features of a convex head."""
        h = self.quantum(self.encoder(x))
        for layer in list(self.head)[:-1]:
            h = layer(h)
        return h

    @property
    def last_linear(self) -> nn.Linear:
        return cast(nn.Linear, list(self.head)[-1])  # every head ends in its output Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.quantum(self.encoder(x)))

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """Parameterised layers from the input side to the output, as CF-k / EU-k count them:
        each encoder layer with weights, the quantum layer, each head layer with weights."""
        groups: list[tuple[str, nn.Module]] = []
        if not isinstance(self.encoder, nn.Identity):
            for name, mod in self.encoder.named_children():
                if any(True for _ in mod.parameters(recurse=False)):
                    groups.append((f"encoder.{name}", mod))
        groups.append(("quantum", self.quantum))
        for name, mod in self.head.named_children():
            if any(True for _ in mod.parameters(recurse=False)):
                groups.append((f"head.{name}", mod))
        return groups

    # ------------------------------------------------------------------ prediction
    #: Set by :func:`qmu_qiskit.load_model`: the run's input encoding (fitted on its
    #: training split), so :meth:`predict` takes raw records; ``None``: inputs are encoded.
    preprocess: Encoder | None = None
    #: Class names in label order, when known (set by ``load_model``).
    class_names: tuple[str, ...] | None = None

    def predict_proba(self, X, *, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (softmax of the logits) of ``X``.

        Args:
            X: records as a numpy array or tensor: raw records as in the data source for a model
                from :func:`~qmu_qiskit.load_model` (its encoding is applied), else the
                encoded model inputs (e.g. angles).
            batch_size: records per circuit job.

        Returns:
            ``(N, num_classes)`` float64 probabilities.
        """
        if hasattr(X, "detach"):
            X = X.detach().cpu().numpy()
        X = np.asarray(X)
        if self.preprocess is not None:
            X = self.preprocess.transform(X)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if batch_size < 1:
            raise BadInputError(f"batch_size must be ≥ 1, got {batch_size}")
        was_training = self.training
        self.eval()
        out = []
        try:
            with torch.no_grad():
                for start in range(0, len(X), batch_size):
                    logits = self(torch.from_numpy(X[start : start + batch_size]))
                    out.append(torch.softmax(logits.double(), dim=-1).numpy())
        finally:
            self.train(was_training)
        width = self.last_linear.out_features
        return np.concatenate(out) if out else np.empty((0, width))

    def predict(self, X, *, batch_size: int = 256) -> np.ndarray:
        """Predicted labels (``0..C-1``, the index into :attr:`class_names`) of ``X``; see
        :meth:`predict_proba` for what ``X`` is."""
        return self.predict_proba(X, batch_size=batch_size).argmax(axis=1).astype(np.int64)

    def quantum_parameters(self) -> list[nn.Parameter]:
        return list(self.quantum.parameters())

    def classical_parameters(self) -> list[nn.Parameter]:
        qp = {id(p) for p in self.quantum.parameters()}
        return [p for p in self.parameters() if id(p) not in qp]


# ---------------------------------------------------------------------------------------------
# builders


def _z_observables(n: int):
    from qiskit.quantum_info import SparsePauliOp

    return [SparsePauliOp.from_sparse_list([("Z", [w], 1.0)], num_qubits=n) for w in range(n)]


def quantum_layer(
    circuit,
    input_params,
    weight_params,
    *,
    executor,
    readout: str,
    input_gradients: bool,
    generator: torch.Generator,
    init: str = "uniform_2pi",
):
    """The QNN (Z on each qubit, or outcome probabilities) in a fusing ``TorchConnector``.

    ``init``: ``uniform_2pi`` — U[0, 2π) (HQML); ``uniform_pi`` — U(−π, π) (QMU HQNN);
    ``normal`` — N(0, 1) (QMU basic QNN).
    """
    from .qnn import FusedEstimatorQNN, FusedSamplerQNN, QuantumLayer

    n = circuit.num_qubits
    qnn: FusedEstimatorQNN | FusedSamplerQNN
    if readout == "estimator":
        qnn = FusedEstimatorQNN(
            executor=executor,
            circuit=circuit,
            observables=_z_observables(n),
            input_params=input_params,
            weight_params=weight_params,
            input_gradients=input_gradients,
        )
        outputs = n
    elif readout == "sampler":
        measured = circuit.copy()
        measured.measure_all()
        qnn = FusedSamplerQNN(
            executor=executor,
            circuit=measured,
            input_params=input_params,
            weight_params=weight_params,
            input_gradients=input_gradients,
        )
        outputs = 2**n
    else:
        raise BadInputError(f"unknown readout {readout!r}; use estimator or sampler")
    num = len(weight_params)
    if init == "uniform_2pi":
        w = torch.rand(num, generator=generator, dtype=torch.float64) * 2 * math.pi
    elif init == "uniform_pi":
        w = (torch.rand(num, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    elif init == "normal":
        w = torch.randn(num, generator=generator, dtype=torch.float64)
    else:
        raise BadInputError(f"unknown weight init {init!r}")
    return QuantumLayer(qnn, initial_weights=w.numpy()), outputs


def seeded_classical(generator: torch.Generator, build: Callable[[], _M]) -> _M:
    """Build torch layers with their default initialisation drawn from ``generator``'s stream,
    without touching the global RNG (STYLE: no global seeding)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _hqml_tabular(spec, num_classes, executor, generator, *, deep: bool) -> HybridModel:
    from ..circuits import hqml_circuit

    n, layers = spec.qubits, spec.layers
    circuit, x, w = hqml_circuit(n, layers)
    quantum, width = quantum_layer(
        circuit,
        x,
        w,
        executor=executor,
        readout=spec.readout,
        input_gradients=False,
        generator=generator,
    )
    if deep:
        head = seeded_classical(
            generator,
            lambda: nn.Sequential(
                nn.Linear(width, 32),
                nn.BatchNorm1d(32),
                nn.ELU(),
                nn.Linear(32, 32),
                nn.BatchNorm1d(32),
                nn.ELU(),
                nn.Linear(32, 16),
                nn.ELU(),
                nn.Dropout(0.2),
                nn.Linear(16, num_classes),
            ),
        )
    else:
        head = seeded_classical(
            generator,
            lambda: nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, num_classes)),
        )
    return HybridModel(quantum, head)


def _hqml_conv(spec, num_classes, executor, generator) -> HybridModel:
    from ..circuits import hqml_circuit

    n, layers = spec.qubits, spec.layers
    side = spec.image_side
    flat = 32 * (side // 4) * (side // 4)
    encoder = seeded_classical(
        generator,
        lambda: nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(flat, n),
            PiTanh(),
        ),
    )
    circuit, x, w = hqml_circuit(n, layers)
    quantum, width = quantum_layer(
        circuit,
        x,
        w,
        executor=executor,
        readout=spec.readout,
        input_gradients=True,
        generator=generator,
    )
    head = seeded_classical(
        generator,
        lambda: nn.Sequential(nn.Linear(width, 32), nn.ReLU(), nn.Linear(32, num_classes)),
    )
    return HybridModel(quantum, head, encoder)


register_model(
    ModelInfo(
        name="hqml-shallow",
        input_kind="angles",
        default_qubits=None,
        default_layers=2,
        source="HQML Iris shallow: hqml(n, L=2) → Linear(n→16) → ReLU → Linear(16→C)",
        build=lambda spec, c, ex, g: _hqml_tabular(spec, c, ex, g, deep=False),
    )
)
register_model(
    ModelInfo(
        name="hqml-deep",
        input_kind="angles",
        default_qubits=None,
        default_layers=6,
        source="HQML Iris deep: hqml(n, L=6) → 32 BN ELU → 32 BN ELU → 16 ELU Dropout(0.2) → C",
        build=lambda spec, c, ex, g: _hqml_tabular(spec, c, ex, g, deep=True),
    )
)
register_model(
    ModelInfo(
        name="hqml-pca",
        input_kind="angles",
        default_qubits=8,
        default_layers=2,
        source="HQML PCA model: PCA angles → hqml(n, L=2) → Linear(n→16) → ReLU → Linear(16→C)",
        build=lambda spec, c, ex, g: _hqml_tabular(spec, c, ex, g, deep=False),
    )
)
register_model(
    ModelInfo(
        name="hqml-conv",
        input_kind="image",
        default_qubits=8,
        default_layers=2,
        source="HQML conv model: 2×(Conv ReLU MaxPool) → Linear(→n) → π·tanh → hqml(n, L=2) → 32 → C",
        build=_hqml_conv,
        features=lambda qubits: None,
    )
)


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model choice (what ``config.yaml`` records)."""

    name: str
    qubits: int
    layers: int
    readout: str = "estimator"
    image_side: int = 28
    #: ``circuit`` model only: where the circuit comes from, its fingerprint, the head, the
    #: name of the input ParameterVector, and the run directory holding its QPY copy.
    circuit: str | None = None
    circuit_sha256: str | None = None
    head: str | None = None
    input_params: str | None = None
    circuit_dir: str | None = None


def build_model(spec: ModelSpec, *, num_classes: int, executor, seed: int) -> HybridModel:
    """Build a model with its initial weights drawn from ``seed``.

    Raises:
        BadInputError: unknown model, or a qubit/layer count it cannot use.
    """
    info = get_model_info(spec.name)
    if spec.qubits < 1 or spec.layers < 1:
        raise BadInputError(f"model {spec.name} needs qubits ≥ 1 and layers ≥ 1")
    generator = torch.Generator().manual_seed(int(seed))
    return info.build(spec, num_classes, executor, generator)


def count_parameters(model: HybridModel) -> dict:
    quantum = sum(p.numel() for p in model.quantum.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"quantum": quantum, "classical": total - quantum, "total": total}


def numpy_weights(model: nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().cpu().numpy().ravel() for p in model.parameters()])
