"""Runners: the few ways a merged, broadcast PUB is actually executed — one per engine.

* :class:`~.exact_runner.ExactRunner` — the vectorised torch statevector of :mod:`.statevector`,
  exact values and exact (adjoint) gradients; for the noiseless ``aer`` backend.
* :class:`~.aer_runners.AerEstimatorRunner` — qiskit-aer's ``EstimatorV2`` with runtime
  parameter binding: statevector for ``aer --engine aer``, density matrix with the device noise
  for ``aer_noisy``.
* :class:`~.aer_runners.AerShotsRunner` — ``AerSimulator`` with shots and the device noise,
  readout error included, as hardware would measure.
* :class:`~.runtime_runner.RuntimeRunner` — qiskit-ibm-runtime primitives in a ``Session`` /
  ``Batch``, in local testing mode (``fake_*``) or on IBM hardware (``ibm_*``).

All implement :class:`~.runner_base.Runner` (typed results :class:`~.runner_base.Estimates` /
:class:`~.runner_base.Distributions`); :func:`make_runner` picks one for a backend. This module
re-exports them so that ``from qmu_qiskit.execution.runners import ...`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "AerEstimatorRunner",
    "AerShotsRunner",
    "DistributionCache",
    "Distributions",
    "Estimates",
    "ExactRunner",
    "Handle",
    "Prepared",
    "Pub",
    "Runner",
    "distribution_cache",
    "make_runner",
    "typed_result",
    "_AerBase",
    "_apply_confusion",
    "_marginal",
    "_measured_qubits",
    "_readout_confusions",
    "_strip_measurements",
    "_z_parities",
]

from typing import TYPE_CHECKING

from .aer_runners import (
    AerEstimatorRunner,
    AerShotsRunner,
    DistributionCache,
    _AerBase,
    _apply_confusion,
    _readout_confusions,
    _z_parities,
    distribution_cache,
)
from .exact_runner import ExactRunner

if TYPE_CHECKING:
    from ..backends import BackendSpec
from .runner_base import (
    Distributions,
    Estimates,
    Handle,
    Prepared,
    Pub,
    Runner,
    _marginal,
    _measured_qubits,
    _strip_measurements,
    typed_result,
)


def make_runner(
    spec: BackendSpec,
    *,
    engine: str = "exact",
    shots: int | None = None,
    noise_scale: float = 1.0,
    runtime_options: dict | None = None,
    run_id: str | None = None,
) -> Runner:
    """The runner of a backend: the only place that maps a backend (and engine) to a class.

    Args:
        spec: the :class:`~qmu_qiskit.backends.BackendSpec`.
        engine: ``exact`` or ``aer`` (``aer``, and ``aer_noisy`` without shots: the noisy
            exact engine of :mod:`.density` or Aer's density-matrix estimator).
        shots: shots per evaluation (``None``: exact values where the backend allows).
        noise_scale: multiplies the device noise of ``aer_noisy``.
        runtime_options: IBM Runtime options (``fake_*``/``ibm_*``).
        run_id: tag of every runtime job.
    """
    if spec.kind == "aer":
        if shots is not None:
            return AerShotsRunner(spec=spec, shots=shots)
        if engine == "exact":
            return ExactRunner(spec=spec)
        return AerEstimatorRunner(spec=spec, method="statevector")
    if spec.kind == "aer_noisy":
        device = spec.device_backend()
        if shots is not None:
            return AerShotsRunner(spec=spec, device=device, shots=shots, noise_scale=noise_scale)
        if engine == "exact":
            from .density_runner import NoisyExactRunner

            return NoisyExactRunner(spec=spec, device=device, noise_scale=noise_scale)
        return AerEstimatorRunner(
            spec=spec, device=device, method="density_matrix", noise_scale=noise_scale
        )
    from ..backends.dryrun import active

    dry_run = active()
    if dry_run is not None:  # `qmu-qiskit estimate` / --dry-run: count the jobs, submit nothing
        return dry_run.runner(spec, shots=shots or 1024, options=runtime_options, run_id=run_id)
    from .runtime_runner import RuntimeRunner

    return RuntimeRunner(spec=spec, shots=shots or 1024, options=runtime_options, run_id=run_id)
