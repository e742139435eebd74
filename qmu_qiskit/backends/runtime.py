"""IBM Quantum through qiskit-ibm-runtime: the account, devices and primitive classes.

``ibm_<device>`` (the service) and ``fake_<device>`` (the runtime's local testing mode on a fake
backend, offline) share one code path. This module holds the service side — the account, the
device lookup, the runtime primitive and Session/Batch classes; the runner that submits jobs with
them lives beside the other engines
(:class:`~qmu_qiskit.execution.runtime_runner.RuntimeRunner`, also importable from here).

Accounts are discovered in qiskit-ibm-runtime's documented order: the ``QISKIT_IBM_TOKEN``
(+ ``QISKIT_IBM_INSTANCE``, ``QISKIT_IBM_CHANNEL``) environment variables, else the saved default
account. A token is never accepted on the command line, and never written to run directories,
ledgers or logs: only backend names, job ids and session ids are.

qiskit-ibm-runtime 0.51 deprecates ``EstimatorV2``/``SamplerV2`` for the executor-based
primitives, which fail in local mode on large fake devices (performance.md); the code here uses
only the ``BaseEstimatorV2``/``BaseSamplerV2`` interface of whichever class it is given.
"""

from __future__ import annotations

import os
import threading
import warnings

from ..exceptions import BackendError, CredentialsError

_service_lock = threading.Lock()
_service = None

CREDENTIALS_HINT = (
    "set QISKIT_IBM_TOKEN (and QISKIT_IBM_INSTANCE) in the environment, or save an account once "
    "with QiskitRuntimeService.save_account(...); tokens are never taken on the command line"
)


def runtime_service():
    """The ``QiskitRuntimeService`` of this process (created once).

    Raises:
        CredentialsError: no account in the environment or saved, or the service refused it.
    """
    global _service
    with _service_lock:
        if _service is not None:
            return _service
        from qiskit_ibm_runtime import QiskitRuntimeService

        token = os.environ.get("QISKIT_IBM_TOKEN")
        kwargs = {}
        if token:
            kwargs["token"] = token
            kwargs["channel"] = os.environ.get("QISKIT_IBM_CHANNEL", "ibm_quantum_platform")
            if os.environ.get("QISKIT_IBM_INSTANCE"):
                kwargs["instance"] = os.environ["QISKIT_IBM_INSTANCE"]
        import logging

        # qiskit-ibm-runtime logs account discovery at WARNING level ("Loading account with the
        # given token ..."); keep stderr to our one line.
        runtime_logger = logging.getLogger("qiskit_ibm_runtime")
        previous_level = runtime_logger.level
        runtime_logger.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _service = QiskitRuntimeService(**kwargs)
        except Exception as exc:  # noqa: BLE001 - account errors come in several types
            name = type(exc).__name__
            text = str(exc).lower()
            if not token and ("no account" in text or "accountnotfound" in name.lower() or "saved" in text):
                raise CredentialsError(f"no IBM Quantum account found; {CREDENTIALS_HINT}") from None
            if "401" in text or "unauthori" in text or "invalid" in text or "token" in text:
                raise CredentialsError(
                    f"IBM Quantum refused the account ({name}); check or renew the token, then "
                    f"{CREDENTIALS_HINT}"
                ) from None
            raise BackendError(
                f"cannot reach IBM Quantum ({name}); check the network, or use a fake_<device> "
                "backend to run offline"
            ) from None
        finally:
            runtime_logger.setLevel(previous_level)
        return _service


def ibm_backend(name: str):
    """An IBM device by name, validated against what the account can use.

    Raises:
        CredentialsError: no usable account.
        BackendError: the device is unknown or retired for this account (lists the usable ones).
    """
    service = runtime_service()
    try:
        available = sorted(b.name for b in service.backends())
    except Exception as exc:  # noqa: BLE001
        raise BackendError(f"cannot list IBM Quantum devices ({type(exc).__name__}); try again later") from None
    if name not in available:
        raise BackendError(
            f"device {name!r} is not available to this account (unknown or retired); available: "
            f"{', '.join(available) or 'none'} — or emulate it offline with aer_noisy:{name} "
            f"or fake_{name.removeprefix('ibm_')}"
        )
    return service.backend(name)


def check_ibm_backend(spec, qubits: int) -> None:
    """Fail before any run directory exists if the account or the device is unusable."""
    device = ibm_backend(spec.device)
    if qubits > device.num_qubits:
        raise BackendError(
            f"the model needs {qubits} qubits but {spec.device} has {device.num_qubits}; use a "
            "larger device or --qubits"
        )


def _primitive_classes():
    # Deprecated in 0.51 in favour of the executor-based primitives, which do not run in local
    # mode on large fake devices; both implement the BaseEstimatorV2/BaseSamplerV2 interface.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from qiskit_ibm_runtime import Batch, EstimatorV2, SamplerV2, Session
    return EstimatorV2, SamplerV2, Session, Batch


def __getattr__(name: str):
    # the runner moved to qmu_qiskit.execution.runtime_runner; keep the old import path working
    if name in ("RuntimeRunner", "MITIGATION_OPTIONS"):
        from ..execution import runtime_runner

        return getattr(runtime_runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
