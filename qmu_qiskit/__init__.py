"""qmu-qiskit: train, unlearn and audit hybrid quantum-classical classifiers.

Importing the package is cheap and has no side effects: Qiskit, Aer and torch are imported by
the modules that need them, not here.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .exceptions import (  # noqa: F401  (re-exported)
    BackendError,
    BadInputError,
    CheckpointError,
    CredentialsError,
    DataError,
    JobError,
    QmuError,
    RunError,
)

if TYPE_CHECKING:
    from .models.hybrid import HybridModel


def load_model(run_dir: str | os.PathLike, **kwargs: Any) -> HybridModel:
    """A run's trained or unlearned model, ready for ``model.predict(X)``; see
    :func:`qmu_qiskit.loading.load_model` (imported on first use: it needs torch and Qiskit)."""
    from .loading import load_model as _load_model

    return _load_model(run_dir, **kwargs)
