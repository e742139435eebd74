"""Hybrid quantum-classical models: the studies' models, models from your own circuit, and
loading a trained model for prediction.

Example:
    >>> from qmu_qiskit.models import from_circuit, load_model   # doctest: +SKIP
"""

from __future__ import annotations

from .circuit import from_circuit
from .hybrid import MODELS, HybridModel, ModelInfo, get_model_info, register_model
from .loading import load_model

__all__ = [
    "MODELS",
    "HybridModel",
    "ModelInfo",
    "from_circuit",
    "get_model_info",
    "load_model",
    "register_model",
]
