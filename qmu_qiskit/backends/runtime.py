"""IBM Quantum through qiskit-ibm-runtime: the account, devices, sessions and batches.

The same code path serves ``ibm_<device>`` (the service) and ``fake_<device>`` (the runtime's
local testing mode on a fake backend, offline): ISA circuits transpiled for the device's target,
runtime ``EstimatorV2``/``SamplerV2`` primitives opened in a ``Session`` (iterative training) or a
``Batch`` (evaluation sweeps), every job tagged with the run id and recorded in the job ledger,
and finished jobs retrieved by id (``service.job(id)``) after a crash instead of paid for again.

Accounts are discovered in qiskit-ibm-runtime's documented order: the ``QISKIT_IBM_TOKEN``
(+ ``QISKIT_IBM_INSTANCE``, ``QISKIT_IBM_CHANNEL``) environment variables, else the saved default
account. A token is never accepted on the command line, and never written to run directories,
ledgers or logs: only backend names, job ids and session ids are.

qiskit-ibm-runtime 0.51 deprecates ``EstimatorV2``/``SamplerV2`` for the executor-based
primitives, which fail in local mode on large fake devices (performance.md); the code here uses
only the ``BaseEstimatorV2``/``BaseSamplerV2`` interface of whichever class it is given.

Error mitigation (``resilience_level``, ``dynamical_decoupling``, ``twirling``, ``zne``) is set
on every primitive in both modes, so what a run asked for is visible on the primitive and in the
run's ``execution`` record; in local testing mode the simulator ignores it (qiskit-ibm-runtime
says so with a warning), and :meth:`RuntimeRunner.describe` records that it had no effect.

Data-dependent circuits (one transpiled circuit per sample) go out as many PUBs in one job
(:meth:`RuntimeRunner.submit_estimate_pubs`): a runtime job costs seconds of fixed overhead
(performance.md: ~2.7 s per tiny local-mode job), so one job per sample is never an option.
"""

from __future__ import annotations

import os
import re
import threading
import warnings

import numpy as np

from ..config import RUNTIME_OPTIONS  # what this runner understands; anything else is refused
from ..exceptions import BackendError, BadInputError, CredentialsError, QmuError, echo, shorten
from ..execution.runners import Handle, Prepared, Pub, Runner

_service_lock = threading.Lock()
_service = None

CREDENTIALS_HINT = (
    "set QISKIT_IBM_TOKEN (and QISKIT_IBM_INSTANCE) in the environment, or save an account once "
    "with QiskitRuntimeService.save_account(...); tokens are never taken on the command line"
)


def _chain(exc: BaseException):
    """``exc`` and its causes/contexts (the network error behind an account error)."""
    seen = []
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
    if ("NameResolutionError" in names or "gaierror" in names or "failed to resolve" in low
            or "name or service not known" in low or "temporary failure in name resolution" in low):
        return BackendError(
            f"cannot reach IBM Quantum: the host name{where} does not resolve (no network or no "
            "DNS); check the network connection, or run offline with a fake_<device> backend"
        )
    if any(isinstance(e, (ConnectionError, TimeoutError)) for e in chain) or any(
            n in names for n in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "ProxyError",
                                 "SSLError", "MaxRetryError")):
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
        except Exception as exc:  # noqa: BLE001 - account errors come in several types
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
    except Exception as exc:  # noqa: BLE001
        mapped = service_error(exc, token=True)
        said = str(mapped)
        if isinstance(mapped, CredentialsError) or "resolve" in said or "reach" in said:
            raise mapped from exc
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


#: Of RUNTIME_OPTIONS, the error-mitigation ones (passed to the primitive; no effect in local mode).
MITIGATION_OPTIONS = ("resilience_level", "dynamical_decoupling", "twirling", "zne")


def _apply_options(prim, options: dict, *, estimator: bool, tags: list[str]) -> None:
    """Pass error-mitigation and execution options through to the runtime primitive."""
    opts = prim.options
    try:
        opts.environment.job_tags = tags
    except Exception:  # noqa: BLE001 - local mode may not carry environment options
        pass
    if "dynamical_decoupling" in options:
        opts.dynamical_decoupling.enable = bool(options["dynamical_decoupling"])
    if "twirling" in options:
        opts.twirling.enable_gates = bool(options["twirling"])
        if estimator:
            opts.twirling.enable_measure = bool(options["twirling"])
    if estimator:
        if "resilience_level" in options:
            opts.resilience_level = int(options["resilience_level"])
        if options.get("zne"):
            opts.resilience.zne_mitigation = True


