"""Gradients as qiskit-machine-learning gradient classes, one job per call.

qiskit-machine-learning's ``ParamShiftEstimatorGradient`` sends one PUB per shifted parameter set
(B·n·2P PUBs for a mini-batch, docs/measurements.md lesson 1) and re-runs the pass manager on every
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
from collections.abc import Callable
from typing import Any

import numpy as np
from qiskit_machine_learning.gradients import (
    BaseEstimatorGradient,
    BaseSamplerGradient,
    EstimatorGradientResult,
    SamplerGradientResult,
)

from ..exceptions import BadInputError
from .structure import check_evolutions

# Gates whose parameterised forms are exp(-i θ/2 P) (P a Pauli string; ``p`` is ``rz`` up to a
# global phase): the two-term ±π/2 shift rule is exact for them. Controlled rotations are not
# (their generator has eigenvalues 0, ±1/2): they are translated into these first, as
# qiskit-machine-learning's gradients do.
PAULI_ROTATIONS = ("rx", "ry", "rz", "p", "rxx", "ryy", "rzz", "rzx")
SUPPORTED_GATES = ("x", "y", "z", "h", "cx", "cy", "cz") + PAULI_ROTATIONS


def _columns(circuit, parameters) -> tuple[int, ...]:
    index = {p: i for i, p in enumerate(circuit.parameters)}
    return tuple(index[p] for p in parameters)


def _group(circuits, parameters):
    """Group gradient requests by (circuit, parameter subset); yields (circuit, columns, rows)."""
    groups: OrderedDict[tuple, list[int]] = OrderedDict()
    cols_of = {}
    for i, (circ, params) in enumerate(zip(circuits, parameters)):
        key = (id(circ), tuple(p.name for p in params))
        if key not in cols_of:
            cols_of[key] = (circ, _columns(circ, params))
        groups.setdefault(key, []).append(i)
    for key, rows in groups.items():
        circ, cols = cols_of[key]
        yield circ, cols, rows


def _rows(parameter_values, rows, num_parameters: int) -> np.ndarray:
    """The value rows of one group as an (N, P) array (circuits of a call may differ in P)."""
    out = np.empty((len(rows), num_parameters), dtype=np.float64)
    for j, i in enumerate(rows):
        out[j] = np.asarray(parameter_values[i], dtype=np.float64).reshape(num_parameters)
    return out


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
        for circ, cols, rows in _group(circuits, parameters):
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
            values = _rows(parameter_values, rows, circ.num_parameters)
            uniq_vals, inverse = _unique_rows(values)
            _, jac = self.values_and_jacobian(circ, uniq_ops, uniq_vals, cols)
            params = list(circ.parameters)
            chosen = [params[c] for c in cols]
            for j, i in enumerate(rows):
                gradients[i] = np.asarray(jac[inverse[j], which[j]], dtype=np.float64)
                metadata[i] = {"parameters": list(chosen)}
        return EstimatorGradientResult(
            gradients=gradients, metadata=metadata, options=self._get_local_options(options)
        )


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
        from .density_runner import Unsupported

        try:
            out = self._executor.value_and_jacobian(circuit, observables, values, columns)
        except Unsupported:  # a circuit the noisy exact engine does not take: parameter shift
            return self._shift().values_and_jacobian(circuit, observables, values, columns)
        self._executor.cost.add(gradient_calls=1)
        return out

    def values_and_pullback(self, circuit, observables, values):
        """Forward values (N, O) and ``pullback(cotangent (N, O), columns, sum_rows=())`` →
        (N, C): the vector–Jacobian product by one adjoint sweep, once the cotangent is known.
        ``sum_rows``: positions in ``columns`` the caller only sums over the rows (a runner may
        return their sum in row 0)."""
        from .density_runner import Unsupported

        try:
            out = self._executor.values_and_pullback(circuit, observables, values)
        except Unsupported:  # parameter shift's full Jacobian, contracted on demand
            vals = np.asarray(values, dtype=np.float64)
            cols = list(range(vals.shape[-1]))
            forward, jac = self._shift().values_and_jacobian(circuit, observables, vals, cols)

            def pullback(cotangent, columns=None, sum_rows=()):
                chosen = cols if columns is None else list(columns)
                return np.einsum("no,noc->nc", np.asarray(cotangent), jac[:, :, chosen])

            return forward, pullback
        self._executor.cost.add(gradient_calls=1)
        return out

    def _shift(self):
        shift = getattr(self, "_shift_gradient", None)
        if shift is None:
            shift = self._shift_gradient = BatchedParamShiftEstimatorGradient(self._executor)
        return shift


def _without_parametric_phase(circuit):
    """``circuit`` without parameterised global phases (the circuit's, and ``global_phase``
    gates): they change no expectation value or probability, and have no shift rule."""
    from qiskit.circuit import ParameterExpression

    def parametric(value) -> bool:
        return isinstance(value, ParameterExpression) and bool(value.parameters)

    gates = [
        i
        for i in circuit.data
        if i.operation.name == "global_phase" and any(parametric(p) for p in i.operation.params)
    ]
    if not gates and not parametric(circuit.global_phase):
        return circuit
    out = circuit.copy_empty_like()
    if parametric(out.global_phase):
        out.global_phase = 0.0
    for inst in circuit.data:
        op = inst.operation
        if op.name == "global_phase" and any(parametric(p) for p in op.params):
            continue
        out.append(inst)
    return out


def _lambdify(expr, params):
    """``expr`` and its derivative by each parameter as vectorised numpy functions."""
    import sympy

    sym = expr.sympify()
    names = {str(s): s for s in sym.free_symbols}
    args = [names.get(p.name, sympy.Symbol(p.name)) for p in params]
    f = sympy.lambdify(args, sym, "numpy", dummify=True)
    derivs = [sympy.lambdify(args, sympy.diff(sym, a), "numpy", dummify=True) for a in args]
    return f, derivs


def _real_array(x, n: int) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(x), (n,))
    if np.iscomplexobj(arr):
        if np.abs(arr.imag).max(initial=0.0) > 1e-12:
            raise BadInputError("a gate angle evaluated to a complex number")
        arr = arr.real
    return np.asarray(arr, dtype=np.float64)


class _ShiftPlan:
    """The unique-parameter circuit of a circuit and the maps to and from it.

    Every parameterised gate of :attr:`circuit` is a Pauli rotation with its own parameter g_k
    (qiskit-machine-learning's gradient circuit, after translating controlled and multi-parameter
    gates into Pauli rotations), so ∂f/∂g_k is exactly (f(g_k + π/2) − f(g_k − π/2)) / 2. Angles
    affine in the circuit's parameters are ``values @ A + b`` (the fast path); other angles (e.g.
    ``zz_feature_map``'s products) are evaluated per sample, and ∂g_k/∂θ by the expression's
    exact derivative, per sample.
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
        check_evolutions(body)
        try:
            unrolled = TranslateParameterizedGates(list(SUPPORTED_GATES))(body)
        except Exception as exc:
            raise BadInputError(
                f"cannot write the circuit's parameterised gates as Pauli rotations for the "
                f"parameter-shift rule ({type(exc).__name__}); use engine 'exact' on 'aer'"
            ) from None
        unrolled = _without_parametric_phase(unrolled)
        for inst in unrolled.data:
            op = inst.operation
            if any(isinstance(p, ParameterExpression) and p.parameters for p in op.params):
                if op.name not in PAULI_ROTATIONS:
                    raise BadInputError(
                        f"gate {op.name!r} has no exact two-term shift rule; use engine 'exact' "
                        "on 'aer' for its gradient"
                    )
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
        #: per non-affine angle: (g column, argument columns, f, [∂f/∂argument])
        self.nonaffine: list[tuple[int, np.ndarray, Callable[..., Any], list]] = []
        for g, gp in enumerate(g_params):
            if gp in amp_set:
                A[src[gp], g] = 1.0
                continue
            expr = grad_circuit.gradient_parameter_map[gp]
            params = list(expr.parameters)
            coeffs = []
            affine = True
            for p in params:
                coeff = expr.gradient(p)
                if isinstance(coeff, ParameterExpression) and coeff.parameters:
                    affine = False
                    break
                coeffs.append(float(coeff))
            if affine:
                try:
                    b[g] = float(expr.bind(dict.fromkeys(params, 0.0))) if params else float(expr)
                except Exception:
                    affine = False
            if affine:
                for p, c in zip(params, coeffs):
                    A[src[p], g] = c
                continue
            f, derivs = _lambdify(expr, params)
            cols = np.array([src[p] for p in params], dtype=np.int64)
            self.nonaffine.append((g, cols, f, derivs))
        self.A = A
        self.b = b

    def angles(self, values: np.ndarray):
        """Gradient-circuit angles (N, G) and, with non-affine angles, dg/dθ (N, P, G)."""
        g = values @ self.A + self.b
        if not self.nonaffine:
            return g, None
        n = len(values)
        dg = np.broadcast_to(self.A, (n,) + self.A.shape).copy()
        for col, cols, f, derivs in self.nonaffine:
            args = [values[:, c] for c in cols]
            g[:, col] = _real_array(f(*args), n)
            for c, d in zip(cols, derivs):
                dg[:, c, col] = _real_array(d(*args), n)
        return g, dg

    def shifted_rows(self, values: np.ndarray, cols):
        """Rows [base; +π/2 shifts; −π/2 shifts] per input row, and the chain-rule factor:
        (S, C) for affine angles, (N, S, C) per sample otherwise.

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
        cols = list(cols)
        g, dg = self.angles(values)
        depends = np.any(self.A[cols] != 0, axis=0)
        for col, arg_cols, _, _ in self.nonaffine:
            depends[col] = bool(set(arg_cols.tolist()) & set(cols))
        shift = np.flatnonzero(depends)
        num = len(shift)
        rows = np.repeat(g[:, None, :], 1 + 2 * num, axis=1)  # (U, 1+2S, G)
        idx = np.arange(num)
        rows[:, 1 + idx, shift] += math.pi / 2
        rows[:, 1 + num + idx, shift] -= math.pi / 2
        if dg is None:
            chain = self.A[cols][:, shift].T  # (S, C)
        else:
            chain = np.transpose(dg[:, cols][:, :, shift], (0, 2, 1))  # (N, S, C)
        return rows.reshape(len(values) * (1 + 2 * num), g.shape[1]), chain, num


def _chain(dg: np.ndarray, chain: np.ndarray, spec: str) -> np.ndarray:
    """d f / d g (…, S) times the chain factor: constant (S, C) or per sample (N, S, C)."""
    if chain.ndim == 2:
        return np.einsum(spec.replace("#", ""), dg, chain)
    return np.einsum(spec.replace("#", "n"), dg, chain)


class BatchedParamShiftEstimatorGradient(_EstimatorGradientMixin, BaseEstimatorGradient):
    """Parameter-shift gradient with every shifted parameter set in one broadcast PUB.

    Args:
        executor: the :class:`~qmu_qiskit.execution.executor.Executor` that runs the job.
    """

    fused = True

    def __init__(self, executor):
        super().__init__(executor.estimator())
        self._executor = executor
        self._plans: OrderedDict[int, tuple[object, _ShiftPlan]] = OrderedDict()

    def plan(self, circuit) -> _ShiftPlan:
        entry = self._plans.get(id(circuit))
        if entry is None or entry[0] is not circuit:
            entry = (circuit, _ShiftPlan(circuit))
            self._plans[id(circuit)] = entry
            while len(self._plans) > 64:
                self._plans.popitem(last=False)
        return entry[1]

    def values_and_jacobian(self, circuit, observables, values, columns):
        """Forward values (N, O) and Jacobian (N, O, C): base and shifted rows in one job."""
        self._executor.cost.add(gradient_calls=1)
        plan = self.plan(circuit)
        values = np.asarray(values, dtype=np.float64).reshape(-1, circuit.num_parameters)
        rows, chain, num = plan.shifted_rows(values, columns)
        evs, _ = self._executor.expectation_values(plan.circuit, observables, rows)
        evs = evs.reshape(len(observables), len(values), 1 + 2 * num)
        base = evs[:, :, 0].T  # (N, O)
        dg = (evs[:, :, 1 : 1 + num] - evs[:, :, 1 + num :]) / 2  # (O, N, S)
        jac = _chain(dg, chain, "ons,#sc->noc")
        return base, jac


class _SamplerGradientMixin:
    """The ``_run`` of both sampler gradients, on top of :meth:`probs_and_jacobian`.

    Outcomes are integers over the circuit's clbits (bit ``c`` = clbit ``c``), as the counts of
    ``SamplerV2`` results read; a circuit without clbits reads all its qubits.
    """

    def _run(self, circuits, parameter_values, parameters, **options):
        gradients: list = [None] * len(circuits)
        metadata: list = [None] * len(circuits)
        for circ, cols, rows in _group(circuits, parameters):
            values = _rows(parameter_values, rows, circ.num_parameters)
            uniq_vals, inverse = _unique_rows(values)
            _, jac = self.probs_and_jacobian(circ, uniq_vals, cols)  # (U, K, C)
            params = list(circ.parameters)
            chosen = [params[c] for c in cols]
            for j, i in enumerate(rows):
                g = jac[inverse[j]]
                gradients[i] = [
                    {int(k): float(g[k, c]) for k in np.flatnonzero(g[:, c])}
                    for c in range(g.shape[1])
                ]
                metadata[i] = {"parameters": list(chosen)}
        return SamplerGradientResult(
            gradients=gradients, metadata=metadata, options=self._get_local_options(options)
        )


class ExactSamplerGradient(_SamplerGradientMixin, BaseSamplerGradient):
    """Exact gradient of outcome probabilities (noiseless backend), any final measurements."""

    fused = True

    def __init__(self, executor):
        self._sampler_ro = executor.sampler()
        super().__init__(self._sampler_ro)
        self._executor = executor

    def probs_and_jacobian(self, circuit, values, columns):
        """Outcome distributions (N, 2**bits) and their Jacobian (N, 2**bits, C)."""
        self._executor.cost.add(gradient_calls=1)
        readout = self._sampler_ro.readout(circuit)
        probs, jac = self._executor.probs_and_jacobian(readout.circuit, values, columns)
        return readout.scatter(probs), readout.scatter(jac)

    def probs_and_pullback(self, circuit, values):
        """Outcome distributions (N, 2**bits) and ``pullback(cotangent (N, 2**bits), columns)``
        → (N, C), one adjoint sweep."""
        self._executor.cost.add(gradient_calls=1)
        readout = self._sampler_ro.readout(circuit)
        probs, pullback = self._executor.probs_and_pullback(readout.circuit, values)
        index = readout.clbit_index

        def scattered_pullback(cotangent, columns=None, sum_rows=()):
            # scatter writes outcome k to clbit outcome index[k]: its transpose gathers
            return pullback(np.asarray(cotangent)[:, index], columns, sum_rows=sum_rows)

        return readout.scatter(probs), scattered_pullback


class BatchedParamShiftSamplerGradient(_SamplerGradientMixin, BaseSamplerGradient):
    """Parameter-shift gradient of outcome probabilities, all shifted sets in one job."""

    fused = True

    def __init__(self, executor):
        self._sampler_ro = executor.sampler()
        super().__init__(self._sampler_ro)
        self._executor = executor
        self._plans: OrderedDict[int, tuple[object, _ShiftPlan]] = OrderedDict()

    def probs_and_jacobian(self, circuit, values, columns):
        """Outcome distributions (N, 2**bits) and their Jacobian (N, 2**bits, C)."""
        self._executor.cost.add(gradient_calls=1)
        readout = self._sampler_ro.readout(circuit)
        entry = self._plans.get(id(readout.circuit))
        if entry is None or entry[0] is not readout.circuit:
            entry = (readout.circuit, _ShiftPlan(readout.circuit))
            self._plans[id(readout.circuit)] = entry
            while len(self._plans) > 64:
                self._plans.popitem(last=False)
        plan = entry[1]
        values = np.asarray(values, dtype=np.float64).reshape(-1, circuit.num_parameters)
        rows, chain, num = plan.shifted_rows(values, columns)
        probs = self._executor.probabilities(plan.circuit, rows)  # (N*(1+2S), K)
        probs = probs.reshape(len(values), 1 + 2 * num, -1)
        base = probs[:, 0]
        dp = (probs[:, 1 : 1 + num] - probs[:, 1 + num :]) / 2  # (N, S, K)
        jac = _chain(dp, chain, "nsk,#sc->nkc")
        return readout.scatter(base), readout.scatter(jac)
