"""Runners: the few ways a merged, broadcast PUB is actually executed.

A runner takes one circuit, a list of observables and a (N, P) array of parameter values and
returns all N×O expectation values (or N outcome distributions) from **one** job. The executor
(:mod:`qmu_qiskit.execution.executor`) does the rest: merging PUBs, transpile caching, chunking,
the job ledger and cost accounting.

* :class:`ExactRunner` — the vectorised torch statevector of :mod:`.statevector`, exact values and
  exact (adjoint) gradients; for the noiseless ``aer`` backend.
* :class:`AerEstimatorRunner` — qiskit-aer's ``EstimatorV2`` with runtime parameter binding:
  statevector for ``aer --engine aer``, density matrix with the device noise (restricted to the
  circuit's active qubits) for ``aer_noisy``. Exact expectation values of the noisy state.
* :class:`AerShotsRunner` — ``AerSimulator`` with shots and the device noise, readout error
  included, as hardware would measure; expectation values are estimated from counts.
* ``RuntimeRunner`` (:mod:`qmu_qiskit.backends.runtime`) — qiskit-ibm-runtime primitives in a
  ``Session``/``Batch``, in local testing mode (``fake_*``) or on IBM hardware (``ibm_*``).
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..exceptions import BadInputError


@dataclass
class Prepared:
    """A circuit made ready for one runner (transpiled, compacted, noise attached).

    Attributes:
        source: the abstract circuit as the QNN built it.
        circuit: what the runner executes.
        key: structural key of ``source`` plus the target's fingerprint: part of job fingerprints.
        physical_qubits: device qubits the compact circuit stands for (noisy emulation).
        noise_model: Aer noise model for ``circuit`` (noisy emulation).
        extra: runner-specific state.
    """

    source: object
    circuit: object
    key: str
    map_observable: Callable = lambda op: op
    physical_qubits: tuple[int, ...] | None = None
    noise_model: object = None
    extra: dict = field(default_factory=dict)
    _observables: dict = field(default_factory=dict)

    def observables(self, observables) -> list:
        """Map abstract observables onto ``circuit`` (layout applied, compacted); cached."""
        from qiskit.quantum_info import SparsePauliOp

        out = []
        for obs in observables:
            op = obs if isinstance(obs, SparsePauliOp) else SparsePauliOp(obs)
            k = (tuple(op.paulis.to_labels()), op.coeffs.tobytes())
            mapped = self._observables.get(k)
            if mapped is None:
                mapped = self.map_observable(op)
                self._observables[k] = mapped
            out.append(mapped)
        return out


class Handle:
    """A submitted job. ``result()`` blocks and returns the result arrays."""

    def __init__(self, job_id: str, fn: Callable[[], dict], *, session_id: str | None = None):
        self.job_id = job_id
        self.session_id = session_id
        self._fn = fn
        self._result: dict | None = None
        self.qpu_seconds = 0.0

    def result(self) -> dict:
        if self._result is None:
            self._result = self._fn()
        return self._result


class Runner:
    """Base class. Subclasses set the class attributes and implement the ``submit_*`` methods."""

    name = "runner"
    remote = False  # jobs outlive this process (IBM Runtime): retrievable by id
    exact = False  # exact expectation values (no shot noise)
    needs_transpile = False

    def __init__(self, *, spec, device=None, shots: int | None = None, noise_scale: float = 1.0):
        self.spec = spec
        self.device = device
        self.shots = shots
        self.noise_scale = noise_scale

    @property
    def target(self):
        return None if self.device is None else self.device.target

    def prepare(self, circuit, isa, key: str) -> Prepared:
        return Prepared(source=circuit, circuit=isa, key=key)

    def submit_estimate(self, prepared: Prepared, observables, values, *, precision, seed) -> Handle:
        raise NotImplementedError

    def submit_sample(self, prepared: Prepared, values, *, shots, seed) -> Handle:
        raise NotImplementedError

    def retrieve(self, job_id: str) -> Handle:  # pragma: no cover - remote runners only
        raise NotImplementedError

    def describe(self) -> dict:
        return {"runner": self.name, "shots": self.shots, "noise_scale": self.noise_scale}

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
class ExactRunner(Runner):
    """Exact noiseless evaluation with the vectorised torch statevector (in-process)."""

    name = "exact"
    exact = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self._compiled: dict[str, object] = {}
        self._lock = threading.Lock()

    def compiled(self, prepared: Prepared):
        from .statevector import CompiledCircuit

        cc = prepared.extra.get("compiled")
        if cc is None:
            with self._lock:
                cc = self._compiled.get(prepared.key)
                if cc is None:
                    cc = CompiledCircuit(_strip_measurements(prepared.circuit))
                    self._compiled[prepared.key] = cc
            prepared.extra["compiled"] = cc
        return cc

    def submit_estimate(self, prepared, observables, values, *, precision, seed) -> Handle:
        import torch

        cc = self.compiled(prepared)

        def run():
            with torch.no_grad():
                evs = cc.expectation(torch.as_tensor(values, dtype=torch.float64), observables)
            evs = evs.numpy().T.copy()  # (O, N)
            return {"evs": evs, "stds": np.zeros_like(evs)}

        return Handle(f"exact-{uuid.uuid4().hex[:12]}", run)

    def submit_sample(self, prepared, values, *, shots, seed) -> Handle:
        import torch

        cc = self.compiled(prepared)
        measured = _measured_qubits(prepared.circuit)

        def run():
            with torch.no_grad():
                probs = cc.probabilities(torch.as_tensor(values, dtype=torch.float64)).numpy()
            return {"probs": _marginal(probs, measured, cc.num_qubits)}

        return Handle(f"exact-{uuid.uuid4().hex[:12]}", run)

    def value_and_jacobian(self, prepared, observables, values, columns):
        return self.compiled(prepared).value_and_jacobian(values, observables, columns=columns)

    def probs_and_jacobian(self, prepared, values, columns):
        cc = self.compiled(prepared)
        measured = _measured_qubits(prepared.circuit)
        if measured != list(range(cc.num_qubits)):
            raise BadInputError(
                "exact sampler gradients need every qubit measured into the clbit of the same "
                "index (circuit.measure_all()); use a shot-based backend for other readouts"
            )
        return cc.value_and_jacobian(values, probabilities=True, columns=columns)


# ---------------------------------------------------------------------------------------------
class _AerBase(Runner):
    """Shared preparation for the Aer runners: device noise restricted to the active qubits."""

    def prepare(self, circuit, isa, key: str) -> Prepared:
        if self.device is None:  # noiseless Aer: run the abstract circuit
            return Prepared(source=circuit, circuit=isa, key=key)
        from ..backends.noise import (
            active_qubits,
            compact_circuit,
            compact_observable,
            restricted_noise_model,
        )

        qubits = tuple(active_qubits(isa))
        small = compact_circuit(isa, qubits)
        noise = restricted_noise_model(self.device, qubits, scale=self.noise_scale)
        layout = isa.layout

        def map_observable(op):
            full = op.apply_layout(layout) if layout is not None else op
            return compact_observable(full, qubits)

        return Prepared(
            source=circuit,
            circuit=small,
            key=key,
            map_observable=map_observable,
            physical_qubits=qubits,
            noise_model=noise,
        )

    def _simulator(self, prepared: Prepared, method: str):
        from qiskit_aer import AerSimulator

        sim = prepared.extra.get(("sim", method))
        if sim is None:
            opts = {"method": method, "runtime_parameter_bind_enable": True}
            threads = os.environ.get("QMU_THREADS")
            if threads:  # a grid worker's share of the cores (Aer would take them all)
                opts["max_parallel_threads"] = int(threads)
            if prepared.noise_model is not None:
                opts["noise_model"] = prepared.noise_model
            sim = AerSimulator(**opts)
            prepared.extra[("sim", method)] = sim
        return sim


    # Sampling: shots from counts (used by the sampler, and by the shot-based estimator).
    def _measured_circuit(self, prepared: Prepared):
        circ = prepared.extra.get("measured")
        if circ is None:
            circ = prepared.circuit
            if circ.num_clbits == 0:
                circ = circ.copy()
                circ.measure_all()
            prepared.extra["measured"] = circ
        return circ

    #: Widest compact circuit simulated as a density matrix (4**k memory per parameter set).
    MAX_DENSITY_QUBITS = 10

    def _counts_job(self, prepared: Prepared, circuit, values, shots: int, seed: int):
        """Submit one job; returns ``(job_id, fn)`` where ``fn()`` gives (N, 2**clbits) outcome
        frequencies from ``shots`` shots per parameter set."""
        if self.device is not None and circuit.num_qubits <= self.MAX_DENSITY_QUBITS:
            return self._sampled_density_job(prepared, circuit, values, shots, seed)
        sim = self._simulator(prepared, "automatic")
        binds = [{p: values[:, i] for i, p in enumerate(circuit.parameters)}] if circuit.num_parameters else None
        job = sim.run(circuit, parameter_binds=binds, shots=shots, seed_simulator=int(seed))
        num_bits = circuit.num_clbits

        def probs():
            result = job.result()
            out = np.zeros((len(values), 2**num_bits))
            for i in range(len(values)):
                counts = result.data(i)["counts"]
                for key, c in counts.items():
                    out[i, int(key, 16)] = c
            return out / shots

        return job.job_id(), probs

    def _sampled_density_job(self, prepared: Prepared, circuit, values, shots: int, seed: int):
        """Shots drawn from the exact noisy outcome distribution.

        Aer simulates the density matrix once per parameter set (with the device's gate noise)
        and saves the probabilities of the measured qubits; the device's readout error — the
        same ``ReadoutError`` matrices of the noise model that Aer applies shot by shot — is
        applied to that distribution, and the counts are one multinomial draw of ``shots``.
        This has exactly the distribution of Aer's own shot sampling, at less than half its
        cost (measured: 1.15 s instead of 2.7 s for 1168 parameter sets of the 4-qubit HQML
        gradient circuit).
        """
        key = ("probability-circuit", id(circuit))
        entry = prepared.extra.get(key)
        if entry is None:
            measured = _measured_qubits(circuit)
            bare = _strip_measurements(circuit).copy()
            bare.save_probabilities(qubits=measured, label="probs")
            confusion = _readout_confusions(prepared.noise_model, measured)
            entry = (bare, confusion)
            prepared.extra[key] = entry
        bare, confusion = entry
        sim = self._simulator(prepared, "density_matrix")
        binds = [{p: values[:, i] for i, p in enumerate(bare.parameters)}] if bare.num_parameters else None
        job = sim.run(bare, parameter_binds=binds, shots=1)

        def probs():
            result = job.result()
            p = np.array([result.data(i)["probs"] for i in range(len(values))])
            p = _apply_confusion(p, confusion)
            rng = np.random.default_rng(int(seed))
            counts = rng.multinomial(shots, np.clip(p, 0, None) / np.clip(p, 0, None).sum(1, keepdims=True))
            return counts / shots

        return job.job_id(), probs

    def submit_sample(self, prepared, values, *, shots, seed) -> Handle:
        circuit = self._measured_circuit(prepared)
        job_id, probs = self._counts_job(prepared, circuit, values, shots, seed)
        return Handle(job_id, lambda: {"probs": probs()})


class AerEstimatorRunner(_AerBase):
    """qiskit-aer ``EstimatorV2``: exact expectation values (statevector or density matrix)."""

    exact = True

    def __init__(self, *, method: str, **kw):
        super().__init__(**kw)
        self.method = method
        self.name = f"aer_estimator:{method}"

    def submit_estimate(self, prepared, observables, values, *, precision, seed) -> Handle:
        from qiskit_aer.primitives import EstimatorV2

        est = prepared.extra.get("estimator")
        if est is None:
            est = EstimatorV2()
            est._backend = self._simulator(prepared, self.method)
            prepared.extra["estimator"] = est
        est.options.run_options["seed_simulator"] = int(seed)
        obs = np.empty((len(observables), 1), dtype=object)  # (O, 1) broadcasts against (N,)
        for i, op in enumerate(observables):
            obs[i, 0] = op
        job = est.run([(prepared.circuit, obs, values)], precision=precision or 0.0)

        def run():
            res = job.result()[0]
            return {"evs": np.asarray(res.data.evs, dtype=float), "stds": np.asarray(res.data.stds, dtype=float)}

        return Handle(job.job_id(), run)


class AerShotsRunner(_AerBase):
    """``AerSimulator`` with shots: counts with readout error, as the device would report them.

    Small compact circuits use the density-matrix method (one simulation per parameter set, then
    shots are sampled from it); wider ones fall back to Aer's automatic choice.
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        self.name = "aer_shots"

    def submit_estimate(self, prepared, observables, values, *, precision, seed) -> Handle:
        shots = self.shots or 1024
        circuit = self._measured_circuit(prepared)
        signs, consts = _z_parities(observables, circuit)
        job_id, probs = self._counts_job(prepared, circuit, values, shots, seed)

        def run():
            p = probs()  # (N, 2**k)
            evs = (p @ signs).T + consts[:, None]  # (O, N)
            # standard error of a ±1-valued mean: sqrt((1 - <Z>^2) / shots), per term
            var = np.clip(1 - ((p @ signs).T) ** 2, 0, None)
            return {"evs": evs, "stds": np.sqrt(var / shots)}

        return Handle(job_id, run)


def _z_parities(observables, circuit):
    """For Z-type observables on a circuit measuring qubit i into clbit i: a (2**k, O) matrix of
    the observables' values per outcome, and their identity (constant) parts."""
    k = circuit.num_clbits
    outcomes = np.arange(2**k)
    signs = np.zeros((2**k, len(observables)))
    consts = np.zeros(len(observables))
    for o, op in enumerate(observables):
        for pauli, coeff in zip(op.paulis, op.coeffs):
            if np.any(pauli.x):
                raise BadInputError(
                    "shot-based Aer estimation supports Z-basis observables only; use exact "
                    "noisy simulation (no --shots) for X/Y observables"
                )
            mask = 0
            for q in np.flatnonzero(pauli.z):
                mask |= 1 << int(q)
            if mask == 0:
                consts[o] += coeff.real
                continue
            parity = np.array([bin(x).count("1") & 1 for x in (outcomes & mask)])
            signs[:, o] += coeff.real * (1 - 2 * parity)
    return signs, consts


def _readout_confusions(noise_model, qubits) -> list:
    """Per measured qubit, the 2×2 matrix A[measured, true] of the noise model's readout error
    (identity where it has none), read through ``NoiseModel.to_dict``."""
    mats = {}
    default = None
    if noise_model is not None:
        for err in noise_model.to_dict().get("errors", []):
            if err.get("type") != "roerror":
                continue
            prob = np.asarray(err["probabilities"], dtype=float)  # rows: true, cols: measured
            gq = err.get("gate_qubits")
            if not gq:
                default = prob.T
            for qs in gq or []:
                if len(qs) == 1:
                    mats[int(qs[0])] = prob.T
    eye = np.eye(2)
    return [mats.get(q, default if default is not None else eye) for q in qubits]


def _apply_confusion(p: np.ndarray, confusion: list) -> np.ndarray:
    """Apply independent per-bit confusion matrices to (N, 2**m) distributions (bit i of the
    outcome index is measured qubit i)."""
    m = len(confusion)
    n = p.shape[0]
    t = p.reshape((n,) + (2,) * m)  # axis 1 is the most significant bit (qubit m-1)
    for i, mat in enumerate(confusion):
        if np.allclose(mat, np.eye(2)):
            continue
        axis = m - i  # qubit i lives on axis (m - i)
        t = np.moveaxis(np.tensordot(mat, t, axes=([1], [axis])), 0, axis)
    return t.reshape(n, 2**m)


def _strip_measurements(circuit):
    if circuit.num_clbits == 0:
        return circuit
    return circuit.remove_final_measurements(inplace=False)


def _measured_qubits(circuit) -> list[int]:
    """Qubit measured into clbit 0, 1, ... (all qubits when the circuit measures none)."""
    if circuit.num_clbits == 0:
        return list(range(circuit.num_qubits))
    where = {}
    for inst in circuit.data:
        if inst.operation.name == "measure":
            where[circuit.find_bit(inst.clbits[0]).index] = circuit.find_bit(inst.qubits[0]).index
    return [where[c] for c in range(circuit.num_clbits)]


def _marginal(probs: np.ndarray, measured: list[int], n: int) -> np.ndarray:
    """Marginal distribution of the measured qubits, outcome bits in clbit order."""
    if measured == list(range(n)):
        return probs
    idx = np.arange(2**n)
    out_index = np.zeros(2**n, dtype=np.int64)
    for c, q in enumerate(measured):
        out_index |= ((idx >> q) & 1) << c
    out = np.zeros((probs.shape[0], 2 ** len(measured)))
    np.add.at(out.T, out_index, probs.T)
    return out
