"""Execution: everything that runs circuits (see docs/execution.md).

The public facade is :func:`primitives_for`: qmu-qiskit's batching V2 primitives and
qiskit-machine-learning gradient objects for any backend name the CLI accepts, to hand to a
user's own ``EstimatorQNN``, ``SamplerQNN``, ``VQC`` or ``NeuralNetworkClassifier``::

    from qmu_qiskit.execution import primitives_for

    p = primitives_for("aer")                      # or "aer_noisy:ibm_brisbane", "fake_manila"
    qnn = EstimatorQNN(circuit=..., estimator=p.estimator, gradient=p.estimator_gradient, ...)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports only when used
    from .executor import Executor

__all__ = ["Primitives", "primitives_for", "Executor"]


@dataclass
class Primitives:
    """The primitives and gradients of one backend, sharing one executor.

    Attributes:
        executor: the :class:`~qmu_qiskit.execution.executor.Executor` (its ``cost`` counts the
            jobs, its ``describe()`` says how they ran).
        estimator: a ``BaseEstimatorV2`` (:class:`~.primitives.BatchingEstimator`).
        sampler: a ``BaseSamplerV2`` (:class:`~.primitives.BatchingSampler`).
        estimator_gradient: a qiskit-machine-learning ``BaseEstimatorGradient`` (exact adjoint on
            the exact engine, one-job parameter shift elsewhere).
        sampler_gradient: a qiskit-machine-learning ``BaseSamplerGradient``.
    """

    executor: Any
    estimator: Any = field(init=False)
    sampler: Any = field(init=False)
    estimator_gradient: Any = field(init=False)
    sampler_gradient: Any = field(init=False)

    def __post_init__(self) -> None:
        self.estimator = self.executor.estimator()
        self.sampler = self.executor.sampler()
        self.estimator_gradient = self.executor.estimator_gradient()
        self.sampler_gradient = self.executor.sampler_gradient()

    def close(self) -> None:
        """Close the runtime session (if any) and the job ledger."""
        self.executor.close()

    def __enter__(self) -> Primitives:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def primitives_for(
    backend: str,
    *,
    engine: str | None = None,
    shots: int | None = None,
    seed: int | None = None,
    ledger: str | os.PathLike | None = None,
    noise_scale: float = 1.0,
    runtime_options: dict | None = None,
) -> Primitives:
    """qmu-qiskit's V2 primitives and gradients for a backend name.

    Args:
        backend: ``aer``, ``aer_noisy`` / ``aer_noisy:PROFILE``, ``fake_<device>`` or
            ``ibm_<device>`` (as ``--backend`` of the CLI).
        engine: ``exact`` (default) or ``aer``; only for the noiseless ``aer`` backend.
        shots: shots per circuit evaluation (default: exact values where the backend allows,
            1024 on ``fake_*``/``ibm_*``).
        seed: base seed of every simulator job and every drawn shot (default 0).
        ledger: path of a job ledger (SQLite) recording every job; finished jobs are read back
            instead of run again (default: jobs are counted, not recorded).
        noise_scale: multiplies the device noise of ``aer_noisy``.
        runtime_options: IBM Runtime options (``mode``, ``resilience_level``, ...).

    Raises:
        BackendError: an unknown backend name (the message lists the valid ones).
        BadInputError: an engine for a backend other than ``aer``, or invalid shots.
    """
    from ..backends import parse_backend
    from ..exceptions import BadInputError
    from .executor import Executor

    spec = parse_backend(backend)
    if engine is not None and spec.kind != "aer":
        raise BadInputError(
            f"engine {engine!r} applies to the noiseless 'aer' backend only, not {spec.name}; "
            "leave engine unset"
        )
    executor = Executor(
        spec,
        engine=engine or "exact",
        shots=shots,
        seed=0 if seed is None else int(seed),
        ledger=ledger,
        noise_scale=noise_scale,
        runtime_options=runtime_options,
    )
    return Primitives(executor)


def __getattr__(name: str) -> Any:
    if name == "Executor":
        from .executor import Executor

        return Executor
    raise AttributeError(name)
