"""Batching primitives: ``BaseEstimatorV2`` / ``BaseSamplerV2`` over any backend.

A QNN forward sends one PUB per observable, all with the same circuit and parameter values; a
user may send any mix of PUBs. :class:`BatchingEstimator` merges every PUB that shares a circuit
into **one** broadcast evaluation — all distinct observables × all distinct parameter sets — runs
it through the :class:`~qmu_qiskit.execution.executor.Executor` (one job, or a few chunks where
the backend limits job size), and hands each PUB its slice back in the V2 result format.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2
from qiskit.primitives.base.base_primitive_job import BasePrimitiveJob
from qiskit.primitives.containers import DataBin, PrimitiveResult, PubResult, SamplerPubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.providers import JobStatus

_ids = itertools.count()


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


class BatchingEstimator(BaseEstimatorV2):
    """Estimator V2 that turns each ``run`` into one broadcast job per circuit.

    Args:
        executor: the :class:`~qmu_qiskit.execution.executor.Executor` that runs the jobs.

    Example:
        >>> est = executor.estimator()
        >>> evs = est.run([(circuit, [z0, z1], values)]).result()[0].data.evs
    """

    def __init__(self, executor):
        self._executor = executor

    @property
    def options(self):
        from qiskit.providers import Options

        return Options(default_precision=0.0 if self._executor.exact else None)

    def run(self, pubs, *, precision: float | None = None) -> CompletedJob:
        executor = self._executor
        executor.cost.add(estimator_calls=1)
        items = [self._coerce(pub, precision) for pub in pubs]
        results: list = [None] * len(items)
        groups: "OrderedDict[int, list[int]]" = OrderedDict()
        for i, item in enumerate(items):
            groups.setdefault(id(item["circuit"]), []).append(i)
        for members in groups.values():
            circuit = items[members[0]]["circuit"]
            prec = items[members[0]]["precision"]
            # distinct observables and distinct parameter rows of the whole group
            obs_index: dict = {}
            observables: list = []
            row_blocks, row_offsets = [], []
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
                item["obs_idx"] = np.array(flat_obs, dtype=np.int64).reshape(item["observables"].shape)
                vals = item["values"]
                vkey = (vals.shape, vals.tobytes())
                if vkey in seen_values:
                    item["row_offset"] = seen_values[vkey]
                else:
                    seen_values[vkey] = offset
                    item["row_offset"] = offset
                    row_blocks.append(vals.reshape(-1, circuit.num_parameters))
                    offset += row_blocks[-1].shape[0]
            all_values = np.concatenate(row_blocks, 0)
            evs, stds = executor.expectation_values(circuit, observables, all_values, precision=prec)
            for i in members:
                item = items[i]
                pshape = item["values"].shape[:-1]
                nrows = int(np.prod(pshape, dtype=int))
                rows = (item["row_offset"] + np.arange(nrows)).reshape(pshape)
                shape = np.broadcast_shapes(item["obs_idx"].shape, pshape)
                o_b = np.broadcast_to(item["obs_idx"], shape)
                r_b = np.broadcast_to(rows, shape)
                data = DataBin(evs=evs[o_b, r_b], stds=stds[o_b, r_b], shape=shape)
                results[i] = PubResult(
                    data, metadata={"target_precision": prec or 0.0, "shots": executor.shots}
                )
        return CompletedJob(PrimitiveResult(results, metadata={"version": 2, "backend": executor.spec.name}))

    @staticmethod
    def _coerce(pub, precision):
        """Circuit, observables (object array of SparsePauliOp), values (..., P), precision."""
        from qiskit import QuantumCircuit

        if (
            isinstance(pub, tuple)
            and len(pub) in (2, 3)
            and isinstance(pub[0], QuantumCircuit)
            and not isinstance(pub[1], (np.ndarray, list, tuple))
            and (len(pub) == 2 or isinstance(pub[2], np.ndarray))
        ):
            # fast path for what EstimatorQNN sends: (circuit, observable, (N, P) array)
            circuit = pub[0]
            obs = np.empty((), dtype=object)
            obs[()] = _to_spo(pub[1])
            values = pub[2] if len(pub) == 3 else np.zeros((0,))
            values = np.asarray(values, dtype=np.float64)
            if values.ndim == 1 and circuit.num_parameters:
                values = values.reshape(circuit.num_parameters)
            if values.ndim == 1 and not circuit.num_parameters:
                values = values.reshape(0)
            return {"circuit": circuit, "observables": obs, "values": values, "precision": precision}
        coerced = EstimatorPub.coerce(pub, precision)
        coerced.validate()
        obs_arr = coerced.observables
        flat = [_to_spo(obs_arr.slice(idx)) for idx in np.ndindex(obs_arr.shape)] if obs_arr.shape else [_to_spo(obs_arr.slice(()))]
        obs = np.empty(len(flat), dtype=object)
        obs[:] = flat
        obs = obs.reshape(obs_arr.shape)
        circuit = coerced.circuit
        values = coerced.parameter_values.as_array(circuit.parameters)
        return {
            "circuit": circuit,
            "observables": obs,
            "values": values,
            "precision": coerced.precision,
        }


class BatchingSampler(BaseSamplerV2):
    """Sampler V2 over the executor: one job per PUB (all its parameter sets at once).

    Results carry ``probabilities`` (outcome distributions over the classical bits, exact on the
    exact engine) and, for shot-based backends, the measured bits as a ``BitArray`` named after
    the circuit's classical register (``meas`` after ``measure_all``).
    """

    def __init__(self, executor, *, default_shots: int | None = None):
        self._executor = executor
        self._default_shots = default_shots

    def run(self, pubs, *, shots: int | None = None) -> CompletedJob:
        from qiskit.primitives.containers import BitArray

        executor = self._executor
        executor.cost.add(sampler_calls=1)
        shots = shots or self._default_shots or executor.shots or 1024
        out = []
        for pub in pubs:
            coerced = SamplerPub.coerce(pub, shots)
            circuit = coerced.circuit
            values = coerced.parameter_values.as_array(circuit.parameters)
            pshape = values.shape[:-1]
            probs = executor.probabilities(circuit, values.reshape(-1, circuit.num_parameters), shots=coerced.shots)
            probs = probs.reshape(*pshape, probs.shape[-1])
            fields = {"probabilities": probs}
            if not executor.exact and circuit.cregs:
                counts = np.rint(probs * coerced.shots).astype(np.int64)
                num_bits = circuit.num_clbits
                arrays = []
                for idx in np.ndindex(pshape):
                    c = {format(k, f"0{num_bits}b"): int(v) for k, v in enumerate(counts[idx]) if v}
                    arrays.append(BitArray.from_counts(c, num_bits=num_bits))
                if arrays:
                    bits = BitArray.concatenate([a.reshape(1, *a.shape) for a in arrays], 0) if len(arrays) > 1 else arrays[0].reshape(1)
                    fields[circuit.cregs[0].name] = bits.reshape(pshape) if pshape else arrays[0]
            out.append(
                SamplerPubResult(
                    DataBin(**fields, shape=pshape),
                    metadata={"shots": None if executor.exact else coerced.shots, "exact": executor.exact},
                )
            )
        return CompletedJob(PrimitiveResult(out, metadata={"version": 2, "backend": executor.spec.name}))
