"""The IBM Runtime engine: qiskit-ibm-runtime primitives in a Session or Batch.

The same code path serves ``ibm_<device>`` (the service) and ``fake_<device>`` (the runtime's
local testing mode on a fake backend, offline): ISA circuits transpiled for the device's target,
runtime ``EstimatorV2``/``SamplerV2`` primitives opened in a ``Session`` (iterative training) or a
``Batch`` (evaluation sweeps), every job tagged with the run id and recorded in the job ledger,
and finished jobs retrieved by id (``service.job(id)``) after a crash instead of paid for again.
The account, devices and primitive classes come from :mod:`qmu_qiskit.backends.runtime`.

Error mitigation (``resilience_level``, ``dynamical_decoupling``, ``twirling``, ``zne``) is set
on every primitive in both modes, so what a run asked for is visible on the primitive and in the
run's ``execution`` record; in local testing mode the simulator ignores it (qiskit-ibm-runtime
says so with a warning), and :meth:`RuntimeRunner.describe` records that it had no effect.

Data-dependent circuits (one transpiled circuit per sample) go out as many PUBs in one job
(:meth:`RuntimeRunner.submit_estimate_pubs`): a runtime job costs seconds of fixed overhead
(docs/measurements.md: ~2.7 s per tiny local-mode job), so one job per sample is never an option.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..backends import RUNTIME_OPTIONS  # what this runner understands; anything else is refused
from ..backends import runtime as _service
from ..exceptions import BackendError, BadInputError
from .runner_base import Handle, Prepared, Pub, Runner


def _primitive_classes():
    # looked up on the service module each time, so that it can be swapped there (tests spy on it)
    return _service._primitive_classes()


def runtime_service():
    return _service.runtime_service()


#: Of RUNTIME_OPTIONS, the error-mitigation ones (passed to the primitive; no effect in local mode).
MITIGATION_OPTIONS = ("resilience_level", "dynamical_decoupling", "twirling", "zne")


def _apply_options(prim, options: dict, *, estimator: bool, tags: list[str]) -> None:
    """Pass error-mitigation and execution options through to the runtime primitive."""
    opts = prim.options
    try:
        opts.environment.job_tags = tags
    except Exception:
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
    shots: int  # always given: a runtime job needs a shot count
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
    kind = "runtime"

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
        except Exception:
            return True
        if details and str(details.get("state", "")).lower() in ("closed", "expired", "inactive"):
            return False
        return True

    def close(self) -> None:
        if self._mode is not None:
            try:
                self._mode.close()
            except Exception:
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

    def submit_estimate(
        self, prepared, observables, values, *, precision, seed, shots=None
    ) -> Handle:
        return self.submit_estimate_pubs(
            [Pub(prepared, values, observables)], precision=precision, seed=seed, shots=shots
        )

    def submit_estimate_pubs(self, pubs, *, precision, seed, shots=None) -> Handle:
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
        shots = int(shots or self.shots)

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
                raise BackendError(
                    "sampling needs a measured circuit; add measurements (measure_all)"
                )
            if pub.state is not None:
                raise BackendError(
                    "ideal amplitude loading is an Aer emulation mode, not a runtime one"
                )
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
            except Exception:
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
    evs = [np.asarray(r.data.evs, dtype=float) for r in res]
    stds = [np.asarray(r.data.stds, dtype=float) for r in res]
    evs = [e.reshape(e.shape[0], -1) for e in evs]
    stds = [s.reshape(s.shape[0], -1) for s in stds]
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
