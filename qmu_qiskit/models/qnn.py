"""QNN factory: qiskit-machine-learning ``EstimatorQNN`` / ``SamplerQNN`` in ``TorchConnector``.

The QNNs here are thin subclasses that keep every contract of their parents (``forward`` and
``backward`` shapes, input gradients, the gradient object being a qiskit-machine-learning gradient
class). What they add is *fusion*: during training, the forward pass of a mini-batch asks the
executor's gradient for the values **and** the Jacobian in one job, and the following ``backward``
on the same inputs is answered from that job (methods: "one broadcast job per mini-batch"). In
inference (``torch.no_grad``) only the values are computed.
"""

from __future__ import annotations

import hashlib
from numbers import Integral

import numpy as np
import torch
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.neural_networks import EstimatorQNN, SamplerQNN
from torch import nn


def _key(parameter_values: np.ndarray) -> bytes:
    return hashlib.blake2b(
        np.ascontiguousarray(parameter_values).tobytes(), digest_size=16
    ).digest()


class _FusedMixin:
    """Shared fusion state: a flag set by :class:`QuantumLayer`, and one cached Jacobian."""

    fuse_next: bool = False
    # set by the qiskit-machine-learning parent class's __init__
    _input_gradients: bool
    _num_inputs: int

    def _init_fusion(self) -> None:
        self.fuse_next = False
        self._cached: tuple[bytes, tuple] | None = None

    def _split(self, jac: np.ndarray, num_samples: int):
        """(N, outputs, P) Jacobian → (input_grad or None, weight_grad) as the parent returns."""
        if self._input_gradients:
            return jac[..., : self._num_inputs], jac[..., self._num_inputs :]
        return None, jac

    def _take_cached(self, parameter_values: np.ndarray):
        if self._cached is not None and self._cached[0] == _key(parameter_values):
            grads = self._cached[1]
            self._cached = None
            return grads
        return None


class FusedEstimatorQNN(_FusedMixin, EstimatorQNN):
    """``EstimatorQNN`` whose training forward also returns the Jacobian from the same job.

    Args:
        executor: the :class:`~qmu_qiskit.execution.executor.Executor` providing estimator and gradient.
        **kwargs: ``EstimatorQNN`` arguments (``circuit``, ``observables``, ``input_params``,
            ``weight_params``, ``input_gradients``).
    """

    def __init__(self, *, executor, **kwargs):
        kwargs.setdefault("default_precision", 0.0)
        super().__init__(
            estimator=executor.estimator(), gradient=executor.estimator_gradient(), **kwargs
        )
        self.executor = executor
        self._init_fusion()

    def _columns(self, num_params: int) -> list[int]:
        start = 0 if self._input_gradients else self._num_inputs
        return list(range(start, num_params))

    def _forward(self, input_data, weights):
        if not self.fuse_next:
            return super()._forward(input_data, weights)
        parameter_values, num_samples = self._preprocess_forward(input_data, weights)
        cols = self._columns(parameter_values.shape[1])
        values, jac = self.gradient.values_and_jacobian(
            self._circuit, list(self._observables), parameter_values, cols
        )
        self._cached = (_key(parameter_values), self._split(jac, num_samples))
        return values

    def _backward(self, input_data, weights):
        parameter_values, num_samples = self._preprocess_forward(input_data, weights)
        cached = self._take_cached(parameter_values)
        if cached is not None:
            return cached
        if parameter_values.size == 0 or parameter_values.shape[1] == 0:
            return None, None
        cols = self._columns(parameter_values.shape[1])
        _, jac = self.gradient.values_and_jacobian(
            self._circuit, list(self._observables), parameter_values, cols
        )
        return self._split(jac, num_samples)


