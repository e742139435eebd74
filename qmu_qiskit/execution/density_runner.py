"""The noisy exact engine's runner: ``aer_noisy`` without shots, engine ``exact`` (the default).

Exact expectation values of the device-noise model (the same numbers as Aer's density-matrix
estimator, which stays available as ``--engine aer``) from :mod:`.density`, and their exact
gradient in one reverse pass. Circuits it does not evaluate — a leading amplitude encoding,
ideal amplitude loading, a parameterised gate the device model puts noise on, non-gate
instructions — go to Aer's density-matrix estimator, and their gradients to parameter shift:
exact values either way. Sampling keeps Aer's counts with readout error (``exact_probabilities``
is false), as the Aer engine does.
"""

from __future__ import annotations

import threading
import uuid

import numpy as np

from ..exceptions import BadInputError
from .aer_runners import AerEstimatorRunner
from .runner_base import Handle, Prepared, _strip_measurements, on_device, on_device_pullback


class Unsupported(Exception):
    """The noisy exact engine does not evaluate this circuit (the caller falls back)."""


class NoisyExactRunner(AerEstimatorRunner):
    """Exact noisy expectation values and gradients in torch (Pauli-basis density matrices)."""

    exact_gradients = True
    exact_sampler_gradients = False  # sampling gives counts: parameter shift, as on Aer
    torch_engine = True  # --device cuda runs it on a CUDA device
    records_jobs = False  # in-process and deterministic, as the exact engine: nothing to keep
    #: rows contracted at once (memory: observables × 4**(k/2) × rows doubles)
    ROWS_PER_PASS = 2048

    def __init__(self, **kw):
        super().__init__(method="density_matrix", **kw)
        self.name = "noisy_exact"
        self._lock = threading.Lock()
        self._channels: dict[tuple, np.ndarray] = {}

    def describe(self) -> dict:
        out = super().describe()
        out["engine"] = "exact (Pauli-basis density matrices, torch)"
        return out

    def _channel(self, prepared: Prepared):
        """The PTM of a fixed instruction with its device noise, from Aer's superoperator."""
        from qiskit import QuantumCircuit
        from qiskit_aer import AerSimulator

        from ..backends.noise import restricted_noise_model
        from .density import ptm_from_superop

        noisy = set(prepared.noise_model.noise_instructions)
        physical = prepared.physical_qubits

        def channel(op, qubits):
            if op.name not in noisy:
                return None
            where = tuple(physical[q] for q in qubits)
            key = (op.name, where, tuple(float(p) for p in op.params), self.noise_scale)
            with self._lock:
                hit = self._channels.get(key)
            if hit is not None:
                return hit
            small = restricted_noise_model(self.device, where, scale=self.noise_scale)
            circ = QuantumCircuit(len(qubits))
            circ.append(op, list(range(len(qubits))))
            circ.save_superop()
            result = AerSimulator(method="superop", noise_model=small).run(circ).result()
            ptm = ptm_from_superop(np.asarray(result.data(0)["superop"]), len(qubits))
            with self._lock:
                self._channels[key] = ptm
            return ptm

        return channel

    def compiled(self, prepared: Prepared):
        """The compiled :class:`~.density.NoisyCircuit`, or :class:`Unsupported`."""
        from .density import NoisyCircuit

        if "noisy_compiled" not in prepared.extra:
            circuit = _strip_measurements(prepared.circuit)
            compiled: NoisyCircuit | BadInputError
            try:
                if circuit.num_qubits > self.MAX_DENSITY_QUBITS:
                    raise BadInputError(f"{circuit.num_qubits} qubits")
                with on_device(self):
                    compiled = NoisyCircuit(
                        circuit,
                        self._channel(prepared),
                        frozenset(prepared.noise_model.noise_instructions),
                    )
            except BadInputError as exc:
                compiled = exc
            prepared.extra["noisy_compiled"] = compiled
        compiled = prepared.extra["noisy_compiled"]
        if isinstance(compiled, Exception):
            raise Unsupported(str(compiled))
        return compiled

    def submit_estimate(
        self, prepared, observables, values, *, precision, seed, shots=None
    ) -> Handle:
        import torch

        try:
            cc = self.compiled(prepared)
        except Unsupported:
            return super().submit_estimate(
                prepared, observables, values, precision=precision, seed=seed, shots=shots
            )

        def run():
            vals = np.asarray(values, dtype=np.float64)
            parts = []
            with torch.no_grad(), on_device(self):
                for start in range(0, max(len(vals), 1), self.ROWS_PER_PASS):
                    chunk = vals[start : start + self.ROWS_PER_PASS]
                    parts.append(cc.expectation(chunk, observables).cpu().numpy())
            evs = np.concatenate(parts, 0).T.copy()
            if precision:
                evs = np.random.default_rng(int(seed)).normal(evs, precision)
            return {"evs": evs, "stds": np.full_like(evs, float(precision or 0.0))}

        return Handle(f"noisy-exact-{uuid.uuid4().hex[:12]}", run)

    def value_and_pullback(self, prepared, observables, values):
        cc = self.compiled(prepared)
        with on_device(self):
            out, pullback = cc.forward_for_vjp(values, observables)
        return out, on_device_pullback(self, pullback)

    def value_and_jacobian(self, prepared, observables, values, columns):
        cc = self.compiled(prepared)
        with on_device(self):
            return cc.value_and_jacobian(values, observables, columns)
