"""Gradients as qiskit-machine-learning gradient classes, one job per call.

qiskit-machine-learning's ``ParamShiftEstimatorGradient`` sends one PUB per shifted parameter set
(B·n·2P PUBs for a mini-batch, performance.md lesson 1) and re-runs the pass manager on every
backward call. Here every gradient call becomes a single broadcast evaluation:

* :class:`BatchedParamShiftEstimatorGradient` / :class:`BatchedParamShiftSamplerGradient` — the
  parameter-shift rule (Mitarai et al. 2018; Schuld et al. 2019) on a copy of the circuit whose
  every gate angle is a unique parameter (qiskit-machine-learning's own construction), all
  shifted parameter sets of all rows in **one** job; for shot-based, noisy and hardware backends;
* :class:`ExactEstimatorGradient` / :class:`ExactSamplerGradient` — exact adjoint
  differentiation of the vectorised statevector (:mod:`.statevector`), for the noiseless backend.

Both keep the ``BaseEstimatorGradient`` / ``BaseSamplerGradient`` contract, so a stock
``EstimatorQNN``/``SamplerQNN`` can use them; our QNNs (:mod:`qmu_qiskit.models.qnn`) also call
:meth:`values_and_jacobian` to get the forward values and the Jacobian from the same job.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
from qiskit.providers import Options
from qiskit_machine_learning.gradients import (
    BaseEstimatorGradient,
    BaseSamplerGradient,
    EstimatorGradientResult,
    SamplerGradientResult,
)

from ..exceptions import BadInputError

# Gates whose parameterised forms are exp(-i θ/2 P): the two-term shift rule is exact for them.
SUPPORTED_GATES = ("x", "y", "z", "h", "rx", "ry", "rz", "p", "cx", "cy", "cz", "ryy", "rxx", "rzz", "rzx")


def _columns(circuit, parameters) -> tuple[int, ...]:
    index = {p: i for i, p in enumerate(circuit.parameters)}
    return tuple(index[p] for p in parameters)


def _group(circuits, parameter_values, parameters):
    """Group gradient requests by (circuit, parameter subset); yields (circuit, columns, rows)."""
    groups: "OrderedDict[tuple, list[int]]" = OrderedDict()
    cols_of = {}
    for i, (circ, params) in enumerate(zip(circuits, parameters)):
        key = (id(circ), tuple(p.name for p in params))
        if key not in cols_of:
            cols_of[key] = (circ, _columns(circ, params))
        groups.setdefault(key, []).append(i)
    for key, rows in groups.items():
        circ, cols = cols_of[key]
        yield circ, cols, rows


def _unique_rows(values: np.ndarray):
    """Distinct rows and the inverse index (QNNs tile the same rows once per observable)."""
    if len(values) == 0:
        return values, np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(values, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


class _EstimatorGradientMixin:
    """The ``_run`` of both estimator gradients, on top of :meth:`values_and_jacobian`."""

    def _run(self, circuits, observables, parameter_values, parameters, **options):
        from ..execution.primitives import _obs_key, _to_spo

        gradients: list = [None] * len(circuits)
        metadata: list = [None] * len(circuits)
        values_all = np.asarray(parameter_values, dtype=np.float64)
        for circ, cols, rows in _group(circuits, values_all, parameters):
            ops = [_to_spo(observables[i]) for i in rows]
            obs_index: dict = {}
            uniq_ops = []
            which = []
            for op in ops:
                k = _obs_key(op)
                if k not in obs_index:
                    obs_index[k] = len(uniq_ops)
                    uniq_ops.append(op)
                which.append(obs_index[k])
            uniq_vals, inverse = _unique_rows(values_all[rows])
            _, jac = self.values_and_jacobian(circ, uniq_ops, uniq_vals, cols)
            for j, i in enumerate(rows):
                gradients[i] = jac[inverse[j], which[j]]
                metadata[i] = {"parameters": [circ.parameters[c] for c in cols]}
        return EstimatorGradientResult(gradients=gradients, metadata=metadata, options=Options())


class ExactEstimatorGradient(_EstimatorGradientMixin, BaseEstimatorGradient):
    """Exact gradient of expectation values by adjoint differentiation (noiseless backend).

    Args:
        executor: an :class:`~qmu_qiskit.execution.executor.Executor` on the exact engine.
    """

    fused = True

    def __init__(self, executor):
        super().__init__(executor.estimator())
        self._executor = executor

    def values_and_jacobian(self, circuit, observables, values, columns):
        """Forward values (N, O) and Jacobian (N, O, len(columns)) from one evaluation."""
        self._executor.cost.add(gradient_calls=1)
        return self._executor.value_and_jacobian(circuit, observables, values, columns)


class _ShiftPlan:
    """The unique-parameter circuit of a circuit and the affine maps to and from it.

    g = values @ A + b gives the gradient circuit's angles; d f/dθ = (d f/dg) @ A[cols]^T.
    """

    def __init__(self, circuit):
        from qiskit.circuit import ParameterExpression
        from qiskit.transpiler.passes import TranslateParameterizedGates
        from qiskit_machine_learning.gradients.utils import _assign_unique_parameters

        from ..circuits.qmu import amplitude_parameters

        # A leading amplitude encoding (QMU) carries data, not trainable angles: it stays as it is
        # in front of the gradient circuit and its inputs pass through unchanged (no shift rule
        # exists for amplitudes; input gradients through it need the exact engine).
        amp = amplitude_parameters(circuit)
        head = None
        body = circuit
        if amp is not None:
            head = circuit.data[0]
            body = circuit.copy_empty_like()
            for inst in circuit.data[1:]:
                body.append(inst)
        unrolled = TranslateParameterizedGates(list(SUPPORTED_GATES))(body)
        grad_circuit = _assign_unique_parameters(unrolled)
        if head is None:
            self.circuit = grad_circuit.gradient_circuit
        else:
            self.circuit = circuit.copy_empty_like()
            self.circuit.append(head)
            self.circuit.compose(grad_circuit.gradient_circuit, inplace=True)
        self.data_columns = frozenset()
        src = {p: i for i, p in enumerate(circuit.parameters)}
        g_params = list(self.circuit.parameters)
        A = np.zeros((len(src), len(g_params)))
        b = np.zeros(len(g_params))
        amp_set = set(amp or ())
        if amp_set:
            self.data_columns = frozenset(src[p] for p in amp_set)
        for g, gp in enumerate(g_params):
            if gp in amp_set:
                A[src[gp], g] = 1.0
                continue
            expr = grad_circuit.gradient_parameter_map[gp]
            params = list(expr.parameters)
            for p in params:
                coeff = expr.gradient(p)
                if isinstance(coeff, ParameterExpression) and coeff.parameters:
                    raise BadInputError(
                        f"gate angle {expr} is not affine in the circuit parameters; the batched "
                        "parameter-shift gradient needs angles of the form a*x + b"
                    )
                A[src[p], g] = float(coeff)
            b[g] = float(expr.bind({p: 0.0 for p in params})) if params else float(expr)
        self.A = A
        self.b = b

    def shifted_rows(self, values: np.ndarray, cols):
        """Rows [base; +π/2 shifts; −π/2 shifts] per input row, and the chain-rule matrix.

        Raises:
            BackendError: a gradient with respect to amplitude-encoded inputs is requested.
        """
        if self.data_columns and set(cols) & self.data_columns:
            from ..exceptions import BackendError

            raise BackendError(
                "gradients with respect to amplitude-encoded inputs (the QMU hybrid model's "
                "encoder) have no parameter-shift rule; train that model on the noiseless 'aer' "
                "backend (exact engine) and evaluate it on the noisy or hardware backend"
            )
        A_cols = self.A[list(cols)]  # (C, G)
        shift = np.flatnonzero(np.any(A_cols != 0, axis=0))
        g = values @ self.A + self.b  # (U, G)
        num = len(shift)
        rows = np.repeat(g[:, None, :], 1 + 2 * num, axis=1)  # (U, 1+2S, G)
        idx = np.arange(num)
        rows[:, 1 + idx, shift] += math.pi / 2
        rows[:, 1 + num + idx, shift] -= math.pi / 2
        return rows.reshape(-1, g.shape[1]), A_cols[:, shift].T, num  # chain: (S, C)


class BatchedParamShiftEstimatorGradient(_EstimatorGradientMixin, BaseEstimatorGradient):
    """Parameter-shift gradient with every shifted parameter set in one broadcast PUB.

    Args:
        executor: the :class:`~qmu_qiskit.execution.executor.Executor` that runs the job.
    """

    fused = True

    def __init__(self, executor):
        super().__init__(executor.estimator())
        self._executor = executor
        self._plans: dict[int, tuple[object, _ShiftPlan]] = {}

    def plan(self, circuit) -> _ShiftPlan:
        entry = self._plans.get(id(circuit))
        if entry is None or entry[0] is not circuit:
            entry = (circuit, _ShiftPlan(circuit))
            self._plans[id(circuit)] = entry
        return entry[1]

    def values_and_jacobian(self, circuit, observables, values, columns):
        """Forward values (N, O) and Jacobian (N, O, C): base and shifted rows in one job."""
        self._executor.cost.add(gradient_calls=1)
        plan = self.plan(circuit)
        values = np.asarray(values, dtype=np.float64)
        rows, chain, num = plan.shifted_rows(values, columns)
        evs, _ = self._executor.expectation_values(plan.circuit, observables, rows)
        evs = evs.reshape(len(observables), len(values), 1 + 2 * num)
        base = evs[:, :, 0].T  # (N, O)
        dg = (evs[:, :, 1 : 1 + num] - evs[:, :, 1 + num :]) / 2  # (O, N, S)
        jac = np.einsum("ons,sc->noc", dg, chain)
        return base, jac


class _SamplerGradientMixin:
    def _run(self, circuits, parameter_values, parameters, **options):
        gradients: list = [None] * len(circuits)
        metadata: list = [None] * len(circuits)
        values_all = np.asarray(parameter_values, dtype=np.float64)
        for circ, cols, rows in _group(circuits, values_all, parameters):
            uniq_vals, inverse = _unique_rows(values_all[rows])
            _, jac = self.probs_and_jacobian(circ, uniq_vals, cols)  # (U, K, C)
            for j, i in enumerate(rows):
                g = jac[inverse[j]]
                gradients[i] = [
                    {int(k): float(g[k, c]) for k in np.flatnonzero(g[:, c])} for c in range(g.shape[1])
                ]
                metadata[i] = {"parameters": [circ.parameters[c] for c in cols]}
        return SamplerGradientResult(gradients=gradients, metadata=metadata, options=Options())


class ExactSamplerGradient(_SamplerGradientMixin, BaseSamplerGradient):
    """Exact gradient of outcome probabilities (noiseless backend, all qubits measured)."""

    fused = True

    def __init__(self, executor):
        super().__init__(executor.sampler())
        self._executor = executor

    def probs_and_jacobian(self, circuit, values, columns):
        self._executor.cost.add(gradient_calls=1)
        return self._executor.probs_and_jacobian(circuit, values, columns)


class BatchedParamShiftSamplerGradient(_SamplerGradientMixin, BaseSamplerGradient):
    """Parameter-shift gradient of outcome probabilities, all shifted sets in one job."""

    fused = True

    def __init__(self, executor):
        super().__init__(executor.sampler())
        self._executor = executor
        self._plans: dict[int, tuple[object, _ShiftPlan]] = {}

    def probs_and_jacobian(self, circuit, values, columns):
        self._executor.cost.add(gradient_calls=1)
        entry = self._plans.get(id(circuit))
        if entry is None or entry[0] is not circuit:
            entry = (circuit, _ShiftPlan(circuit))
            self._plans[id(circuit)] = entry
        plan = entry[1]
        values = np.asarray(values, dtype=np.float64)
        rows, chain, num = plan.shifted_rows(values, columns)
        probs = self._executor.probabilities(plan.circuit, rows)  # (N*(1+2S), K)
        probs = probs.reshape(len(values), 1 + 2 * num, -1)
        base = probs[:, 0]
        dp = (probs[:, 1 : 1 + num] - probs[:, 1 + num :]) / 2  # (N, S, K)
        jac = np.einsum("nsk,sc->nkc", dp, chain)
        return base, jac
