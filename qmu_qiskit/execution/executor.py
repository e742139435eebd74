"""The job manager: one place where circuits are transpiled, batched, submitted and recorded.

Everything that evaluates a circuit — QNN forwards, gradients, evaluation sweeps — goes through an
:class:`Executor`. It owns the backend's runner, the transpile cache, the job ledger and the cost
counters, and offers Qiskit-shaped primitives on top (:meth:`Executor.estimator`,
:meth:`Executor.sampler`) and qiskit-machine-learning gradient objects
(:meth:`Executor.estimator_gradient`, :meth:`Executor.sampler_gradient`).

Data-dependent circuits — a leading amplitude encoding (``ParameterizedInitialize``), as in the
QMU models — cannot share one transpiled circuit on a device (docs/measurements.md lesson 10). On every
backend but the exact engine the executor splits each call by sample:

* ``amplitude_loading="device"`` (the hardware path, and the default): each sample's amplitudes
  are bound (:func:`~qmu_qiskit.circuits.qmu.bind_amplitude_encoding`: a ``StatePreparation``),
  the bound circuit is transpiled once per content (the transpile cache keys include the
  amplitudes) with the weights still symbolic, and all samples of a call go out as PUBs of one
  job;
* ``amplitude_loading="ideal"`` (Aer only, a labelled emulation mode): the ansatz after the
  encoding is transpiled once; each sample's state is written exactly onto the qubits the layout
  gives it and the device noise acts on the ansatz only — QMU's own noisy simulation.

``layout`` keeps circuits compact on devices (:mod:`.layout`): ``path`` confines an n-qubit circuit
to the lowest-error path of n coupled qubits, ``device`` leaves layout and routing to the preset
pass manager, ``auto`` (default) uses the path for Aer noisy emulation whenever the pass
manager's own routing would spread the circuit over more qubits than it has (a density matrix
costs 4**k per parameter set: 12 instead of 8 qubits is ~300× slower), and the device layout on
``fake_*``/``ibm_*`` backends, where width costs nothing and the transpiler's choice needs fewer
two-qubit gates.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import BackendError, BadInputError, JobError
from .cost import CostTracker
from .ledger import JobLedger
from .runners import Prepared, Pub, Runner, make_runner, typed_result
from .structure import exact_evolutions, structure_key
from .transpile import TranspileCache, default_cache_dir, target_fingerprint

#: Engines of the noiseless ``aer`` backend.
ENGINES = ("exact", "aer")
#: Layout settings (or an explicit list of device qubits forming a path).
LAYOUTS = ("auto", "path", "device")
#: How data-dependent (amplitude-encoded) circuits are loaded off the exact engine.
AMPLITUDE_LOADINGS = ("device", "ideal")
#: Default cap on samples (circuits) per job for data-dependent circuits.
DEFAULT_MAX_CIRCUITS = {"aer": 256, "runtime": 100}
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
        runtime_options: options for IBM Runtime primitives (resilience, twirling, ...). The
            execution settings ``layout`` and ``amplitude_loading`` may also be given here (a
            run's ``BackendConfig.runtime``); they are taken out before the runtime sees them.
        layout: ``auto`` (default), ``path``, ``device``, or a list of coupled device qubits
            (see the module doc).
        amplitude_loading: ``device`` (default) or ``ideal`` (Aer only; see the module doc).
        max_prepared: prepared circuits kept in memory (least recently used dropped first; a
            dropped one is rebuilt from the transpile cache).
        max_circuits: circuits (samples) per job for data-dependent circuits.
        device: where the simulators compute: ``cpu`` (default) or ``cuda`` (the torch engines
            on a CUDA device; Aer with ``device="GPU"``, which needs ``qiskit-aer-gpu``). Also
            accepted in ``runtime_options`` (a run's ``BackendConfig.runtime``).
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
        layout="auto",
        amplitude_loading: str | None = None,
        max_prepared: int = 256,
        max_circuits: int | None = None,
        device: str | None = None,
    ):
        from ..backends import BackendSpec, parse_backend

        self.spec: BackendSpec = (
            backend if isinstance(backend, BackendSpec) else parse_backend(backend)
        )
        if shots is not None and (not isinstance(shots, (int, np.integer)) or shots <= 0):
            raise BadInputError(
                f"shots must be a positive integer, got {shots!r}; e.g. --shots 1024"
            )
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
        runtime_options = dict(runtime_options or {})
        layout = runtime_options.pop("layout", layout)
        device = runtime_options.pop("device", device)
        amplitude_loading = runtime_options.pop("amplitude_loading", amplitude_loading)
        self.runtime_options = runtime_options
        self.layout = _check_layout(layout)
        self.amplitude_loading = amplitude_loading or "device"
        if self.amplitude_loading not in AMPLITUDE_LOADINGS:
            raise BadInputError(
                f"unknown amplitude loading {self.amplitude_loading!r}; use device or ideal"
            )
        if self.amplitude_loading == "ideal" and self.spec.is_runtime:
            raise BadInputError(
                "amplitude_loading 'ideal' is an Aer emulation mode; fake_*/ibm_* backends load "
                "amplitudes with the transpiled state preparation (amplitude_loading 'device')"
            )
        self.engine = engine
        self.noise_scale = noise_scale
        self.runner: Runner = make_runner(
            self.spec,
            engine=engine,
            shots=self.shots,
            noise_scale=noise_scale,
            runtime_options=self.runtime_options,
            run_id=self.run_id,
        )
        self.runner.compute_device = check_device(device, self.runner)
        kind = self.runner.kind
        self.max_parameter_sets = max_parameter_sets or DEFAULT_MAX_PARAMETER_SETS[kind]
        self.max_circuits = (
            max_circuits or DEFAULT_MAX_CIRCUITS["runtime" if kind == "runtime" else "aer"]
        )
        if max_prepared < 1:
            raise BadInputError(f"max_prepared must be ≥ 1, got {max_prepared}")
        self.max_prepared = int(max_prepared)
        self._prepared: OrderedDict[object, tuple[object, Prepared]] = OrderedDict()
        self._plans: OrderedDict[int, tuple[object, _AmplitudePlan | None]] = OrderedDict()
        self._layouts_used: dict[str, int] = {}
        self._amplitude_circuits = 0
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        """Whether outputs are exact expectation values (no shot noise)."""
        return self.runner.exact

    @property
    def exact_probabilities(self) -> bool:
        """Whether :meth:`probabilities` gives exact distributions (else shot frequencies)."""
        return self.runner.exact_probabilities

    @property
    def default_shots(self) -> int:
        """Shots of a sampling job that asks for none: ``--shots``, else 1024."""
        return self.shots or 1024

    @property
    def supports_exact_gradients(self) -> bool:
        return self.runner.exact_gradients

    def describe(self) -> dict:
        """What a run records about how its circuits were executed."""
        exact_engine = self.runner.kind == "exact"
        if exact_engine or self.runner.target is None:
            loading = "exact (noiseless simulation)"
        elif self.amplitude_loading == "ideal":
            loading = (
                "ideal: each sample's state is loaded exactly (Aer SetStatevector) and the device "
                "noise acts on the ansatz only (QMU's noisy simulation; hardware cannot do this)"
            )
        else:
            loading = "device: transpiled state preparation per sample, noisy like every other gate"
        return {
            "backend": self.spec.describe(),
            "runner": self.runner.describe(),
            "engine": self.engine if self.spec.kind == "aer" else None,
            "shots": self.shots,
            "noise_scale": self.noise_scale if self.spec.kind == "aer_noisy" else None,
            "optimization_level": self.optimization_level,
            "seed_transpiler": self.seed_transpiler,
            "layout": {
                "setting": list(self.layout) if isinstance(self.layout, tuple) else self.layout,
                "used": dict(self._layouts_used),
            }
            if self.runner.target is not None
            else None,
            "amplitude_loading": {
                "setting": None if exact_engine else self.amplitude_loading,
                "what": loading,
                "circuits": self._amplitude_circuits,
            },
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

        if self.supports_exact_gradients and self.runner.exact_sampler_gradients:
            return ExactSamplerGradient(self)
        return BatchedParamShiftSamplerGradient(self)

    # ------------------------------------------------------------------ preparation
    def prepare(
        self, circuit, *, initially_zero: bool = True, keep_virtual: bool = False
    ) -> Prepared:
        """Transpile (cached), compact and attach noise; cached per circuit object (LRU).

        Args:
            circuit: the abstract circuit.
            initially_zero: the circuit starts from |0…0⟩ (``False`` for the ansatz of ideal
                amplitude loading, whose state is written before it runs).
            keep_virtual: keep the physical qubit of every virtual qubit in the compact circuit.
        """
        slot = (id(circuit), initially_zero, keep_virtual)
        with self._lock:
            entry = self._prepared.get(slot)
            if entry is not None and entry[0] is circuit:
                self._prepared.move_to_end(slot)
                return entry[1]
        prepared = self._prepare(circuit, initially_zero=initially_zero, keep_virtual=keep_virtual)
        self._remember(slot, circuit, prepared)
        return prepared

    def _remember(self, slot, circuit, prepared: Prepared) -> None:
        with self._lock:
            self._prepared[slot] = (circuit, prepared)
            self._prepared.move_to_end(slot)
            while len(self._prepared) > self.max_prepared:
                self._prepared.popitem(last=False)

    def _prepare(
        self,
        circuit,
        *,
        initially_zero: bool = True,
        keep_virtual: bool = False,
        layout_hint: dict | None = None,
    ) -> Prepared:
        target = self.runner.target
        structure = structure_key(circuit)
        if target is None:
            isa = circuit
            sim_key = hashlib.sha256(f"{structure}|noiseless".encode()).hexdigest()
        else:
            # a transpiler synthesises PauliEvolutionGates as Trotter products: make them exact
            isa, where = self._transpile(
                exact_evolutions(circuit), target, initially_zero=initially_zero, hint=layout_hint
            )
            sim_key = hashlib.sha256(
                f"{structure}|{target_fingerprint(target)}|{self.optimization_level}|"
                f"{self.seed_transpiler}|{where}|{initially_zero}|{self.noise_scale}".encode()
            ).hexdigest()
        key = hashlib.sha256(f"{sim_key}|{self.runner.name}".encode()).hexdigest()
        prepared = self.runner.prepare(circuit, isa, key, keep_virtual=keep_virtual)
        prepared.extra["sim_key"] = sim_key
        return prepared

    def _transpile(self, circuit, target, *, initially_zero: bool, hint: dict | None = None):
        """The ISA circuit and where it was laid out (``device`` or ``path:q0,q1,…``)."""
        from .layout import best_path, check_path, restrict_target

        kw: dict[str, Any] = {
            "optimization_level": self.optimization_level,
            "seed": self.seed_transpiler,
            "qubits_initially_zero": initially_zero,
        }
        n = circuit.num_qubits
        mode = self.layout
        path = None
        decided = hint.get("where") if hint is not None else None
        if decided is not None:
            path = None if decided == "device" else decided
        elif isinstance(mode, tuple):
            if len(mode) != n:
                raise BadInputError(
                    f"the layout path has {len(mode)} qubits but the circuit has {n}; give exactly {n}"
                )
            path = check_path(target, mode)
        elif mode == "path":
            path = best_path(target, n)
        elif mode == "auto" and self.spec.kind == "aer_noisy":
            from ..backends.noise import active_qubits

            isa = self.cache.get_or_transpile(circuit, target, **kw)
            if len(active_qubits(isa)) > n:
                path = best_path(target, n)
            else:
                self._note_layout("device", hint, "device")
                return isa, "device"
        if path is None:
            self._note_layout("device", hint, "device")
            return self.cache.get_or_transpile(circuit, target, **kw), "device"
        where = "path:" + ",".join(str(q) for q in path)
        self._note_layout(where, hint, path)
        isa = self.cache.get_or_transpile(
            circuit, restrict_target(target, path), initial_layout=list(path), **kw
        )
        return isa, where

    def _note_layout(self, where: str, hint: dict | None, decision) -> None:
        """Count the layout used; remember the decision for the other samples of a family."""
        with self._lock:
            self._layouts_used[where] = self._layouts_used.get(where, 0) + 1
        if hint is not None:
            hint.setdefault("where", decision)

    # ------------------------------------------------------------------ data-dependent circuits
    def _amplitude_plan(self, circuit) -> _AmplitudePlan | None:
        """How to split a circuit with a leading amplitude encoding (``None``: it has none, or
        the runner evaluates it natively — the exact engine)."""
        if self.runner.native_amplitude_encoding:
            return None
        with self._lock:
            entry = self._plans.get(id(circuit))
            if entry is not None and entry[0] is circuit:
                return entry[1]
        from ..circuits.qmu import amplitude_parameters

        plan = None
        amp = amplitude_parameters(circuit)
        if amp is not None:
            plan = _AmplitudePlan.build(circuit, amp)
        with self._lock:
            self._plans[id(circuit)] = (circuit, plan)
            while len(self._plans) > self.max_prepared:
                self._plans.popitem(last=False)
        return plan

    def _amplitude_jobs(self, kind, plan, values, *, observables=None, precision=None, shots=None):
        """Run a data-dependent circuit: one pub per distinct sample, many samples per job.

        Returns the job arrays scattered back to the rows of ``values``: ``evs``/``stds``
        (O, N) for estimates, ``probs`` (N, K) for samples.
        """
        from ..circuits.qmu import bind_amplitude_encoding

        amps = values[:, plan.amp_cols]
        rest = np.ascontiguousarray(values[:, plan.rest_cols])
        norms = np.linalg.norm(amps, axis=1)
        if not np.all(norms > 0):
            raise BadInputError(
                "cannot amplitude-encode a zero vector (a sample whose features are all 0)"
            )
        _, first, inverse = np.unique(amps, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(first)  # samples in order of first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        sample_of_row = rank[inverse]
        rows_of = [[] for _ in range(len(order))]
        for r, u in enumerate(sample_of_row):
            rows_of[u].append(r)
        rows_of = [np.asarray(r, dtype=np.int64) for r in rows_of]
        # noiseless Aer has no device: writing the state is exact, and what a device would do
        ideal = self.amplitude_loading == "ideal" or self.runner.target is None
        if ideal:
            tail_prepared = self.prepare(plan.tail, initially_zero=False, keep_virtual=True)
        out = None
        for chunk in self._sample_chunks(rows_of):
            pubs = []
            for u in chunk:
                rows = rows_of[u]
                first_row = int(rows[0])
                if ideal:
                    prepared = tail_prepared
                    state = amps[first_row] / norms[first_row]
                else:
                    bound = bind_amplitude_encoding(plan.circuit, plan.amp_params, amps[first_row])
                    prepared = self._prepare_content(bound, plan)
                    state = None
                obs = prepared.observables(observables) if observables is not None else None
                pubs.append(Pub(prepared, rest[rows], obs, state))
            with self._lock:
                self._amplitude_circuits += len(pubs)
            arrays = self._job(
                kind, pubs, observables=observables, precision=precision, shots=shots
            ).arrays()
            rows = np.concatenate([rows_of[u] for u in chunk])
            if out is None:
                out = _scatter_init(kind, arrays, len(values))
            _scatter(kind, out, arrays, rows)
        return out

    def _prepare_content(self, bound, plan) -> Prepared:
        """A bound (per-sample) circuit, prepared once per content (LRU)."""
        slot = ("content", structure_key(bound))
        with self._lock:
            entry = self._prepared.get(slot)
            if entry is not None:
                self._prepared.move_to_end(slot)
                return entry[1]
        prepared = self._prepare(bound, layout_hint=plan.layout_hint)
        self._remember(slot, bound, prepared)
        return prepared

    def _sample_chunks(self, rows_of: list) -> list[list[int]]:
        chunks: list[list[int]] = []
        current: list[int] = []
        size = 0
        for u, rows in enumerate(rows_of):
            if current and (
                len(current) >= self.max_circuits or size + len(rows) > self.max_parameter_sets
            ):
                chunks.append(current)
                current, size = [], 0
            current.append(u)
            size += len(rows)
        if current:
            chunks.append(current)
        return chunks

    # ------------------------------------------------------------------ evaluation
    def expectation_values(
        self,
        circuit,
        observables,
        values,
        *,
        precision: float | None = None,
        shots: int | None = None,
    ):
        """All expectation values of ``observables`` at every row of ``values``.

        Args:
            circuit: a parameterised circuit (abstract; transpiled here if the backend needs it).
            observables: a list of ``SparsePauliOp`` on the circuit's qubits.
            values: (N, P) parameter values in ``circuit.parameters`` order.
            precision: target precision for estimators that take one (Aer adds Gaussian noise of
                that size; runtime estimators pick shots from it). ``None``/0 = exact where
                possible.
            shots: shots per parameter set on shot-based backends (default: the executor's).

        Returns:
            ``(evs, stds)``, both (O, N).
        """
        values = _as_values(values, circuit)
        if circuit.num_parameters == 0 and len(values) > 1:
            # one evaluation serves every row (Aer runs one experiment for an unbound circuit)
            evs, stds = self.expectation_values(
                circuit, observables, values[:1], precision=precision, shots=shots
            )
            return np.repeat(evs, len(values), 1), np.repeat(stds, len(values), 1)
        plan = self._amplitude_plan(circuit)
        if plan is not None:
            out = self._amplitude_jobs(
                "estimate",
                plan,
                values,
                observables=list(observables),
                precision=precision,
                shots=shots,
            )
            return out["evs"], out["stds"]
        prepared = self.prepare(circuit)
        obs = prepared.observables(observables)
        evs, stds = [], []
        for chunk in self._chunks(values, len(obs)):
            arrays = self._job(
                "estimate",
                [Pub(prepared, chunk, obs)],
                observables=obs,
                precision=precision,
                shots=shots,
            )
            evs.append(arrays.evs)
            stds.append(arrays.stds)
        return np.concatenate(evs, 1), np.concatenate(stds, 1)

    def probabilities(self, circuit, values, *, shots: int | None = None):
        """Outcome distributions (N, 2**num_clbits) of a measured circuit at every row."""
        values = _as_values(values, circuit)
        if circuit.num_parameters == 0 and len(values) > 1:
            return np.repeat(self.probabilities(circuit, values[:1], shots=shots), len(values), 0)
        shots = shots or self.shots or 1024
        plan = self._amplitude_plan(circuit)
        if plan is not None:
            return self._amplitude_jobs("sample", plan, values, shots=shots)["probs"]
        prepared = self.prepare(circuit)
        out = [
            self._job("sample", [Pub(prepared, chunk)], shots=shots).probs
            for chunk in self._chunks(values, 1)
        ]
        return np.concatenate(out, 0)

    def value_and_jacobian(self, circuit, observables, values, columns):
        """Exact values (N, O) and Jacobian (N, O, C) in one evaluation (exact engines only)."""
        prepared, values = self._exact_job(circuit, values, len(observables))
        with self._engine_time():
            return self.runner.value_and_jacobian(
                prepared, prepared.observables(observables), values, columns
            )

    def values_and_pullback(self, circuit, observables, values):
        """Exact values (N, O) now and ``pullback(cotangent, columns)`` → (N, C) later: the
        vector–Jacobian product in one adjoint sweep (exact engines only; one job, as
        :meth:`value_and_jacobian`)."""
        prepared, values = self._exact_job(circuit, values, len(observables))
        with self._engine_time():
            out, pullback = self.runner.value_and_pullback(
                prepared, prepared.observables(observables), values
            )
        return out, self._timed(pullback)

    def probs_and_pullback(self, circuit, values):
        """Exact distributions (N, K) and their vector–Jacobian pullback (exact engine only)."""
        prepared, values = self._exact_job(circuit, values, 1, sampler=True)
        with self._engine_time():
            out, pullback = self.runner.probs_and_pullback(prepared, values)
        return out, self._timed(pullback)

    def probs_and_jacobian(self, circuit, values, columns):
        prepared, values = self._exact_job(circuit, values, 1, sampler=True)
        with self._engine_time():
            return self.runner.probs_and_jacobian(prepared, values, columns)

    def _exact_job(self, circuit, values, per_row: int, *, sampler: bool = False):
        """What every exact-gradient call does first: check the runner, prepare, count one job."""
        runner = self.runner
        if not runner.exact_gradients or (sampler and not runner.exact_sampler_gradients):
            raise BackendError(
                "exact gradients need engine 'exact' on aer (or on aer_noisy without shots, "
                "for estimator QNNs)"
            )
        if not sampler:
            self._natively_evaluated(circuit)
        values = _as_values(values, circuit)
        prepared = self.prepare(circuit)
        self.cost.add(jobs=1, pubs=1, circuit_evaluations=len(values) * per_row)
        return prepared, values

    @contextlib.contextmanager
    def _engine_time(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.cost.add(engine_seconds=time.perf_counter() - started)

    def _timed(self, pullback):
        """``pullback`` with its time added to ``engine_seconds``."""

        def timed(cotangent, columns=None, sum_rows=()):
            with self._engine_time():
                return pullback(cotangent, columns, sum_rows=sum_rows)

        return timed

    def _natively_evaluated(self, circuit) -> None:
        """Raise :class:`~.density_runner.Unsupported` for a circuit the runner's exact gradient
        cannot take whole (a leading amplitude encoding the executor splits by sample)."""
        if self._amplitude_plan(circuit) is not None:
            from .density_runner import Unsupported

            raise Unsupported("amplitude encoding is evaluated one circuit per sample")

    def _chunks(self, values: np.ndarray, num_observables: int):
        size = max(1, self.max_parameter_sets)
        if len(values) <= size:
            yield values
            return
        for start in range(0, len(values), size):
            yield values[start : start + size]

    # ------------------------------------------------------------------ jobs & the ledger
    def _fingerprint(self, kind, prepared, values, observables, precision, shots) -> str:
        """The ledger fingerprint of a one-circuit job."""
        return self._fingerprint_pubs(
            kind, [Pub(prepared, values, observables)], observables, precision, shots
        )

    def _fingerprint_pubs(self, kind, pubs, observables, precision, shots) -> str:
        h = hashlib.sha256()
        h.update(
            f"{kind}|{self.spec.name}|{self.run_id}|{self.seed}|{precision}|{shots}|"
            f"{self.noise_scale}|{sorted(self.runtime_options.items())}".encode()
        )
        for op in observables or ():
            h.update("|".join(op.paulis.to_labels()).encode())
            h.update(np.ascontiguousarray(op.coeffs).tobytes())
        for pub in pubs:
            h.update(f"|{pub.prepared.key}|".encode())
            if pub.state is not None:
                h.update(b"ideal-loading")
                h.update(np.ascontiguousarray(pub.state).tobytes())
            h.update(np.ascontiguousarray(pub.values).tobytes())
        return h.hexdigest()

    def _job(self, kind, pubs, *, observables=None, precision=None, shots=None):
        """One job for ``pubs`` (usually one; one per sample for data-dependent circuits):
        ledger lookup, submission with retries, record, result (typed: ``Estimates`` or
        ``Distributions``)."""
        runner = self.runner
        n = sum(len(p.values) for p in pubs)
        evals = n * (len(observables) if observables is not None else 1)
        shots_used = 0 if runner.exact and kind == "estimate" else (shots or runner.shots or 1024)
        record = self.ledger is not None and runner.records_jobs
        fp = self._fingerprint_pubs(kind, pubs, observables, precision, shots)
        if record:
            reused = self._from_ledger(fp)
            if reused is not None:
                self.cost.add(jobs_reused=1)
                return reused
        seed = (self.seed * 1_000_003 + int(fp[:12], 16)) % (2**31)
        started = time.perf_counter()
        handle = self._submit(kind, pubs, precision, shots, seed)
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
                num_pubs=len(pubs),
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
        engine = time.perf_counter() - started
        if record:
            self.ledger.record_done(handle.job_id, arrays.arrays())
        self.cost.add(
            engine_seconds=engine,
            jobs=1,
            pubs=len(pubs),
            circuit_evaluations=evals,
            shots=shots_used * n,
            qpu_seconds=getattr(handle, "qpu_seconds", 0.0),
        )
        return arrays

    def _from_ledger(self, fp: str):
        if self.ledger is None:  # no ledger: nothing was recorded to reuse
            return None
        rows = self.ledger.find(fp)
        for row in rows:
            if row.status == "done":
                return typed_result(self.ledger.load_result(row))
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
                self.ledger.record_done(row.job_id, arrays.arrays())
                self.cost.add(jobs_reused=1)
                return arrays
            if row.pid != os.getpid() and not _pid_alive(row.pid):
                self.ledger.record_lost(row.job_id)
        return None

    def _submit(self, kind, pubs, precision, shots, seed):
        delay = 1.0
        single = len(pubs) == 1 and pubs[0].state is None
        for attempt in range(self.retries):
            try:
                if kind == "estimate":
                    if single:
                        p = pubs[0]
                        return self.runner.submit_estimate(
                            p.prepared,
                            p.observables,
                            p.values,
                            precision=precision,
                            seed=seed,
                            shots=shots,
                        )
                    return self.runner.submit_estimate_pubs(
                        pubs, precision=precision, seed=seed, shots=shots
                    )
                if single:
                    return self.runner.submit_sample(
                        pubs[0].prepared, pubs[0].values, shots=shots, seed=seed
                    )
                return self.runner.submit_sample_pubs(pubs, shots=shots, seed=seed)
            except Exception as exc:
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


@dataclass
class _AmplitudePlan:
    """A circuit with a leading amplitude encoding, split into data and ansatz.

    Attributes:
        circuit: the whole circuit.
        amp_params: the encoding's parameters, in amplitude order.
        amp_cols: column of each of them in ``circuit.parameters`` order.
        rest_cols: the other columns, in ``circuit.parameters`` order (= ``tail.parameters``).
        tail: the circuit without the encoding (the ansatz, weights symbolic).
        layout_hint: the layout chosen for the first bound sample, reused for the others.
    """

    circuit: object
    amp_params: list
    amp_cols: np.ndarray
    rest_cols: np.ndarray
    tail: object
    layout_hint: dict = field(default_factory=dict)

    @classmethod
    def build(cls, circuit, amp_params) -> _AmplitudePlan:
        params = list(circuit.parameters)
        index = {p: i for i, p in enumerate(params)}
        amp_set = set(amp_params)
        amp_cols = np.array([index[p] for p in amp_params], dtype=np.int64)
        rest_cols = np.array([i for i, p in enumerate(params) if p not in amp_set], dtype=np.int64)
        tail = circuit.copy_empty_like()
        for inst in circuit.data[1:]:
            tail.append(inst)
        if amp_set & set(tail.parameters):
            raise BadInputError(
                "the amplitude-encoding inputs are used again after the encoding; only a leading "
                "amplitude encoding can be split off for devices"
            )
        if [p.name for p in tail.parameters] != [params[c].name for c in rest_cols]:
            raise BackendError(
                "the ansatz after the amplitude encoding does not use every weight parameter"
            )
        return cls(circuit, list(amp_params), amp_cols, rest_cols, tail)


def _scatter_init(kind: str, arrays: dict, n: int) -> dict:
    if kind == "estimate":
        o = arrays["evs"].shape[0]
        return {"evs": np.zeros((o, n)), "stds": np.zeros((o, n))}
    return {"probs": np.zeros((n, arrays["probs"].shape[1]))}


def _scatter(kind: str, out: dict, arrays: dict, rows: np.ndarray) -> None:
    if kind == "estimate":
        out["evs"][:, rows] = arrays["evs"]
        out["stds"][:, rows] = arrays["stds"]
    else:
        out["probs"][rows] = arrays["probs"]


def _check_layout(layout):
    if isinstance(layout, str):
        text = layout.strip().lower()
        if text in LAYOUTS:
            return text
        if text.startswith("path:"):
            try:
                return tuple(int(q) for q in text[5:].split(",") if q.strip())
            except ValueError:
                pass
        raise BadInputError(
            f"unknown layout {layout!r}; use auto, path, device or path:Q0,Q1,... (coupled qubits)"
        )
    if (
        isinstance(layout, (list, tuple))
        and layout
        and all(isinstance(q, (int, np.integer)) for q in layout)
    ):
        return tuple(int(q) for q in layout)
    raise BadInputError(
        f"unknown layout {layout!r}; use auto, path, device or a list of coupled qubits"
    )


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


def check_device(device: str | None, runner: Runner) -> str:
    """The compute device of ``runner``: ``cpu`` or ``cuda[:N]``; a one-line error where it is
    not available."""
    if device in (None, "cpu"):
        return "cpu"
    if not isinstance(device, str) or not (device == "cuda" or device.startswith("cuda:")):
        raise BadInputError(f"unknown device {device!r}; use cpu or cuda")
    if runner.kind == "runtime":
        raise BadInputError(
            f"--device {device} does not apply to {runner.spec.name}: IBM Runtime backends run on "
            "IBM's machines; drop --device"
        )
    if runner.kind == "exact" or getattr(runner, "torch_engine", False):
        import torch

        if not torch.cuda.is_available():
            raise BadInputError(
                f"--device {device}: torch sees no CUDA device (this torch is a CPU build or the "
                "machine has no GPU); run on a GPU machine with a CUDA build of torch, or drop "
                "--device"
            )
        return device
    from qiskit_aer import AerSimulator

    if "GPU" not in AerSimulator().available_devices():
        raise BadInputError(
            f"--device {device}: this qiskit-aer has no GPU support; install qiskit-aer-gpu "
            "(pip install qiskit-aer-gpu) on a machine with an NVIDIA GPU, or drop --device"
        )
    return device


def _as_values(values, circuit) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if circuit.num_parameters or arr.size == 0 else arr.reshape(-1, 0)
    if arr.shape[-1] != circuit.num_parameters:
        raise BadInputError(
            f"expected {circuit.num_parameters} parameter values per row, got {arr.shape[-1]}"
        )
    rows = int(np.prod(arr.shape[:-1], dtype=int))
    return np.ascontiguousarray(arr.reshape(rows, circuit.num_parameters))