class RuntimeRunner(Runner):
    """Runtime primitives in a Session (default) or Batch, local mode for ``fake_*``.

    Args:
        spec: the backend spec (``fake`` or ``ibm``).
        shots: shots per circuit evaluation.
        options: runtime options — ``mode`` (``session``/``batch``), ``max_time`` (session
            seconds), ``resilience_level``, ``dynamical_decoupling``, ``twirling``, ``zne``.
        run_id: tag of every job.

    Attributes:
        sessions_opened: how many Session/Batch objects were opened (a reopened expired session
            counts again).
        last_primitive: the runtime primitive built for the latest job (its ``options`` show
            what was passed through).
    """

    needs_transpile = True

    def __init__(self, *, spec, shots: int, options: dict | None = None, run_id: str | None = None):
        super().__init__(spec=spec, device=spec.device_backend(), shots=shots)
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(RUNTIME_OPTIONS))
        if unknown:
            raise BadInputError(
                f"unknown runtime option(s) {', '.join(unknown)}; use {', '.join(RUNTIME_OPTIONS)}"
            )
        self.mode_kind = self.options.get("mode", "session")
        if self.mode_kind not in ("session", "batch"):
            raise BackendError(f"runtime mode must be session or batch, got {self.mode_kind!r}")
        self.local = spec.kind == "fake"
        self.remote = not self.local
        self.name = f"runtime:{'local' if self.local else 'ibm'}"
        self.run_id = run_id
        self._mode = None
        self.sessions_opened = 0
        self.session_ids: list[str] = []
        self.last_primitive = None

    def describe(self) -> dict:
        out = super().describe()
        mitigation = {k: v for k, v in self.options.items() if k in MITIGATION_OPTIONS}
        out.update(
            {
                "mode": self.mode_kind,
                "local_testing_mode": self.local,
                "device": self.device.name,
                "options": {k: v for k, v in self.options.items() if k != "mode"},
                "sessions_opened": self.sessions_opened,
                "session_ids": list(self.session_ids),
            }
        )
        if self.local and mitigation:
            out["error_mitigation"] = (
                "requested but without effect: local testing mode simulates on the fake device "
                "with its noise model and applies no runtime error mitigation"
            )
        elif mitigation:
            out["error_mitigation"] = "applied by IBM Runtime"
        return out

    # ------------------------------------------------------------------ sessions
    def mode(self):
        """The open Session/Batch, reopened when it has expired or closed."""
        _, _, Session, Batch = _primitive_classes()
        if self._mode is not None and not self._usable(self._mode):
            self._mode = None
        if self._mode is None:
            cls = Session if self.mode_kind == "session" else Batch
            kwargs = {}
            if self.options.get("max_time"):
                kwargs["max_time"] = self.options["max_time"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._mode = cls(backend=self.device, **kwargs)
            self.sessions_opened += 1
            sid = getattr(self._mode, "session_id", None)
            if sid:
                self.session_ids.append(str(sid))
        return self._mode

    @staticmethod
    def _usable(mode) -> bool:
        if getattr(mode, "_active", True) is False:
            return False
        try:
            details = mode.details() if mode.session_id else None
        except Exception:  # noqa: BLE001 - unknown state: keep using it, submission will tell
            return True
        if details and str(details.get("state", "")).lower() in ("closed", "expired", "inactive"):
            return False
        return True

    def close(self) -> None:
        if self._mode is not None:
            try:
                self._mode.close()
            except Exception:  # noqa: BLE001 - closing an expired session is not an error
                pass
            self._mode = None

    # ------------------------------------------------------------------ jobs
    def prepare(self, circuit, isa, key: str, *, keep_virtual: bool = False) -> Prepared:
        layout = isa.layout

        def map_observable(op):
            return op.apply_layout(layout) if layout is not None else op

        return Prepared(source=circuit, circuit=isa, key=key, map_observable=map_observable)

    def _submit(self, make_job):
        try:
            return make_job(self.mode())
        except Exception as exc:  # a session that expired between calls: reopen once
            text = str(exc).lower()
            if "session" in text and any(k in text for k in ("closed", "expired", "inactive")):
                self._mode = None
                return make_job(self.mode())
            raise

    def _tags(self) -> list[str]:
        return ["qmu-qiskit"] + ([self.run_id] if self.run_id else [])

    def submit_estimate(self, prepared, observables, values, *, precision, seed) -> Handle:
        return self.submit_estimate_pubs(
            [Pub(prepared, values, observables)], precision=precision, seed=seed
        )

    def submit_estimate_pubs(self, pubs, *, precision, seed) -> Handle:
        """One runtime Estimator job for every pub (one ISA circuit per pub)."""
        EstimatorV2, _, _, _ = _primitive_classes()
        prim_pubs = []
        for pub in pubs:
            if pub.state is not None:
                raise BackendError(
                    "ideal amplitude loading is an Aer emulation mode; a runtime backend loads "
                    "amplitudes with the transpiled state preparation (amplitude_loading='device')"
                )
            obs = np.empty((len(pub.observables), 1), dtype=object)
            for i, op in enumerate(pub.observables):
                obs[i, 0] = op
            prim_pubs.append((pub.prepared.circuit, obs, pub.values))
        shots = self.shots

        def make(mode):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = EstimatorV2(mode=mode)
                est.options.default_shots = shots
                if self.local:
                    est.options.simulator.seed_simulator = int(seed)
                _apply_options(est, self.options, estimator=True, tags=self._tags())
                self.last_primitive = est
                return est.run(prim_pubs)

        job = self._submit(make)
        return self._handle(job, _estimates)

    def submit_sample(self, prepared, values, *, shots, seed) -> Handle:
        return self.submit_sample_pubs([Pub(prepared, values)], shots=shots, seed=seed)

    def submit_sample_pubs(self, pubs, *, shots, seed) -> Handle:
        """One runtime Sampler job for every pub."""
        _, SamplerV2, _, _ = _primitive_classes()
        for pub in pubs:
            if pub.prepared.circuit.num_clbits == 0:
                raise BackendError("sampling needs a measured circuit; add measurements (measure_all)")
            if pub.state is not None:
                raise BackendError("ideal amplitude loading is an Aer emulation mode, not a runtime one")
        prim_pubs = [(pub.prepared.circuit, pub.values) for pub in pubs]

        def make(mode):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sam = SamplerV2(mode=mode)
                sam.options.default_shots = int(shots)
                if self.local:
                    sam.options.simulator.seed_simulator = int(seed)
                _apply_options(sam, self.options, estimator=False, tags=self._tags())
                self.last_primitive = sam
                return sam.run(prim_pubs)

        job = self._submit(make)
        return self._handle(job, _samples)

    def _handle(self, job, convert) -> Handle:
        def result():
            res = job.result()
            try:
                usage = job.usage()
                handle.qpu_seconds = float(usage or 0.0)
            except Exception:  # noqa: BLE001 - local jobs report no usage
                pass
            return convert(res)

        session_id = getattr(self._mode, "session_id", None) if self._mode is not None else None
        handle = Handle(job.job_id(), result, session_id=session_id)
        return handle

    def retrieve(self, job_id: str) -> Handle:
        """A job submitted by an earlier process, fetched by id (``service.job``)."""
        service = runtime_service()
        job = service.job(job_id)
        prim = getattr(job, "primitive_id", "estimator")

        def result():
            res = job.result()
            return _samples(res) if "sampler" in str(prim) else _estimates(res)

        return Handle(job_id, result)


def _estimates(res) -> dict:
    """(O, ΣN) expectation values and standard errors of every PUB result, in PUB order."""
    evs = [np.asarray(r.data.evs, dtype=float).reshape(np.asarray(r.data.evs).shape[0], -1) for r in res]
    stds = [np.asarray(r.data.stds, dtype=float).reshape(np.asarray(r.data.stds).shape[0], -1) for r in res]
    return {"evs": np.concatenate(evs, 1), "stds": np.concatenate(stds, 1)}


def _samples(res) -> dict:
    return {"probs": np.concatenate([_probabilities(r, None) for r in res], 0)}


def _probabilities(pub_result, circuit) -> np.ndarray:
    """Outcome frequencies (N, 2**k) from a sampler PUB result's first register."""
    data = pub_result.data
    names = list(data.keys()) if hasattr(data, "keys") else []
    bits = getattr(data, names[0]) if names else pub_result.join_data()
    num_bits = bits.num_bits
    shape = bits.shape
    n = int(np.prod(shape)) if shape else 1
    flat = bits.reshape(n) if shape else bits.reshape(1)
    out = np.zeros((n, 2**num_bits))
    for i in range(n):
        counts = flat[i].get_int_counts()
        for k, c in counts.items():
            out[i, k] = c
        out[i] /= max(1, flat[i].num_shots)
    return out
