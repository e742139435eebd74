"""The runner interface: one :class:`Runner` per engine, typed results, shared helpers.

A runner takes one circuit, a list of observables and a (N, P) array of parameter values and
returns all N×O expectation values (:class:`Estimates`) or N outcome distributions
(:class:`Distributions`) from **one** job. The executor (:mod:`qmu_qiskit.execution.executor`)
does the rest — merging PUBs, transpile caching, chunking, the job ledger, cost accounting — and
asks a runner only what it declares (its capability attributes), never which class it is.
qiskit-machine-learning's ``BaseEstimatorGradient.run`` → ``_run`` is the pattern: the executor's
``_job`` is the one public entry, a runner implements ``submit_estimate`` / ``submit_sample``.

Engines: :mod:`.exact_runner` (vectorised statevector), :mod:`.aer_runners` (qiskit-aer:
statevector, density matrix, shots), :mod:`.runtime_runner` (qiskit-ibm-runtime: local testing
mode and IBM hardware); :func:`qmu_qiskit.execution.runners.make_runner` picks one for a backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import BackendError


@dataclass(frozen=True)
class Estimates:
    """Expectation values of one job: ``evs`` and ``stds``, both (O, N)."""

    evs: np.ndarray
    stds: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the job ledger stores."""
        return {"evs": self.evs, "stds": self.stds}


@dataclass(frozen=True)
class Distributions:
    """Outcome distributions of one job: ``probs`` (N, 2**bits), bit ``c`` = clbit ``c``."""

    probs: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {"probs": self.probs}


def typed_result(arrays) -> Estimates | Distributions:
    """A stored or freshly computed result as its typed form."""
    if isinstance(arrays, (Estimates, Distributions)):
        return arrays
    if "probs" in arrays:
        return Distributions(np.asarray(arrays["probs"]))
    return Estimates(np.asarray(arrays["evs"]), np.asarray(arrays["stds"]))


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

    source: Any  # qiskit QuantumCircuit (qiskit ships no type information)
    circuit: Any
    key: str
    map_observable: Callable = lambda op: op
    physical_qubits: tuple[int, ...] | None = None
    noise_model: Any = None
    extra: dict = field(default_factory=dict)
    _observables: dict = field(default_factory=dict)

    def observables(self, observables) -> list:
        """Map abstract observables onto ``circuit`` (layout applied, compacted); cached."""
        from qiskit.quantum_info import SparsePauliOp

        observables = list(observables)
        from .statevector import _observable_snapshot, _same_observables

        hit = self._observables.get("last")  # one slot: the QNN passes the same list each call
        if hit is not None and _same_observables(hit[0], observables):
            return list(hit[1])  # the same, unchanged objects as last time: no relabelling
        out = []
        for obs in observables:
            op = obs if isinstance(obs, SparsePauliOp) else SparsePauliOp(obs)
            k = (tuple(op.paulis.to_labels()), op.coeffs.tobytes())
            mapped = self._observables.get(k)
            if mapped is None:
                mapped = self.map_observable(op)
                self._observables[k] = mapped
            out.append(mapped)
        self._observables["last"] = (_observable_snapshot(observables), tuple(out))
        return out


@dataclass
class Pub:
    """One circuit of a multi-circuit job.

    Attributes:
        prepared: the prepared circuit.
        values: (N, P) parameter values in ``prepared.circuit.parameters`` order.
        observables: observables already mapped onto ``prepared.circuit`` (estimates only).
        state: ideal amplitude loading (Aer only): the normalised amplitude vector of the
            circuit's virtual qubits (index bit v = virtual qubit v), loaded exactly before
            ``prepared.circuit`` runs.
    """

    prepared: Prepared
    values: np.ndarray
    observables: list | None = None
    state: np.ndarray | None = None


class Handle:
    """A submitted job. ``result()`` blocks and returns its typed result."""

    def __init__(self, job_id: str, fn: Callable[[], object], *, session_id: str | None = None):
        self.job_id = job_id
        self.session_id = session_id
        self._fn = fn
        self._result: Estimates | Distributions | None = None
        self.qpu_seconds = 0.0

    def result(self) -> Estimates | Distributions:
        if self._result is None:
            self._result = typed_result(self._fn())
        return self._result


