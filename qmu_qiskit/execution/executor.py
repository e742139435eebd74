"""The job manager: one place where circuits are transpiled, batched, submitted and recorded.

Everything that evaluates a circuit — QNN forwards, gradients, evaluation sweeps — goes through an
:class:`Executor`. It owns the backend's runner, the transpile cache, the job ledger and the cost
counters, and offers Qiskit-shaped primitives on top (:meth:`Executor.estimator`,
:meth:`Executor.sampler`) and qiskit-machine-learning gradient objects
(:meth:`Executor.estimator_gradient`, :meth:`Executor.sampler_gradient`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np

from ..exceptions import BackendError, BadInputError, JobError
from .cost import CostTracker
from .ledger import JobLedger
from .runners import AerEstimatorRunner, AerShotsRunner, ExactRunner, Prepared, Runner
from .transpile import TranspileCache, default_cache_dir, target_fingerprint

#: Engines of the noiseless ``aer`` backend.
ENGINES = ("exact", "aer")
#: Default cap on parameter sets per job before a broadcast PUB is split into chunks.
DEFAULT_MAX_PARAMETER_SETS = {"exact": 1 << 30, "aer": 50_000, "runtime": 10_000}


class Executor:
    """Runs circuits on one backend, one broadcast job per call, and records every job.

    Args:
        backend: a :class:`~qmu_qiskit.backends.BackendSpec` or a backend name.
        shots: shots per circuit evaluation; ``None`` = exact expectation values where the backend
            allows (``aer``, ``aer_noisy``); hardware-like backends default to 1024.
        noise_scale: multiplies the device noise of ``aer_noisy`` (see ``restricted_noise_model``).
        engine: noiseless ``aer`` engine: ``exact`` (vectorised statevector, exact gradients) or
            ``aer`` (qiskit-aer with broadcast parameter-shift gradients).
        seed: base seed; every simulator job's seed is derived from it and the job's fingerprint.
        optimization_level: transpiler optimisation level.
        seed_transpiler: transpiler seed (part of the cache key).
        cache_dir: folder of the on-disk transpile cache (default ``$QMU_CACHE_DIR``).
        ledger: a :class:`JobLedger` or a path to one (``None``: jobs are counted, not recorded).
        run_id: tag of every job (the run directory's id), part of job fingerprints.
        max_parameter_sets: split broadcast PUBs into jobs of at most this many parameter sets.
        retries: attempts for transient submission failures (with exponential backoff).
        runtime_options: options for IBM Runtime primitives (resilience, twirling, ...).
    """

    def __init__(
        self,
        backend,
        *,
        shots: int | None = None,
        noise_scale: float = 1.0,
        engine: str = "exact",
        seed: int = 0,
        optimization_level: int = 1,
        seed_transpiler: int = 0,
        cache_dir: str | os.PathLike | None = None,
        ledger: JobLedger | str | os.PathLike | None = None,
        run_id: str | None = None,
        max_parameter_sets: int | None = None,
        retries: int = 3,
        runtime_options: dict | None = None,
        cost: CostTracker | None = None,
    ):
        from ..backends import BackendSpec, parse_backend

        self.spec: BackendSpec = backend if isinstance(backend, BackendSpec) else parse_backend(backend)
        if shots is not None and (not isinstance(shots, (int, np.integer)) or shots <= 0):
            raise BadInputError(f"shots must be a positive integer, got {shots!r}; e.g. --shots 1024")
        if engine not in ENGINES:
            raise BadInputError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
        if optimization_level not in (0, 1, 2, 3):
            raise BadInputError(f"optimization level must be 0-3, got {optimization_level!r}")
        self.shots = int(shots) if shots is not None else None
        self.seed = int(seed)
        self.optimization_level = optimization_level
        self.seed_transpiler = seed_transpiler
        self.cost = cost or CostTracker()
        self.cache = TranspileCache(
            Path(cache_dir) if cache_dir is not None else default_cache_dir(), cost=self.cost
        )
        self.ledger = JobLedger(ledger) if isinstance(ledger, (str, os.PathLike)) else ledger
        self.run_id = run_id
        self.retries = retries
        self.runtime_options = dict(runtime_options or {})
        self.engine = engine
        self.noise_scale = noise_scale
        self.runner: Runner = self._make_runner(engine, noise_scale)
        kind = "runtime" if self.spec.is_runtime else ("exact" if isinstance(self.runner, ExactRunner) else "aer")
        self.max_parameter_sets = max_parameter_sets or DEFAULT_MAX_PARAMETER_SETS[kind]
        self._prepared: dict[int, tuple[object, Prepared]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    def _make_runner(self, engine: str, noise_scale: float) -> Runner:
        spec = self.spec
        if spec.kind == "aer":
            if self.shots is not None:
                return AerShotsRunner(spec=spec, shots=self.shots)
            if engine == "exact":
                return ExactRunner(spec=spec)
            return AerEstimatorRunner(spec=spec, method="statevector")
        if spec.kind == "aer_noisy":
            device = spec.device_backend()
            if self.shots is not None:
                return AerShotsRunner(spec=spec, device=device, shots=self.shots, noise_scale=noise_scale)
            return AerEstimatorRunner(
                spec=spec, device=device, method="density_matrix", noise_scale=noise_scale
            )
        from ..backends.runtime import RuntimeRunner

        return RuntimeRunner(
            spec=spec,
            shots=self.shots or 1024,
            options=self.runtime_options,
            run_id=self.run_id,
        )

    @property
    def exact(self) -> bool:
        """Whether outputs are exact expectation values (no shot noise)."""
        return self.runner.exact

    @property
    def supports_exact_gradients(self) -> bool:
        return isinstance(self.runner, ExactRunner)

    def describe(self) -> dict:
        """What a run records about how its circuits were executed."""
        return {
            "backend": self.spec.describe(),
            "runner": self.runner.describe(),
            "engine": self.engine if self.spec.kind == "aer" else None,
            "shots": self.shots,
            "noise_scale": self.noise_scale if self.spec.kind == "aer_noisy" else None,
            "optimization_level": self.optimization_level,
            "seed_transpiler": self.seed_transpiler,
        }

    def close(self) -> None:
        self.runner.close()
        if self.ledger is not None:
            self.ledger.close()

    # ------------------------------------------------------------------ primitives & gradients
    def estimator(self):
        from .primitives import BatchingEstimator

        return BatchingEstimator(self)

    def sampler(self):
        from .primitives import BatchingSampler

        return BatchingSampler(self)

    def estimator_gradient(self):
        from .gradients import BatchedParamShiftEstimatorGradient, ExactEstimatorGradient

        if self.supports_exact_gradients:
            return ExactEstimatorGradient(self)
        return BatchedParamShiftEstimatorGradient(self)

    def sampler_gradient(self):
        from .gradients import BatchedParamShiftSamplerGradient, ExactSamplerGradient

        if self.supports_exact_gradients:
            return ExactSamplerGradient(self)
        return BatchedParamShiftSamplerGradient(self)

    # ------------------------------------------------------------------ preparation
    def prepare(self, circuit) -> Prepared:
        """Transpile (cached), compact and attach noise; cached per circuit object."""
        entry = self._prepared.get(id(circuit))
        if entry is not None and entry[0] is circuit:
            return entry[1]
        from qiskit_machine_learning.utils import circuit_cache_key

        target = self.runner.target
        structure = circuit_cache_key(circuit)
        if target is None:
            isa = circuit
            key = hashlib.sha256(f"{structure}|{self.runner.name}".encode()).hexdigest()
        else:
            isa = self.cache.get_or_transpile(
                circuit,
                target,
                optimization_level=self.optimization_level,
                seed=self.seed_transpiler,
            )
            key = hashlib.sha256(
                f"{structure}|{target_fingerprint(target)}|{self.optimization_level}|"
                f"{self.seed_transpiler}|{self.runner.name}|{self.noise_scale}".encode()
            ).hexdigest()
        prepared = self.runner.prepare(circuit, isa, key)
        with self._lock:
            self._prepared[id(circuit)] = (circuit, prepared)
        return prepared

    # ------------------------------------------------------------------ evaluation
    def expectation_values(self, circuit, observables, values, *, precision: float | None = None):
        """All expectation values of ``observables`` at every row of ``values``.

        Args:
            circuit: a parameterised circuit (abstract; transpiled here if the backend needs it).
            observables: a list of ``SparsePauliOp`` on the circuit's qubits.
            values: (N, P) parameter values in ``circuit.parameters`` order.
            precision: target precision for estimators that take one (Aer adds Gaussian noise of
                that size; runtime estimators pick shots from it). ``None``/0 = exact where
                possible.

        Returns:
            ``(evs, stds)``, both (O, N).
        """
        values = _as_values(values, circuit)
        prepared = self.prepare(circuit)
        obs = prepared.observables(observables)
        evs, stds = [], []
        for chunk in self._chunks(values, len(obs)):
            arrays = self._job("estimate", prepared, chunk, observables=obs, precision=precision)
            evs.append(arrays["evs"])
            stds.append(arrays["stds"])
        return np.concatenate(evs, 1), np.concatenate(stds, 1)

    def probabilities(self, circuit, values, *, shots: int | None = None):
        """Outcome distributions (N, 2**num_clbits) of a measured circuit at every row."""
        values = _as_values(values, circuit)
        prepared = self.prepare(circuit)
        shots = shots or self.shots or 1024
        out = [
            self._job("sample", prepared, chunk, shots=shots)["probs"]
            for chunk in self._chunks(values, 1)
        ]
        return np.concatenate(out, 0)

    def value_and_jacobian(self, circuit, observables, values, columns):
        """Exact values (N, O) and Jacobian (N, O, C) in one evaluation (exact engine only)."""
        runner = self.runner
        if not isinstance(runner, ExactRunner):
            raise BackendError("exact gradients need the noiseless 'aer' backend with engine 'exact'")
        values = _as_values(values, circuit)
        prepared = self.prepare(circuit)
        self.cost.add(jobs=1, pubs=1, circuit_evaluations=len(values) * len(observables))
        return runner.value_and_jacobian(prepared, prepared.observables(observables), values, columns)

    def probs_and_jacobian(self, circuit, values, columns):
        runner = self.runner
        if not isinstance(runner, ExactRunner):
            raise BackendError("exact gradients need the noiseless 'aer' backend with engine 'exact'")
        values = _as_values(values, circuit)
        prepared = self.prepare(circuit)
        self.cost.add(jobs=1, pubs=1, circuit_evaluations=len(values))
        return runner.probs_and_jacobian(prepared, values, columns)

    def _chunks(self, values: np.ndarray, num_observables: int):
        size = max(1, self.max_parameter_sets)
        if len(values) <= size:
            yield values
            return
        for start in range(0, len(values), size):
            yield values[start : start + size]

    # ------------------------------------------------------------------ jobs & the ledger
    def _fingerprint(self, kind, prepared, values, observables, precision, shots) -> str:
        h = hashlib.sha256()
        h.update(
            f"{kind}|{self.spec.name}|{prepared.key}|{self.run_id}|{self.seed}|{precision}|{shots}|"
            f"{self.noise_scale}|{sorted(self.runtime_options.items())}".encode()
        )
        for op in observables or ():
            h.update("|".join(op.paulis.to_labels()).encode())
            h.update(np.ascontiguousarray(op.coeffs).tobytes())
        h.update(np.ascontiguousarray(values).tobytes())
        return h.hexdigest()

    def _job(self, kind, prepared, values, *, observables=None, precision=None, shots=None) -> dict:
        runner = self.runner
        n = len(values)
        evals = n * (len(observables) if observables is not None else 1)
        shots_used = 0 if runner.exact and kind == "estimate" else (shots or runner.shots or 1024)
        record = self.ledger is not None and not isinstance(runner, ExactRunner)
        fp = None
        if record:
            fp = self._fingerprint(kind, prepared, values, observables, precision, shots)
            reused = self._from_ledger(fp)
            if reused is not None:
                self.cost.add(jobs_reused=1)
                return reused
        seed = (self.seed * 1_000_003 + int((fp or self._fingerprint(kind, prepared, values, observables, precision, shots))[:12], 16)) % (2**31)
        handle = self._submit(kind, prepared, values, observables, precision, shots, seed)
        if record:
            self.ledger.record_submitted(
                job_id=handle.job_id,
                fingerprint=fp,
                backend=self.spec.name,
                runner=runner.name,
                remote=runner.remote,
                session_id=handle.session_id,
                run_id=self.run_id,
                tags={"kind": kind},
                num_pubs=1,
                circuit_evaluations=evals,
                shots=shots_used * n,
            )
        try:
            arrays = handle.result()
        except BaseException as exc:
            if record and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                self.ledger.record_failed(handle.job_id, f"{type(exc).__name__}: {exc}")
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) or isinstance(exc, JobError):
                raise
            raise JobError(
                f"job {handle.job_id} on {self.spec.name} failed: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}; check the backend status and "
                "run the command again (finished jobs are not re-run)"
            ) from exc
        if record:
            self.ledger.record_done(handle.job_id, arrays)
        self.cost.add(
            jobs=1, pubs=1, circuit_evaluations=evals, shots=shots_used * n,
            qpu_seconds=getattr(handle, "qpu_seconds", 0.0),
        )
        return arrays

    def _from_ledger(self, fp: str) -> dict | None:
        rows = self.ledger.find(fp)
        for row in rows:
            if row.status == "done":
                return self.ledger.load_result(row)
        for row in rows:
            if row.status != "submitted":
                continue
            if row.remote:
                # A remote job outlives its process: fetch it instead of paying for it again.
                handle = self.runner.retrieve(row.job_id)
                try:
                    arrays = handle.result()
                except Exception as exc:
                    self.ledger.record_failed(row.job_id, f"{type(exc).__name__}: {exc}")
                    raise JobError(
                        f"job {row.job_id} on {row.backend} failed: {exc}; run the command again "
                        "to resubmit it"
                    ) from exc
                self.ledger.record_done(row.job_id, arrays)
                self.cost.add(jobs_reused=1)
                return arrays
            if row.pid != os.getpid() and not _pid_alive(row.pid):
                self.ledger.record_lost(row.job_id)
        return None

    def _submit(self, kind, prepared, values, observables, precision, shots, seed):
        delay = 1.0
        for attempt in range(self.retries):
            try:
                if kind == "estimate":
                    return self.runner.submit_estimate(
                        prepared, observables, values, precision=precision, seed=seed
                    )
                return self.runner.submit_sample(prepared, values, shots=shots, seed=seed)
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _transient(exc) or attempt == self.retries - 1:
                    if isinstance(exc, (BadInputError, BackendError, JobError)):
                        raise
                    raise JobError(
                        f"submitting a job to {self.spec.name} failed: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}"
                    ) from exc
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


def _transient(exc: Exception) -> bool:
    """Network hiccups and service-side throttling are worth retrying; bad input is not."""
    name = type(exc).__name__
    text = str(exc).lower()
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if name in ("IBMRuntimeError", "RequestsApiError", "IBMApiError"):
        return any(k in text for k in ("timeout", "temporar", "503", "502", "429", "connection"))
    return False


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _as_values(values, circuit) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if circuit.num_parameters else arr.reshape(-1, 0)
    if arr.shape[-1] != circuit.num_parameters:
        raise BadInputError(
            f"expected {circuit.num_parameters} parameter values per row, got {arr.shape[-1]}"
        )
    return np.ascontiguousarray(arr.reshape(-1, circuit.num_parameters))
