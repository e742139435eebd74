"""Dry runs: a command's real code path against a counting runner, and a QPU-time model.

:class:`CountingRunner` is the IBM Runtime runner (:class:`~.runtime_runner.RuntimeRunner`) with
its submission replaced: ISA circuits are transpiled for the device's target, PUBs are merged and
chunked by the executor exactly as for hardware, every job is recorded in the run's job ledger —
but nothing is submitted. The job's values come from the exact noiseless engine on the abstract
circuit (qiskit-aer's statevector where the exact engine cannot run the circuit), so the command's
control flow proceeds. The counts therefore equal those of a ``fake_<device>`` run (local testing
mode) whenever the control flow does not depend on measured values; early stopping is off during a
dry run (:func:`qmu_qiskit.backends.dryrun.full_budget`), so the counts are then the full epoch
budget, an upper bound.

QPU time (:func:`job_seconds`), per job::

    ASSUMED_JOB_OVERHEAD_S + Σ_pubs  parameter sets × measurement bases × shots
                                     × (circuit duration + readout + rep_delay)

* circuit duration: the ISA circuit's critical path with the device snapshot's gate durations
  (``QuantumCircuit.estimate_duration(target)``);
* readout: the snapshot's ``measure`` duration, the longest over the measured qubits (estimator
  PUBs; a sampler circuit's own measurements are part of its duration);
* rep_delay: the snapshot's ``default_rep_delay``. IBM executes the circuits of a job column-wise
  over circuits × shots with ``rep_delay`` between circuits (IBM Quantum docs, "Qubit
  initialization" / dynamic repetition rate execution);
* measurement bases: qubit-wise commuting groups of an estimator PUB's observables (IBM's "Job
  limits": a PUB renders one circuit per parameter set and observable, "or fewer, if some
  observables commute");
* ``ASSUMED_JOB_OVERHEAD_S``: an assumption, not an IBM figure (see its comment).

Not modelled: error-mitigation overheads (the runtime Estimator's default resilience level 1
adds readout-calibration circuits; ZNE, twirling and dynamical decoupling add more), qubit reset
time, and — in session mode — the session's idle time: IBM bills a session's wall-clock time
("Workload usage"), so for a Session the figure is a lower bound of the usage.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np

from ..exceptions import BackendError, BadInputError
from .runner_base import Handle, Prepared
from .runtime_runner import RuntimeRunner

#: Fixed QPU seconds per job beyond its shots. ASSUMPTION — IBM publishes no per-job overhead.
#: Derived from IBM's own documentation example ("Estimate job run time": a one-circuit, two-qubit
#: Sampler job with the default 4096 shots reports ``usage_estimation`` 4.1 quantum seconds, of
#: which 4096 × (~5 µs + 250 µs rep_delay) ≈ 1.05 s are shots): ≈ 3 s. Check it against
#: ``job.usage_estimation`` / ``job.usage()`` of one real job before trusting a large estimate.
ASSUMED_JOB_OVERHEAD_S = 3.0

#: IBM's validation limit on executions (circuits × shots) of one Sampler job ("Job limits";
#: Estimator jobs are split by the service, so the limit does not apply to them).
SAMPLER_MAX_EXECUTIONS = 10_000_000

#: The service's maximum execution time of one job, in QPU seconds ("Maximum execution time":
#: three hours).
MAX_JOB_SECONDS = 3 * 3600

#: Where the figures come from (printed by ``qmu-qiskit estimate``).
SOURCES = {
    "rep_delay / column-wise execution": (
        "https://quantum.cloud.ibm.com/docs/guides/repetition-rate-execution"
    ),
    "usage of a job, batch and session": (
        "https://quantum.cloud.ibm.com/docs/guides/estimate-job-run-time"
    ),
    "job limits (10M Sampler executions; commuting observables)": (
        "https://quantum.cloud.ibm.com/docs/guides/job-limits"
    ),
    "maximum execution time (3 h per job)": (
        "https://quantum.cloud.ibm.com/docs/guides/max-execution-time"
    ),
}


@dataclass
class DeviceTiming:
    """The durations of one device snapshot the QPU-time model uses (seconds)."""

    name: str
    source: str
    rep_delay: float
    measure: dict = field(default_factory=dict)  # physical qubit → measure duration

    @classmethod
    def of(cls, device, source: str) -> DeviceTiming:
        conf = getattr(device, "_conf_dict", None)  # qiskit-ibm-runtime FakeBackendV2's snapshot
        rep = (conf or {}).get("default_rep_delay")
        if rep is None:
            raise BackendError(
                f"the snapshot of {device.name} has no default_rep_delay; regenerate its profile "
                "with `qmu-qiskit profiles pull NAME`"
            )
        measure = {}
        target = device.target
        if "measure" in target.operation_names:
            for qargs, props in target["measure"].items():
                if qargs is not None and props is not None and props.duration is not None:
                    measure[qargs[0]] = float(props.duration)
        if not measure:
            raise BackendError(
                f"the snapshot of {device.name} has no measurement durations; regenerate its "
                "profile with `qmu-qiskit profiles pull NAME`"
            )
        return cls(name=device.name, source=source, rep_delay=float(rep) * 1e-6, measure=measure)

    def readout(self, qubits) -> float:
        """The longest measure duration over ``qubits`` (all qubits' longest if none is known)."""
        values = [self.measure[q] for q in qubits if q in self.measure]
        return float(max(values) if values else max(self.measure.values()))


@dataclass
class JobRecord:
    """One job the dry run would submit, in the job ledger's units.

    Attributes:
        pubs: PUBs of the job.
        parameter_sets: Σ parameter sets over its PUBs.
        circuit_evaluations: parameter sets × observables (estimates) or parameter sets
            (samples): the ledger's ``circuit_evaluations``.
        shots: shots × parameter sets: the ledger's ``shots``.
        executed_circuits: parameter sets × measurement bases: circuits the QPU runs.
        executions: executed circuits × shots (IBM's job-limit unit).
        qpu_seconds: the model's estimate (overhead included).
        shot_seconds: its shot part.
    """

    job_id: str
    backend: str
    run_id: str | None
    kind: str
    mode: str
    pubs: int
    parameter_sets: int
    circuit_evaluations: int
    shots: int
    shots_per_circuit: int
    executed_circuits: int
    executions: int
    qpu_seconds: float
    shot_seconds: float
    longest_circuit_s: float

    def to_dict(self) -> dict:
        return asdict(self)


class DryRun:
    """One dry run: the devices it resolves, the runners it builds and the jobs they record.

    Args:
        job_overhead_s: the per-job overhead of the QPU-time model.
    """

    def __init__(self, *, job_overhead_s: float = ASSUMED_JOB_OVERHEAD_S):
        self.job_overhead_s = float(job_overhead_s)
        self.records: list[JobRecord] = []
        self.runners: list[CountingRunner] = []
        self.devices: dict[str, DeviceTiming] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ hooks
    def device_for(self, name: str):
        """``ibm_<device>`` → the device rebuilt from its hardware profile (no account used)."""
        from ..backends.profiles import list_profiles, load_profile

        try:
            profile = load_profile(name)
        except BadInputError:
            raise BackendError(
                f"no hardware profile for {name} (profiles: {', '.join(list_profiles())}); a dry "
                f"run takes the device's target and durations from its profile: pull one with "
                f"`qmu-qiskit profiles pull {name}` (needs an IBM Quantum account), or estimate "
                "on a fake_<device> backend"
            ) from None
        return profile.backend()

    def runner(self, spec, *, shots: int, options: dict | None, run_id: str | None):
        runner = CountingRunner(
            session=self, spec=spec, shots=shots, options=options, run_id=run_id
        )
        with self._lock:
            self.runners.append(runner)
            if spec.name not in self.devices:
                self.devices[spec.name] = DeviceTiming.of(runner.device, _device_source(spec))
        return runner

    def record(self, runner: CountingRunner, kind: str, pubs, shots: int) -> JobRecord:
        timing = self.devices[runner.spec.name]
        n = sum(len(p.values) for p in pubs)
        executed = 0
        shot_seconds = 0.0
        longest = 0.0
        for pub in pubs:
            duration, bases = _pub_timing(pub, timing, runner.device.target, kind)
            executed += len(pub.values) * bases
            shot_seconds += len(pub.values) * bases * shots * (duration + timing.rep_delay)
            longest = max(longest, duration)
        observables = len(pubs[0].observables) if kind == "estimate" else 1
        rec = JobRecord(
            job_id=f"dryrun-{uuid.uuid4().hex[:16]}",
            backend=runner.spec.name,
            run_id=runner.run_id,
            kind=kind,
            mode=runner.mode_kind,
            pubs=len(pubs),
            parameter_sets=n,
            circuit_evaluations=n * observables,
            shots=shots * n,
            shots_per_circuit=shots,
            executed_circuits=executed,
            executions=executed * shots,
            qpu_seconds=self.job_overhead_s + shot_seconds,
            shot_seconds=shot_seconds,
            longest_circuit_s=longest,
        )
        with self._lock:
            self.records.append(rec)
        return rec


def _device_source(spec) -> str:
    if spec.kind == "ibm":
        from ..backends.profiles import load_profile

        profile = load_profile(spec.device)
        date = profile.summary.get("snapshot_date")
        return f"hardware profile {profile.name}" + (f" (snapshot {date})" if date else "")
    return f"qiskit-ibm-runtime fake_provider {spec.name}"


def _op_key(op) -> tuple:
    return (tuple(op.paulis.to_labels()), np.asarray(op.coeffs).tobytes())


def _pub_timing(pub, timing: DeviceTiming, target, kind: str) -> tuple[float, int]:
    """(seconds per shot of one circuit without rep_delay, measurement bases) of a PUB."""
    prepared = pub.prepared
    cache = prepared.extra.setdefault("dry_run_timing", {})
    if "circuit" not in cache:
        cache["circuit"] = float(prepared.circuit.estimate_duration(target, unit="s"))
    if kind != "estimate":
        return cache["circuit"], 1
    key = tuple(id(op) for op in pub.observables)
    entry = cache.get(key)
    if entry is None:
        from qiskit.quantum_info import PauliList

        paulis = PauliList.from_symplectic(
            np.concatenate([op.paulis.z for op in pub.observables]),
            np.concatenate([op.paulis.x for op in pub.observables]),
        )
        support = paulis.z | paulis.x
        nontrivial = paulis[support.any(axis=1)]
        bases = len(nontrivial.group_qubit_wise_commuting()) if len(nontrivial) else 1
        measured = [int(q) for q in np.flatnonzero(support.any(axis=0))]
        entry = (cache["circuit"] + timing.readout(measured), max(1, bases))
        cache[key] = entry
    return entry


class CountingRunner(RuntimeRunner):
    """The IBM Runtime runner of a dry run: records each job instead of submitting it.

    Everything before the submission is the runtime runner's (ISA circuits on the device's
    target, observables laid out, options validated); the job is recorded by the
    :class:`DryRun` and its values are computed on the abstract circuit, noiselessly.
    """

    def __init__(self, *, session: DryRun, **kw):
        super().__init__(**kw)
        self.session = session
        self._engines: dict = {}

    def describe(self) -> dict:
        out = super().describe()
        out["dry_run"] = True
        return out

    def mode(self):
        if self._mode is None:  # the Session/Batch the real runner would open (none is)
            self._mode = object()
            self.sessions_opened += 1
        return self._mode

    def close(self) -> None:
        self._mode = None

    def retrieve(self, job_id: str) -> Handle:  # pragma: no cover - dry runs submit nothing
        raise BackendError("a dry run has no submitted jobs to retrieve")

    def prepare(self, circuit, isa, key: str, *, keep_virtual: bool = False) -> Prepared:
        layout = isa.layout
        originals: dict = {}

        def map_observable(op):
            mapped = op.apply_layout(layout) if layout is not None else op
            originals[_op_key(mapped)] = op
            return mapped

        prepared = Prepared(source=circuit, circuit=isa, key=key, map_observable=map_observable)
        prepared.extra["dry_run_originals"] = originals
        return prepared

    # ------------------------------------------------------------------ jobs
    def submit_estimate_pubs(self, pubs, *, precision, seed, shots=None) -> Handle:
        for pub in pubs:
            if pub.state is not None:
                raise BackendError(
                    "ideal amplitude loading is an Aer emulation mode; a runtime backend loads "
                    "amplitudes with the transpiled state preparation (amplitude_loading='device')"
                )
        self.mode()
        rec = self.session.record(self, "estimate", pubs, int(shots or self.shots or 1024))

        def result():
            evs = []
            for pub in pubs:
                originals = pub.prepared.extra["dry_run_originals"]
                obs = [originals[_op_key(op)] for op in pub.observables]
                evs.append(self._values("estimate", pub, obs).evs)
            evs = np.concatenate(evs, 1)
            return {"evs": evs, "stds": np.zeros_like(evs)}

        return Handle(rec.job_id, result)

    def submit_sample_pubs(self, pubs, *, shots, seed) -> Handle:
        for pub in pubs:
            if pub.prepared.circuit.num_clbits == 0:
                raise BackendError(
                    "sampling needs a measured circuit; add measurements (measure_all)"
                )
            if pub.state is not None:
                raise BackendError(
                    "ideal amplitude loading is an Aer emulation mode, not a runtime one"
                )
        self.mode()
        rec = self.session.record(self, "sample", pubs, int(shots or self.shots or 1024))

        def result():
            return {
                "probs": np.concatenate(
                    [self._values("sample", pub, None).probs for pub in pubs], 0
                )
            }

        return Handle(rec.job_id, result)

    def _values(self, kind: str, pub, observables):
        """Exact noiseless values of the PUB's abstract circuit: the exact engine, or qiskit-aer's
        statevector where the exact engine cannot run the circuit."""
        from ..backends import parse_backend
        from .aer_runners import AerEstimatorRunner, AerShotsRunner
        from .exact_runner import ExactRunner

        if not self._engines:
            aer = parse_backend("aer")
            self._engines.update({"exact": ExactRunner(spec=aer), "aer_spec": aer})
        prepared = pub.prepared
        inner = prepared.extra.get("dry_run_inner")
        if inner is None:
            source = prepared.source
            try:
                engine = self._engines["exact"]
                inner = (engine, engine.prepare(source, source, prepared.key))
                engine.compiled(inner[1])
            except Exception:
                spec = self._engines["aer_spec"]
                engine = (
                    AerEstimatorRunner(spec=spec, method="statevector")
                    if kind == "estimate"
                    else AerShotsRunner(spec=spec, shots=self.shots)
                )
                inner = (engine, engine.prepare(source, source, prepared.key))
            prepared.extra["dry_run_inner"] = inner
        engine, inner_prepared = inner
        if kind == "estimate":
            return engine.submit_estimate(
                inner_prepared, observables, pub.values, precision=None, seed=0
            ).result()
        return engine.submit_sample(inner_prepared, pub.values, shots=self.shots, seed=0).result()