class Runner(ABC):
    """One engine. Subclasses set the capability attributes and implement the ``submit_*``
    methods; everything else has a default.

    Capabilities (class attributes) the executor reads instead of the runner's class:

    * ``kind`` — ``exact``, ``aer`` or ``runtime``: default job-size limits;
    * ``remote`` — jobs outlive this process (IBM Runtime): retrievable by id;
    * ``exact`` — exact expectation values (no shot noise);
    * ``exact_probabilities`` — sampling gives exact distributions (else shot frequencies);
    * ``exact_gradients`` — :meth:`value_and_jacobian` / :meth:`probs_and_jacobian` exist;
    * ``native_amplitude_encoding`` — evaluates a leading amplitude encoding itself (else the
      executor splits such circuits by sample);
    * ``records_jobs`` — jobs go to the job ledger (in-process exact evaluation does not).
    """

    name = "runner"
    kind = "aer"
    remote = False
    exact = False
    exact_probabilities = False
    exact_gradients = False
    #: the sampler's gradient is exact too (``False``: parameter shift on the sampler's counts)
    exact_sampler_gradients = True
    native_amplitude_encoding = False
    records_jobs = True
    needs_transpile = False
    #: ``cpu`` or ``cuda[:N]``, set by the executor (:func:`~.executor.check_device`)
    compute_device = "cpu"

    def __init__(self, *, spec, device=None, shots: int | None = None, noise_scale: float = 1.0):
        self.spec = spec
        self.device = device
        self.shots = shots
        self.noise_scale = noise_scale

    @property
    def target(self):
        return None if self.device is None else self.device.target

    def prepare(self, circuit, isa, key: str, *, keep_virtual: bool = False) -> Prepared:
        return Prepared(source=circuit, circuit=isa, key=key)

    @abstractmethod
    def submit_estimate(
        self, prepared: Prepared, observables, values, *, precision, seed, shots=None
    ) -> Handle:
        """One job: expectation values of ``observables`` at every row of ``values``."""

    @abstractmethod
    def submit_sample(self, prepared: Prepared, values, *, shots, seed) -> Handle:
        """One job: outcome distributions of the measured circuit at every row of ``values``."""

    def submit_estimate_pubs(self, pubs: list[Pub], *, precision, seed, shots=None) -> Handle:
        """Several circuits in one job; ``evs``/``stds`` are (O, ΣN) in pub order."""
        if len(pubs) == 1 and pubs[0].state is None:
            p = pubs[0]
            return self.submit_estimate(
                p.prepared, p.observables, p.values, precision=precision, seed=seed, shots=shots
            )
        raise BackendError(f"the {self.name} runner cannot run several circuits in one job")

    def submit_sample_pubs(self, pubs: list[Pub], *, shots, seed) -> Handle:
        """Several measured circuits in one job; ``probs`` is (ΣN, 2**clbits) in pub order."""
        if len(pubs) == 1 and pubs[0].state is None:
            p = pubs[0]
            return self.submit_sample(p.prepared, p.values, shots=shots, seed=seed)
        raise BackendError(f"the {self.name} runner cannot run several circuits in one job")

    def value_and_jacobian(self, prepared: Prepared, observables, values, columns):
        """Exact values (N, O) and Jacobian (N, O, C) (runners with ``exact_gradients``)."""
        raise BackendError("exact gradients need the noiseless 'aer' backend with engine 'exact'")

    def probs_and_jacobian(self, prepared: Prepared, values, columns):
        """Exact distributions (N, K) and Jacobian (N, K, C) (``exact_gradients``)."""
        raise BackendError("exact gradients need the noiseless 'aer' backend with engine 'exact'")

    def value_and_pullback(self, prepared: Prepared, observables, values):
        """Exact values (N, O) and a vector–Jacobian pullback (``exact_gradients``)."""
        raise BackendError("exact gradients need the noiseless 'aer' backend with engine 'exact'")

    def probs_and_pullback(self, prepared: Prepared, values):
        """Exact distributions (N, K) and a vector–Jacobian pullback (``exact_gradients``)."""
        raise BackendError("exact gradients need the noiseless 'aer' backend with engine 'exact'")

    def retrieve(self, job_id: str) -> Handle:  # pragma: no cover - remote runners only
        raise BackendError(f"the {self.name} runner has no jobs to retrieve by id")

    def describe(self) -> dict:
        out = {"runner": self.name, "shots": self.shots, "noise_scale": self.noise_scale}
        if self.compute_device != "cpu":
            out["device"] = self.compute_device
        return out

    def close(self) -> None:  # noqa: B027 - optional hook; runners holding nothing keep the no-op
        pass


def on_device(runner: Runner):
    """The torch default-device context of a torch engine's computations (``cpu``: none)."""
    import contextlib

    if runner.compute_device == "cpu":
        return contextlib.nullcontext()
    import torch

    return torch.device(runner.compute_device)


def on_device_pullback(runner: Runner, pullback):
    """``pullback`` run in ``runner``'s device context (the backward runs later)."""
    if runner.compute_device == "cpu":
        return pullback

    def on(cotangent, columns=None, sum_rows=()):
        with on_device(runner):
            return pullback(cotangent, columns, sum_rows=sum_rows)

    return on


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