class FusedSamplerQNN(_FusedMixin, SamplerQNN):
    """``SamplerQNN`` with fused forward + Jacobian, reading probabilities as arrays.

    Outcomes are read as ``SamplerQNN`` reads them (integers over the clbits, those at or above
    ``2**num_virtual_qubits`` dropped) and mapped through ``interpret`` once, so an
    ``interpret`` with a multi-dimensional ``output_shape`` (a tuple per outcome) works too.
    Forward values are exact outcome probabilities on the exact engine and shot frequencies
    elsewhere.

    Args:
        executor: the executor providing sampler and gradient.
        **kwargs: ``SamplerQNN`` arguments (``circuit``, ``input_params``, ``weight_params``,
            ``interpret``, ``output_shape``, ``input_gradients``).
    """

    def __init__(self, *, executor, **kwargs):
        super().__init__(sampler=executor.sampler(), gradient=executor.sampler_gradient(), **kwargs)
        self.executor = executor
        self._init_fusion()
        num_bits = self._circuit.num_clbits
        shape = tuple(int(d) for d in self._output_shape)
        outcomes = np.arange(2**num_bits)
        valid = outcomes < 2**self.num_virtual_qubits
        index = []
        for k in outcomes[valid]:
            key = self._interpret(int(k))
            idx = (int(key),) if isinstance(key, Integral) else tuple(int(i) for i in key)
            index.append(np.ravel_multi_index(idx, shape))
        # outcome → flat output index, so interpretation is one vectorised scatter
        self._valid = valid
        self._index = np.asarray(index, dtype=np.int64)
        self._out = int(np.prod(shape))

    def _to_outputs(self, probs: np.ndarray) -> np.ndarray:
        """(N, 2**clbits, ...) outcome values → (N, *output_shape, ...) through ``interpret``."""
        out = np.zeros((probs.shape[0], self._out) + probs.shape[2:])
        # numpy's stubs reject a (slice, index array) tuple for ufunc.at, which numpy accepts
        np.add.at(out, (slice(None), self._index), probs[:, self._valid])  # type: ignore[arg-type]
        return out.reshape((probs.shape[0],) + tuple(self._output_shape) + probs.shape[2:])

    def _columns(self, num_params: int) -> list[int]:
        start = 0 if self._input_gradients else self._num_inputs
        return list(range(start, num_params))

    def _forward(self, input_data, weights):
        parameter_values, num_samples = self._preprocess_forward(input_data, weights)
        if self.fuse_next:
            cols = self._columns(parameter_values.shape[1])
            probs, jac = self.gradient.probs_and_jacobian(self._circuit, parameter_values, cols)
            self._cached = (_key(parameter_values), self._split(self._to_outputs(jac), num_samples))
            return self._to_outputs(probs)
        probs = self.sampler.probabilities(self._circuit, parameter_values)
        return self._to_outputs(probs.reshape(num_samples, -1))

    def _backward(self, input_data, weights):
        parameter_values, num_samples = self._preprocess_forward(input_data, weights)
        cached = self._take_cached(parameter_values)
        if cached is not None:
            return cached
        if parameter_values.size == 0 or parameter_values.shape[1] == 0:
            return None, None
        cols = self._columns(parameter_values.shape[1])
        _, jac = self.gradient.probs_and_jacobian(self._circuit, parameter_values, cols)
        return self._split(self._to_outputs(jac), num_samples)


class QuantumLayer(nn.Module):
    """A QNN in a ``TorchConnector``, fusing forward and gradient when autograd will need it.

    Args:
        qnn: a :class:`FusedEstimatorQNN` or :class:`FusedSamplerQNN`.
        initial_weights: initial circuit weights (numpy or tensor).
    """

    def __init__(self, qnn, initial_weights):
        super().__init__()
        self.qnn = qnn
        self.connector = TorchConnector(qnn, initial_weights=initial_weights)

    @property
    def weight(self) -> nn.Parameter:
        return self.connector.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (
            self.connector.weight.requires_grad or x.requires_grad
        )
        self.qnn.fuse_next = bool(needs_grad)
        try:
            # The QNN computes in float64; TorchConnector returns float32, like the heads.
            return self.connector(x)
        finally:
            self.qnn.fuse_next = False
