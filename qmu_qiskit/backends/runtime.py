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
primitives, which fail in local mode on large fake devices (docs/measurements.md); the code here uses
only the ``BaseEstimatorV2``/``BaseSamplerV2`` interface of whichever class it is given.
"""

from __future__ import annotations

import os
import re
import threading
import warnings

from ..exceptions import BackendError, CredentialsError, QmuError, echo, shorten

_service_lock = threading.Lock()
_service = None

CREDENTIALS_HINT = (
    "set QISKIT_IBM_TOKEN (and QISKIT_IBM_INSTANCE) in the environment, or save an account once "
    "with QiskitRuntimeService.save_account(...); tokens are never taken on the command line"
)


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and its causes/contexts (the network error behind an account error)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 12:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _http_status(exc: BaseException) -> int | None:
    for attr in ("status_code", "code", "status"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            return v
    response = getattr(exc, "response", None)
    v = getattr(response, "status_code", None)
    return v if isinstance(v, int) else None


#: What an instance may look like: a CRN (IBM Cloud), or a name / hub/group/project.
_INSTANCE_CRN = re.compile(r"^crn:v1:[A-Za-z0-9:/._-]+$")
_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _./-]{0,127}$")


def check_instance(instance: str | None) -> None:
    """Refuse a malformed ``QISKIT_IBM_INSTANCE`` before anything is sent."""
    if instance is None:
        return
    crn = instance.startswith("crn:")
    ok = (_INSTANCE_CRN if crn else _INSTANCE_NAME).match(instance)
    if not ok or (instance.startswith("crn:") and instance.count(":") < 8):
        raise CredentialsError(
            f"QISKIT_IBM_INSTANCE is malformed (got {echo(instance, 60)}); set it to the "
            "instance's CRN (crn:v1:bluemix:public:quantum-computing:<region>:a/<account>:<id>::) "
            "or its name, or unset it"
        )


def service_error(exc: BaseException, *, token: bool) -> QmuError:
    """The one-line error for a failure to open the runtime service, saying what happened:
    no network (DNS), unreachable host, refused token, unknown instance, or no account."""
    chain = _chain(exc)
    names = " ".join(type(e).__name__ for e in chain)
    text = " ".join(str(e) for e in chain)
    low = text.lower()
    host = re.search(r"host='([^']+)'", text)
    where = f" {host.group(1)}" if host else ""
    if (
        "NameResolutionError" in names
        or "gaierror" in names
        or "failed to resolve" in low
        or "name or service not known" in low
        or "temporary failure in name resolution" in low
    ):
        return BackendError(
            f"cannot reach IBM Quantum: the host name{where} does not resolve (no network or no "
            "DNS); check the network connection, or run offline with a fake_<device> backend"
        )
    if any(isinstance(e, (ConnectionError, TimeoutError)) for e in chain) or any(
        n in names
        for n in (
            "ConnectionError",
            "ConnectTimeout",
            "ReadTimeout",
            "ProxyError",
            "SSLError",
            "MaxRetryError",
        )
    ):
        return BackendError(
            f"cannot reach IBM Quantum{' at' + where if where else ''} (connection failed: "
            f"{type(chain[-1]).__name__}); check the network or proxy, or run offline with a "
            "fake_<device> backend"
        )
    status = next((s for s in map(_http_status, chain) if s is not None), None)
    # IBM Cloud IAM answers a wrong API key with 400 ("Provided API key could not be found")
    refused = status in (401, 403) or (status == 400 and "api key" in low)
    if refused or "IBMNotAuthorizedError" in names:
        return CredentialsError(
            f"IBM Quantum refused the account (HTTP {status or 401}); check or renew the token, "
            f"then {CREDENTIALS_HINT}"
        )
    if not token and ("no account" in low or "accountnotfound" in names.lower() or "saved" in low):
        return CredentialsError(f"no IBM Quantum account found; {CREDENTIALS_HINT}")
    if "instance" in low and os.environ.get("QISKIT_IBM_INSTANCE"):
        return CredentialsError(
            "IBM Quantum does not accept the instance in QISKIT_IBM_INSTANCE "
            f"({type(exc).__name__}: {shorten(exc, 120)}); check it against your IBM Cloud "
            "instances, or unset it"
        )
    if "401" in low or "unauthori" in low or "invalid" in low or "token" in low:
        return CredentialsError(
            f"IBM Quantum refused the account ({type(exc).__name__}); check or renew the token, "
            f"then {CREDENTIALS_HINT}"
        )
    return BackendError(
        f"IBM Quantum could not be used ({type(exc).__name__}: {shorten(exc, 120)}); check the "
        "account settings (QISKIT_IBM_*), or run offline with a fake_<device> backend"
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
                check_instance(os.environ["QISKIT_IBM_INSTANCE"])
                kwargs["instance"] = os.environ["QISKIT_IBM_INSTANCE"]
            if os.environ.get("QISKIT_IBM_URL"):  # another endpoint (a private deployment)
                kwargs["url"] = os.environ["QISKIT_IBM_URL"]
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
        except Exception as exc:
            raise service_error(exc, token=bool(token)) from exc
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
    except Exception as exc:
        mapped = service_error(exc, token=True)
        said = str(mapped)
        if isinstance(mapped, CredentialsError) or "resolve" in said or "reach" in said:
            raise mapped from exc
        raise BackendError(
            f"cannot list IBM Quantum devices ({type(exc).__name__}); try again later"
        ) from None
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
