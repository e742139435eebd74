"""QNN factory: qiskit-machine-learning ``EstimatorQNN`` / ``SamplerQNN`` in ``TorchConnector``.

The QNNs here are thin subclasses that keep every contract of their parents (``forward`` and
``backward`` shapes, input gradients, the gradient object being a qiskit-machine-learning gradient
class), so a stock ``TorchConnector`` drives them as it drives ``EstimatorQNN``. What they add:

* *lazy vector–Jacobian products* (exact engine): in training, :class:`QuantumLayer` runs the
  forward pass through :class:`_LazyVJP`, which keeps the recorded forward sweep and, once autograd
  knows ``grad_output``, gets the input and weight gradients from **one** adjoint sweep with the
  cotangent-weighted observable — instead of the full Jacobian (one sweep per output) that
  ``TorchConnector``'s backward contracts with ``grad_output``. Same gradients, exactly;
* *fusion* (parameter-shift gradients, which need every shifted row anyway): the forward pass of a
  mini-batch asks the executor's gradient for the values **and** the Jacobian in one job, and the
  following ``backward`` on the same inputs is answered from that job ("one broadcast job per
  mini-batch").

In inference (``torch.no_grad``) only the values are computed.
"""

from __future__ import annotations

import hashlib
from numbers import Integral
from typing import Any

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
    """Shared fusion state: a flag set by :class:`QuantumLayer`, and one cached Jacobian; and the
    lazy vector–Jacobian product of :meth:`forward_with_vjp`."""

    fuse_next: bool = False
    # set by the qiskit-machine-learning parent class's __init__
    _input_gradients: bool
    _num_inputs: int
    gradient: Any
    #: let :class:`QuantumLayer` use :meth:`forward_with_vjp` when the gradient supports it
    #: (set to ``False`` to get the eager full-Jacobian path, e.g. to compare the two)
    lazy_vjp: bool = True
    _PULLBACK = ""

    def supports_vjp(self) -> bool:
        """Whether :meth:`forward_with_vjp` is available (exact engine gradients)."""
        return bool(self.lazy_vjp) and hasattr(self.gradient, self._PULLBACK)

    def forward_with_vjp(self, input_data, weights):
        """``forward`` (validated as ``NeuralNetwork.forward``) and its pullback.

        Returns:
            ``(output, vjp)``: output as ``forward`` returns it, and ``vjp(grad_output)`` with
            ``grad_output`` of the output's shape → ``(input_grad (N, num_inputs) or None,
            weight_grad (num_weights,))``, i.e. Σ grad_output · ∂output/∂(inputs, weights) —
            what ``TorchConnector``'s backward computes from the full Jacobian.
        """
        input_, shape = self._validate_input(input_data)
        weights_ = self._validate_weights(weights)
        output, vjp = self._forward_vjp(input_, weights_)
        return self._validate_forward_output(output, shape), vjp

    def _summed(self, cols: list[int]) -> list[int]:
        """Positions in ``cols`` of the weights: :meth:`_split_vjp` only sums them over rows."""
        return [j for j, c in enumerate(cols) if c >= self._num_inputs]

    def _split_vjp(self, grad: np.ndarray):
        """(N, C) per-row products → (input_grad or None, weight_grad summed over rows)."""
        if self._input_gradients:
            return grad[:, : self._num_inputs], grad[:, self._num_inputs :].sum(0)
        return None, grad.sum(0)

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

    _PULLBACK = "values_and_pullback"

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

    def _forward_vjp(self, input_data, weights):
        parameter_values, _ = self._preprocess_forward(input_data, weights)
        cols = self._columns(parameter_values.shape[1])
        values, pullback = self.gradient.values_and_pullback(
            self._circuit, list(self._observables), parameter_values
        )

        def vjp(grad_output):
            g = np.asarray(grad_output, dtype=np.float64).reshape(values.shape)
            return self._split_vjp(pullback(g, cols, sum_rows=self._summed(cols)))

        return values, vjp

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

    _PULLBACK = "probs_and_pullback"

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

    def _forward_vjp(self, input_data, weights):
        parameter_values, num_samples = self._preprocess_forward(input_data, weights)
        cols = self._columns(parameter_values.shape[1])
        probs, pullback = self.gradient.probs_and_pullback(self._circuit, parameter_values)

        def vjp(grad_output):
            g = np.asarray(grad_output, dtype=np.float64).reshape(num_samples, self._out)
            # _to_outputs adds outcome k into output index[k]: its transpose gathers
            outcomes = np.zeros((num_samples, len(self._valid)))
            outcomes[:, self._valid] = g[:, self._index]
            return self._split_vjp(pullback(outcomes, cols))

        return self._to_outputs(probs), vjp

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


class _LazyVJP(torch.autograd.Function):
    """``TorchConnector``'s autograd function with a lazy backward: the forward keeps the QNN's
    pullback, the backward hands it ``grad_output`` (one adjoint sweep). Inputs, outputs and
    gradients have the types and shapes ``TorchConnector`` gives them (float32 output, gradients
    in the dtype and on the device of the input and the weights)."""

    @staticmethod
    def forward(ctx, input_data, weights, qnn):
        from qiskit_machine_learning import QiskitMachineLearningError

        if input_data.shape[-1] != qnn.num_inputs:
            raise QiskitMachineLearningError(
                f"Invalid input dimension! Received {input_data.shape} and "
                f"expected input compatible to {qnn.num_inputs}"
            )
        output, vjp = qnn.forward_with_vjp(
            input_data.detach().cpu().numpy(), weights.detach().cpu().numpy()
        )
        ctx.vjp = vjp
        ctx.input_meta = (input_data.shape, input_data.dtype, input_data.device)
        ctx.weight_meta = (weights.shape, weights.dtype, weights.device)
        result = torch.as_tensor(output, dtype=torch.float)
        if input_data.dim() == 1:
            result = result[0]
        return result.to(input_data.device)

    @staticmethod
    def backward(ctx, grad_output):
        vjp = ctx.vjp
        ctx.vjp = None  # release the recorded states
        input_grad, weight_grad = vjp(grad_output.detach().cpu().to(torch.float64).numpy())
        in_grad = w_grad = None
        if input_grad is not None and ctx.needs_input_grad[0]:
            shape, dtype, device = ctx.input_meta
            in_grad = torch.as_tensor(input_grad, dtype=dtype).reshape(shape).to(device)
        if ctx.needs_input_grad[1]:
            shape, dtype, device = ctx.weight_meta
            w_grad = torch.as_tensor(weight_grad, dtype=dtype).reshape(shape).to(device)
        return in_grad, w_grad, None


class QuantumLayer(nn.Module):
    """A QNN in a ``TorchConnector``; in training, a lazy vector–Jacobian product (exact engine)
    or forward and Jacobian fused into one job (other engines).

    The ``TorchConnector`` holds the weights (``connector.weight``, as in checkpoints) and runs
    inference and, where the QNN's gradient has no pullback, training.

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
        if needs_grad and self.qnn.supports_vjp():
            return _LazyVJP.apply(x, self.connector.weight, self.qnn)
        self.qnn.fuse_next = bool(needs_grad)
        try:
            # The QNN computes in float64; TorchConnector returns float32, like the heads.
            return self.connector(x)
        finally:
            self.qnn.fuse_next = False
