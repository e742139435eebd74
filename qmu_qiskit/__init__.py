"""qmu-qiskit: train, unlearn and audit hybrid quantum-classical classifiers.

Importing the package is cheap and has no side effects: Qiskit, Aer and torch are imported by
the modules that need them, not here.
"""

from __future__ import annotations

__version__ = "0.1.0"

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
