"""Batching primitives: ``BaseEstimatorV2`` / ``BaseSamplerV2`` over any backend.

A QNN forward sends one PUB per observable, all with the same circuit and parameter values; a
user may send any mix of PUBs. :class:`BatchingEstimator` merges every PUB that shares a circuit
and a precision into **one** broadcast evaluation — all distinct observables × all distinct
parameter sets — runs it through the :class:`~qmu_qiskit.execution.executor.Executor` (one job, or
a few chunks where the backend limits job size), and hands each PUB its slice back in the V2
result format. :class:`BatchingSampler` does the same for PUBs sharing a circuit and a shot count.

Both follow Qiskit's ``StatevectorEstimator`` / ``StatevectorSampler`` (result shapes under
broadcasting, per-PUB precision and shots, one ``BitArray`` per classical register, the same
``ValueError`` for an invalid PUB). Where they differ, on purpose (docs/execution.md):

* there is no ``seed`` option: every random draw (Gaussian noise for a precision > 0 on an exact
  estimator, shots drawn from the exact distribution on the exact engine) is seeded from the
  executor's seed and the job's content, so the same call gives the same numbers;
* on shot-based backends (``--shots``, ``fake_*``, ``ibm_*``) a PUB's precision sets its shots
  (``ceil(1 / precision**2)``, as IBM Runtime does); without one the executor's shots are used;
* a circuit without parameters is evaluated once per PUB; broadcast copies share that value.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import warnings
from collections import OrderedDict

import numpy as np
from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2
from qiskit.primitives.base.base_primitive_job import BasePrimitiveJob
from qiskit.primitives.containers import (
    BitArray,
    DataBin,
    PrimitiveResult,
    PubResult,
    SamplerPubResult,
)
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.providers import JobStatus, Options

from ..exceptions import BadInputError
from .structure import structure_key

_ids = itertools.count()

#: Widest measured register set the sampler turns into a dense distribution (2**k per row).
MAX_MEASURED_BITS = 24


class CompletedJob(BasePrimitiveJob):
    """A primitive job that is already finished when ``run`` returns.

    The executor evaluates eagerly: results are needed at once by the QNN, and the job ledger
    has recorded the underlying backend jobs with their own ids.
    """

    def __init__(self, result: PrimitiveResult):
        super().__init__(job_id=f"qmu-{next(_ids)}")
        self._result = result

    def result(self) -> PrimitiveResult:
        return self._result

    def status(self) -> JobStatus:
        return JobStatus.DONE

    def done(self) -> bool:
        return True

    def running(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def in_final_state(self) -> bool:
        return True

    def cancel(self):
        return None


def _to_spo(obs):
    from qiskit.quantum_info import SparseObservable, SparsePauliOp

    if isinstance(obs, SparsePauliOp):
        return obs
    if isinstance(obs, SparseObservable):
        return SparsePauliOp.from_sparse_observable(obs)
    if isinstance(obs, dict):
        labels, coeffs = zip(*obs.items()) if obs else (("I",), (0.0,))
        return SparsePauliOp(list(labels), list(coeffs))
    return SparsePauliOp(obs)


def _obs_key(op) -> tuple:
    return (tuple(op.paulis.to_labels()), op.coeffs.tobytes())


def shots_for_precision(precision: float) -> int:
    """Shots whose standard error of a ±1-valued mean is at most ``precision`` (IBM Runtime's
    rule)."""
    return max(1, math.ceil(1.0 / precision**2))


def _derived_seed(base: int, *parts) -> int:
    h = hashlib.sha256(str(int(base)).encode())
    for part in parts:
        h.update(b"|")
        h.update(part if isinstance(part, bytes) else str(part).encode())
    return int(h.hexdigest()[:12], 16) % (2**31)


class BatchingEstimator(BaseEstimatorV2):
    """Estimator V2 that turns each ``run`` into one broadcast job per (circuit, precision).

    Args:
        executor: the :class:`~qmu_qiskit.execution.executor.Executor` that runs the jobs.
        default_precision: precision of PUBs that give none (``run(precision=...)`` overrides
            it). Default: 0 (exact) where the backend computes exact expectation values, else
            ``None`` — the executor's shots.

    Example:
        >>> est = executor.estimator()
        >>> evs = est.run([(circuit, [z0, z1], values)]).result()[0].data.evs
    """

    def __init__(self, executor, *, default_precision: float | None = None):
        self._executor = executor
        if default_precision is None and executor.exact:
            default_precision = 0.0
        if default_precision is not None and not default_precision >= 0:
            raise ValueError("default_precision must be non-negative")
        self._default_precision = default_precision

    @property
    def default_precision(self) -> float | None:
        """Precision of PUBs that give none (``None``: the executor's shots decide)."""
        return self._default_precision

    @property
    def options(self) -> Options:
        return Options(default_precision=self._default_precision, shots=self._executor.shots)

    def run(self, pubs, *, precision: float | None = None) -> CompletedJob:
        executor = self._executor
        if precision is None:
            precision = self._default_precision
        elif not precision >= 0:
            raise ValueError("precision must be non-negative")
        items = [self._coerce(pub, precision) for pub in pubs]
        executor.cost.add(estimator_calls=1)
        results: list = [None] * len(items)
        groups: OrderedDict[tuple, list[int]] = OrderedDict()
        for i, item in enumerate(items):
            groups.setdefault((id(item["circuit"]), item["precision"]), []).append(i)
        for (_, prec), members in groups.items():
            circuit = items[members[0]]["circuit"]
            num_params = circuit.num_parameters
            # distinct observables and distinct parameter rows of the whole group
            obs_index: dict = {}
            observables: list = []
            row_blocks: list = []
            seen_values: dict = {}
            offset = 0
            for i in members:
                item = items[i]
                flat_obs = []
                for op in item["observables"].reshape(-1):
                    k = _obs_key(op)
                    if k not in obs_index:
                        obs_index[k] = len(observables)
                        observables.append(op)
                    flat_obs.append(obs_index[k])
                item["obs_idx"] = np.array(flat_obs, dtype=np.int64).reshape(
                    item["observables"].shape
                )
                vals = item["values"]
                pshape = vals.shape[:-1]
                nrows = int(np.prod(pshape, dtype=int))
                if num_params == 0:
                    # one evaluation serves every broadcast copy of a parameter-free circuit
                    item["row_offset"], item["const"] = 0, True
                    if not row_blocks:
                        row_blocks.append(np.zeros((1, 0)))
                        offset = 1
                    continue
                vkey = (vals.shape, vals.tobytes())
                if vkey in seen_values:
                    item["row_offset"] = seen_values[vkey]
                else:
                    seen_values[vkey] = offset
                    item["row_offset"] = offset
                    row_blocks.append(vals.reshape(nrows, num_params))
                    offset += nrows
            all_values = np.concatenate(row_blocks, 0) if row_blocks else np.zeros((0, num_params))
            shots = None
            if not executor.exact:
                shots = shots_for_precision(prec) if prec else executor.default_shots
            if len(all_values):
                evs, stds = executor.expectation_values(
                    circuit, observables, all_values, precision=prec or None, shots=shots
                )
            else:
                evs = stds = np.zeros((len(observables), 0))
            for i in members:
                item = items[i]
                pshape = item["values"].shape[:-1]
                nrows = int(np.prod(pshape, dtype=int))
                if item.get("const"):
                    rows = np.zeros(pshape, dtype=np.int64)
                else:
                    rows = (item["row_offset"] + np.arange(nrows)).reshape(pshape)
                shape = np.broadcast_shapes(item["obs_idx"].shape, pshape)
                o_b = np.broadcast_to(item["obs_idx"], shape)
                r_b = np.broadcast_to(rows, shape)
                data = DataBin(evs=evs[o_b, r_b], stds=stds[o_b, r_b], shape=shape)
                results[i] = PubResult(
                    data,
                    metadata={
                        "target_precision": (
                            float(prec) if prec else (1 / math.sqrt(shots) if shots else 0.0)
                        ),
                        "shots": shots,
                        "circuit_metadata": circuit.metadata,
                    },
                )
        return CompletedJob(
            PrimitiveResult(results, metadata={"version": 2, "backend": executor.spec.name})
        )

    @staticmethod
    def _coerce(pub, precision):
        """Circuit, observables (object array of SparsePauliOp), values (..., P), precision."""
        from qiskit import QuantumCircuit
        from qiskit.quantum_info import SparsePauliOp

        if (
            isinstance(pub, tuple)
            and len(pub) == 3
            and isinstance(pub[0], QuantumCircuit)
            and isinstance(pub[1], SparsePauliOp)
            and isinstance(pub[2], np.ndarray)
            and pub[2].ndim == 2
            and pub[2].shape[1] == pub[0].num_parameters > 0
            and pub[1].num_qubits == pub[0].num_qubits
            and not np.any(pub[1].coeffs.imag)
        ):
            # fast path for what EstimatorQNN sends: (circuit, observable, (N, P) array), checked
            # as EstimatorPub.validate would; anything else takes the reference path below
            obs = np.empty((), dtype=object)
            obs[()] = pub[1]
            values = np.asarray(pub[2], dtype=np.float64)
            return {"circuit": pub[0], "observables": obs, "values": values, "precision": precision}
        coerced = EstimatorPub.coerce(pub, precision)
        coerced.validate()
        flat = [_to_spo(o) for o in coerced.observables.sparse_observables_array().reshape(-1)]
        obs = np.empty(len(flat), dtype=object)
        obs[:] = flat
        obs = obs.reshape(coerced.observables.shape)
        circuit = coerced.circuit
        values = coerced.parameter_values.as_array(circuit.parameters)
        pshape = coerced.parameter_values.shape
        values = np.asarray(values, dtype=np.float64).reshape(pshape + (circuit.num_parameters,))
        return {
            "circuit": circuit,
            "observables": obs,
            "values": values,
            "precision": coerced.precision,
        }


class Readout:
    """How a circuit's final measurements fill its classical registers.

    A circuit without classical bits reads every qubit (qubit ``i`` into bit ``i``), as
    ``SamplerQNN`` does with ``measure_all``; it has no registers for the sampler's result.

    Attributes:
        circuit: the circuit without final measurements, measuring the ``k`` measured qubits
            into a fresh ``k``-bit register (what the executor runs; cached, so prepared once).
        registers: per register, ``(name, size, bit positions)``: position ``j`` is the index of
            register bit ``j`` among the ``k`` measured bits, or ``-1`` (never measured: 0).
        num_bits: bits of an outcome (the circuit's clbits, or its qubits if it has none).
        clbit_index: (2**k,) the outcome over all ``num_bits`` bits (bit ``c`` = clbit ``c``;
            unmeasured clbits 0) of each outcome over the ``k`` measured bits.
    """

    def __init__(self, circuit):
        from qiskit import QuantumCircuit

        mapping = {}  # clbit index -> qubit index, final measurements only (as the reference)
        if circuit.num_clbits == 0:
            mapping = {q: q for q in range(circuit.num_qubits)}
        active_q = set(range(circuit.num_qubits))
        active_c = set(range(circuit.num_clbits))
        for inst in reversed(circuit.data):
            name = inst.operation.name
            if name == "measure":
                c = circuit.find_bit(inst.clbits[0]).index
                q = circuit.find_bit(inst.qubits[0]).index
                if c in active_c and q in active_q:
                    mapping[c] = q
                    active_c.discard(c)
            elif name not in ("barrier", "delay"):
                for qq in inst.qubits:
                    active_q.discard(circuit.find_bit(qq).index)
            if not active_c or not active_q:
                break
        bare = circuit.remove_final_measurements(inplace=False) if circuit.num_clbits else circuit
        qubits = sorted(set(mapping.values()))
        if len(qubits) > MAX_MEASURED_BITS:
            raise BadInputError(
                f"{len(qubits)} measured qubits: the sampler handles at most {MAX_MEASURED_BITS}"
            )
        run = QuantumCircuit(bare.num_qubits, len(qubits), global_phase=bare.global_phase)
        for inst in bare.data:
            if inst.operation.name == "measure":
                raise BadInputError(
                    "the sampler supports final measurements only (this circuit measures "
                    "mid-circuit); move the measurements to the end"
                )
            if inst.clbits or getattr(inst.operation, "blocks", None):
                raise BadInputError(
                    "the sampler cannot run classical control flow or conditions; remove them"
                )
            run.append(inst.operation, [run.qubits[bare.find_bit(q).index] for q in inst.qubits])
        for i, q in enumerate(qubits):
            run.measure(q, i)
        run.metadata = circuit.metadata
        where = {q: i for i, q in enumerate(qubits)}
        self.circuit = run
        self.key = structure_key(run)
        self.num_measured = len(qubits)
        self.num_bits = circuit.num_clbits or circuit.num_qubits
        outcomes = np.arange(2 ** len(qubits), dtype=np.int64)
        index = np.zeros_like(outcomes)
        for c, q in mapping.items():
            index |= ((outcomes >> where[q]) & 1) << c
        self.clbit_index = index

        self.registers = []
        for creg in circuit.cregs:
            if creg.size > 64:
                raise BadInputError(f"register {creg.name!r} has {creg.size} bits; at most 64")
            positions = []
            for bit in creg:
                c = circuit.find_bit(bit).index
                positions.append(where[mapping[c]] if c in mapping else -1)
            self.registers.append((creg.name, creg.size, positions))

    def scatter(self, arr: np.ndarray) -> np.ndarray:
        """(N, 2**k, ...) per measured outcome → (N, 2**num_bits, ...) per clbit outcome."""
        if self.num_bits > MAX_MEASURED_BITS:
            raise BadInputError(
                f"outcomes over {self.num_bits} classical bits: at most {MAX_MEASURED_BITS} here"
            )
        return _scatter_outcomes(arr, self.clbit_index, self.num_bits)


def _scatter_outcomes(arr: np.ndarray, index: np.ndarray, num_bits: int) -> np.ndarray:
    """(N, 2**k, ...) values per measured outcome → (N, 2**num_bits, ...) per clbit outcome."""
    if len(index) == 2**num_bits and np.array_equal(index, np.arange(len(index))):
        return arr
    out = np.zeros((arr.shape[0], 2**num_bits) + arr.shape[2:], dtype=arr.dtype)
    out[:, index] = arr
    return out


def _register_bits(samples: np.ndarray, size: int, positions: list[int]) -> BitArray:
    """A ``BitArray`` of one register from outcome indices over the measured bits."""
    value = np.zeros(samples.shape, dtype=np.uint64)
    for j, pos in enumerate(positions):
        if pos >= 0:
            value |= ((samples >> np.uint64(pos)) & np.uint64(1)) << np.uint64(j)
    num_bytes = (size + 7) // 8
    shifts = np.arange(num_bytes - 1, -1, -1, dtype=np.uint64) * np.uint64(8)
    packed = ((value[..., None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)
    return BitArray(packed, size)


class BatchingSampler(BaseSamplerV2):
    """Sampler V2 over the executor: one job per (circuit, shots), all parameter sets at once.

    Each PUB result has one ``BitArray`` per classical register (``meas`` after
    ``measure_all``), as ``StatevectorSampler`` gives. On the exact engine the shots are drawn
    from the exact outcome distribution with a seeded generator; elsewhere they are the backend's
    counts. :meth:`probabilities` gives the outcome distributions themselves (exact on the exact
    engine, shot frequencies elsewhere).

    Args:
        executor: the executor that runs the jobs.
        default_shots: shots of PUBs that give none (default: the executor's shots, else 1024).
    """

    def __init__(self, executor, *, default_shots: int | None = None):
        self._executor = executor
        if default_shots is None:
            default_shots = executor.default_shots
        if isinstance(default_shots, bool) or not isinstance(default_shots, (int, np.integer)):
            raise TypeError("default_shots must be an integer")
        if default_shots <= 0:
            raise ValueError("default_shots must be positive")
        self._default_shots = int(default_shots)
        self._readouts: OrderedDict[int, tuple[object, Readout]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def default_shots(self) -> int:
        return self._default_shots

    @property
    def options(self) -> Options:
        return Options(default_shots=self._default_shots)

    def readout(self, circuit) -> Readout:
        """The measured circuit the executor runs for ``circuit`` (cached per circuit)."""
        with self._lock:
            entry = self._readouts.get(id(circuit))
            if entry is not None and entry[0] is circuit:
                self._readouts.move_to_end(id(circuit))
                return entry[1]
        readout = Readout(circuit)
        with self._lock:
            self._readouts[id(circuit)] = (circuit, readout)
            while len(self._readouts) > 256:
                self._readouts.popitem(last=False)
        return readout

    def probabilities(self, circuit, values, *, shots: int | None = None) -> np.ndarray:
        """Outcome distributions (N, 2**num_bits) over the circuit's clbits (bit ``c`` of the
        index = clbit ``c``; every qubit when it has no clbits): exact on the exact engine, shot
        frequencies elsewhere."""
        readout = self.readout(circuit)
        probs = self._executor.probabilities(
            readout.circuit, values, shots=shots or self._default_shots
        )
        return readout.scatter(probs)

    def run(self, pubs, *, shots: int | None = None) -> CompletedJob:
        executor = self._executor
        if shots is None:
            shots = self._default_shots
        coerced = [SamplerPub.coerce(pub, shots) for pub in pubs]
        for pub in coerced:
            pub.validate()
        if any(len(pub.circuit.cregs) == 0 for pub in coerced):
            warnings.warn(
                "One of your circuits has no output classical registers and so the result "
                "will be empty. Did you mean to add measurement instructions?",
                UserWarning,
                stacklevel=2,
            )
        executor.cost.add(sampler_calls=1)
        groups: OrderedDict[tuple, list[int]] = OrderedDict()
        for i, pub in enumerate(coerced):
            groups.setdefault((id(pub.circuit), pub.shots), []).append(i)
        out: list = [None] * len(coerced)
        exact = executor.exact_probabilities
        for (_, pub_shots), members in groups.items():
            circuit = coerced[members[0]].circuit
            readout = self.readout(circuit)
            num_params = circuit.num_parameters
            blocks, counts_rows = [], []
            for i in members:
                vals = coerced[i].parameter_values.as_array(circuit.parameters)
                n = int(np.prod(coerced[i].shape, dtype=int))
                counts_rows.append(n)
                blocks.append(np.asarray(vals, dtype=np.float64).reshape(n, num_params))
            values = np.concatenate(blocks, 0)
            if not readout.registers:
                for i in members:
                    out[i] = SamplerPubResult(
                        DataBin(shape=coerced[i].shape),
                        metadata={"shots": pub_shots, "circuit_metadata": circuit.metadata},
                    )
                continue
            const = num_params == 0
            run_rows = values[:1] if const else values
            total = len(values)
            k = readout.num_measured
            seed = _derived_seed(
                executor.seed,
                "sampler",
                executor.spec.name,
                readout.circuit.num_qubits,
                hashlib.sha256(values.tobytes()).hexdigest(),
                pub_shots,
                readout.key,
            )
            rng = np.random.default_rng(seed)
            if k == 0 or total == 0:
                samples = np.zeros((total, pub_shots), dtype=np.uint64)
            elif exact:
                probs = executor.probabilities(readout.circuit, run_rows, shots=pub_shots)
                probs = np.clip(probs, 0, None)
                probs = probs / probs.sum(1, keepdims=True)
                if const:
                    probs = np.broadcast_to(probs, (total, probs.shape[1]))
                samples = np.stack(
                    [rng.choice(probs.shape[1], size=pub_shots, p=p) for p in probs]
                ).astype(np.uint64)
            else:
                # iid shots: one run of N·shots split at random is N independent runs of shots
                job_shots = pub_shots * total if const else pub_shots
                freq = executor.probabilities(readout.circuit, run_rows, shots=job_shots)
                counts = np.rint(freq * job_shots).astype(np.int64)
                drawn = [
                    rng.permutation(np.repeat(np.arange(len(c), dtype=np.uint64), c))
                    for c in counts
                ]
                samples = drawn[0].reshape(total, pub_shots) if const else np.stack(drawn)
            start = 0
            for i, n in zip(members, counts_rows):
                pshape = coerced[i].shape
                part = samples[start : start + n].reshape(pshape + (pub_shots,))
                start += n
                fields = {
                    name: _register_bits(part, size, positions)
                    for name, size, positions in readout.registers
                }
                meta = {"shots": pub_shots, "circuit_metadata": circuit.metadata}
                if exact:
                    meta["seed"] = seed
                out[i] = SamplerPubResult(DataBin(**fields, shape=pshape), metadata=meta)
        return CompletedJob(
            PrimitiveResult(out, metadata={"version": 2, "backend": executor.spec.name})
        )
