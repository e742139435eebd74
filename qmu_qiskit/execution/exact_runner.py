"""The exact engine: the vectorised torch statevector of :mod:`.statevector`, in process.

Exact values and exact (adjoint) gradients for the noiseless ``aer`` backend; a leading
amplitude encoding is evaluated natively (no per-sample split), and jobs are not ledgered (they
cost nothing to recompute and are deterministic).
"""

from __future__ import annotations

import threading
import uuid

import numpy as np

from .runner_base import (
    Handle,
    Prepared,
    Runner,
    _marginal,
    _measured_qubits,
    _strip_measurements,
    on_device,
    on_device_pullback,
)


class ExactRunner(Runner):
    """Exact noiseless evaluation with the vectorised torch statevector (in-process)."""

    name = "exact"
    kind = "exact"
    exact = True
    exact_probabilities = True
    exact_gradients = True
    native_amplitude_encoding = True
    records_jobs = False

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
                    with on_device(self):
                        cc = CompiledCircuit(_strip_measurements(prepared.circuit))
                    self._compiled[prepared.key] = cc
            prepared.extra["compiled"] = cc
        return cc

    def submit_estimate(
        self, prepared, observables, values, *, precision, seed, shots=None
    ) -> Handle:
        import torch

        cc = self.compiled(prepared)

        def run():
            with torch.no_grad(), on_device(self):
                evs = cc.expectation(torch.as_tensor(values, dtype=torch.float64), observables)
            evs = evs.cpu().numpy().T.copy()  # (O, N)
            if precision:  # as StatevectorEstimator: Gaussian noise of the requested precision
                evs = np.random.default_rng(int(seed)).normal(evs, precision)
                return {"evs": evs, "stds": np.full_like(evs, float(precision))}
            return {"evs": evs, "stds": np.zeros_like(evs)}

        return Handle(f"exact-{uuid.uuid4().hex[:12]}", run)

    def submit_sample(self, prepared, values, *, shots, seed) -> Handle:
        import torch

        cc = self.compiled(prepared)
        measured = _measured_qubits(prepared.circuit)

        def run():
            with torch.no_grad(), on_device(self):
                probs = cc.probabilities(torch.as_tensor(values, dtype=torch.float64)).cpu().numpy()
            return {"probs": _marginal(probs, measured, cc.num_qubits)}

        return Handle(f"exact-{uuid.uuid4().hex[:12]}", run)

    def value_and_jacobian(self, prepared, observables, values, columns):
        with on_device(self):
            return self.compiled(prepared).value_and_jacobian(values, observables, columns=columns)

    def value_and_pullback(self, prepared, observables, values):
        """Values (N, O) and ``pullback(cotangent (N, O), columns)`` → (N, C): one adjoint sweep
        for the vector–Jacobian product (:meth:`CompiledCircuit.forward_for_vjp`)."""
        with on_device(self):
            out, pullback = self.compiled(prepared).forward_for_vjp(values, observables)
        return out, on_device_pullback(self, pullback)

    def probs_and_pullback(self, prepared, values):
        """Distributions of the measured qubits (N, 2**k, clbit order) and their pullback."""
        cc = self.compiled(prepared)
        measured = _measured_qubits(prepared.circuit)
        with on_device(self):
            probs, pullback = cc.forward_for_vjp(values, probabilities=True)
        pullback = on_device_pullback(self, pullback)
        if measured == list(range(cc.num_qubits)):
            return probs, pullback
        # the marginal sums basis states: its transpose reads each state's outcome cotangent
        idx = np.arange(2**cc.num_qubits)
        out_index = np.zeros(2**cc.num_qubits, dtype=np.int64)
        for c, q in enumerate(measured):
            out_index |= ((idx >> q) & 1) << c

        def marginal_pullback(cotangent, columns=None, sum_rows=()):
            return pullback(np.asarray(cotangent)[:, out_index], columns)

        return _marginal(probs, measured, cc.num_qubits), marginal_pullback

    def probs_and_jacobian(self, prepared, values, columns):
        cc = self.compiled(prepared)
        measured = _measured_qubits(prepared.circuit)
        with on_device(self):
            probs, jac = cc.value_and_jacobian(values, probabilities=True, columns=columns)
        if measured == list(range(cc.num_qubits)):
            return probs, jac
        # marginal distribution of the measured qubits (and its Jacobian), in clbit order
        n, c = jac.shape[0], jac.shape[2]
        flat = np.moveaxis(jac, 2, 1).reshape(n * c, -1)
        marg = _marginal(flat, measured, cc.num_qubits).reshape(n, c, -1)
        return _marginal(probs, measured, cc.num_qubits), np.moveaxis(marg, 1, 2)


#
