"""Hybrid quantum-classical models: the papers' models (:mod:`.presets`) and models from your
own circuit (:mod:`.circuit`). Loading a trained run's model for prediction is
:func:`qmu_qiskit.load_model` (it reads a run directory, a layer above this one).

Example:
    >>> from qmu_qiskit.models import from_circuit   # doctest: +SKIP
"""

from __future__ import annotations

from .circuit import from_circuit
from .hybrid import MODELS, HybridModel, ModelInfo, get_model_info, register_model

__all__ = [
    "MODELS",
    "HybridModel",
    "ModelInfo",
    "from_circuit",
    "get_model_info",
    "register_model",
]
