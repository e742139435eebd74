"""Models from a user's own ``QuantumCircuit``: ``--circuit`` and :func:`from_circuit`.

The circuit's **input parameters** are the ``ParameterVector`` named ``x`` (qiskit's feature
maps name theirs so; another name with ``input_params``); **every other parameter is a
trainable weight**. The readout is qiskit-machine-learning's ``EstimatorQNN`` (⟨Z⟩ on each
qubit, n outputs) or ``SamplerQNN`` (outcome probabilities, 2ⁿ outputs; the measurements are
added here, so the circuit must have none), followed by a torch head:

* ``linear`` — ``Linear(outputs → classes)`` (default);
* ``mlp:H`` — ``Linear(outputs → H) → ReLU → Linear(H → classes)``, e.g. ``mlp:16``.

A run records where the circuit came from (``model.circuit``: a ``.qpy`` path or
``module:function``), the circuit's fingerprint (``model.circuit_sha256``) and a QPY copy
(``circuit.qpy`` in the run directory), from which unlearning and evaluation rebuild it; a
circuit whose fingerprint differs from the recorded one is refused.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from ..exceptions import BadInputError, RunError
from .hybrid import HybridModel, ModelInfo, quantum_layer, register_model, seeded_classical

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

__all__ = [
    "CIRCUIT_FILE",
    "HEADS",
    "circuit_fingerprint",
    "from_circuit",
    "load_circuit",
    "make_head",
    "split_parameters",
]

#: Name of the circuit's QPY copy in a run directory.
CIRCUIT_FILE = "circuit.qpy"
#: The heads ``--head`` accepts (``mlp:H`` with any width H ≥ 1).
HEADS = ("linear", "mlp:H")
#: Largest QPY file read (bytes); run directories are untrusted input.
MAX_QPY_BYTES = 32 << 20

_CACHE: dict[tuple[str, str], QuantumCircuit] = {}


# --------------------------------------------------------------------------- fingerprint


def _standard_gates() -> set[str]:
    from qiskit.circuit.library import get_standard_gate_name_mapping

    return set(get_standard_gate_name_mapping())


def _describe(circuit: QuantumCircuit, standard: set[str]) -> dict:
    ops = []
    for inst in circuit.data:
        op = inst.operation
        entry = {
            "name": op.name,
            "qubits": [circuit.find_bit(q).index for q in inst.qubits],
            "clbits": [circuit.find_bit(c).index for c in inst.clbits],
            "params": [str(p) if not isinstance(p, np.ndarray) else p.tolist() for p in op.params],
        }
        definition = getattr(op, "definition", None)
        if op.name not in standard and definition is not None:
            entry["definition"] = _describe(definition, standard)
        ops.append(entry)
    return {
        "num_qubits": circuit.num_qubits,
        "num_clbits": circuit.num_clbits,
        "global_phase": str(circuit.global_phase),
        "parameters": [p.name for p in circuit.parameters],
        "ops": ops,
    }


def circuit_fingerprint(circuit: QuantumCircuit) -> str:
    """SHA-256 (hex) of a circuit's structure: gates, qubits, parameter expressions (by name).

    Two builds of the same circuit agree even though their ``Parameter`` objects differ
    (QPY bytes would not: they carry each parameter's random UUID). Composite instructions
    are described through their definitions.
    """
    text = json.dumps(_describe(circuit, _standard_gates()), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- loading


def _load_qpy(path: Path) -> QuantumCircuit:
    from qiskit import QuantumCircuit, qpy

    try:
        size = path.stat().st_size
    except OSError:
        raise BadInputError(
            f"circuit file {path} does not exist; pass a .qpy file or module:function to --circuit"
        ) from None
    if not path.is_file():
        raise BadInputError(f"circuit file {path} is not a regular file")
    if size > MAX_QPY_BYTES:
        raise BadInputError(
            f"circuit file {path} is {size} bytes (more than {MAX_QPY_BYTES}); "
            "that is not a circuit this package can train"
        )
    try:
        with open(path, "rb") as fh:
            circuits = qpy.load(fh)
    except Exception as exc:
        raise BadInputError(
            f"circuit file {path} is not a readable QPY file "
            f"({type(exc).__name__}); write it with qiskit.qpy.dump"
        ) from None
    if len(circuits) != 1 or not isinstance(circuits[0], QuantumCircuit):
        raise BadInputError(
            f"circuit file {path} holds {len(circuits)} programs; save exactly one QuantumCircuit"
        )
    return circuits[0]


def _call_factory(text: str) -> QuantumCircuit:
    from qiskit import QuantumCircuit

    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise BadInputError(f"--circuit {text!r} must be a .qpy file or module:function")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0] or os.getcwd() in sys.path:
            raise BadInputError(
                f"cannot import {module_name!r} for --circuit ({exc}); make the "
                "module importable (PYTHONPATH) or save the circuit as .qpy"
            ) from None
        # Like `python -m`, find modules in the working directory; appended, so nothing
        # installed is shadowed, and kept, so spawned grid workers see the same path.
        sys.path.append(os.getcwd())
        return _call_factory(text)
    except Exception as exc:
        raise BadInputError(
            f"importing {module_name!r} for --circuit failed: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise BadInputError(f"module {module_name!r} has no {attr!r} for --circuit")
    circuit = fn() if callable(fn) else fn
    if not isinstance(circuit, QuantumCircuit):
        raise BadInputError(
            f"--circuit {text}: {attr} returned {type(circuit).__name__}, not a QuantumCircuit"
        )
    return circuit


def load_circuit(source: str, *, sha256: str | None = None) -> QuantumCircuit:
    """The circuit named by ``--circuit`` (a ``.qpy`` path or ``module:function``).

    Args:
        source: the path or ``module:function``.
        sha256: the fingerprint the circuit must have (``None``: any).

    Returns:
        The circuit (a factory's is cached per process by source and fingerprint; a file is
        read, and checked, every time).

    Raises:
        BadInputError: unreadable file, import failure, or not a ``QuantumCircuit``.
        RunError: the circuit's fingerprint differs from ``sha256``.
    """
    is_file = str(source).lower().endswith(".qpy")
    if is_file:
        path = Path(source).expanduser()
        circuit = _load_qpy(path)
    else:
        # A factory may be slow or random-free but costly: call it once per process.
        key = (str(source), str(sha256))
        if sha256 is not None and key in _CACHE:
            return _CACHE[key]
        circuit = _call_factory(str(source))
    got = circuit_fingerprint(circuit)
    if sha256 is not None and got != sha256:
        raise RunError(
            f"circuit {source} differs from the run's (fingerprint {got[:12]}... != "
            f"recorded {sha256[:12]}...); restore the original circuit or train a "
            "new run"
        )
    if not is_file:
        _CACHE[(str(source), got)] = circuit
    return circuit


def save_circuit(circuit: QuantumCircuit, path: str | os.PathLike) -> None:
    """Write the circuit's QPY copy atomically."""
    from qiskit import qpy

    from ..io import _atomic_bytes

    buf = io.BytesIO()
    qpy.dump(circuit, buf)
    _atomic_bytes(Path(path), buf.getvalue())


# --------------------------------------------------------------------------- parameters


def split_parameters(
    circuit: QuantumCircuit, input_params: str | Sequence | None = None
) -> tuple[list, list]:
    """Input parameters and weights of a circuit.

    Args:
        circuit: the circuit.
        input_params: name of the input ``ParameterVector`` (default ``x``), or the input
            parameters themselves.

    Returns:
        ``(inputs, weights)``: inputs in vector order, weights in the circuit's order.

    Raises:
        BadInputError: no input parameters, or no weights.
    """
    params = list(circuit.parameters)
    if input_params is None or isinstance(input_params, str):
        name = input_params or "x"
        inputs = [p for p in params if getattr(getattr(p, "vector", None), "name", None) == name]
        inputs.sort(key=lambda p: p.index)
        if not inputs:
            names = sorted({getattr(getattr(p, "vector", None), "name", p.name) for p in params})
            raise BadInputError(
                f"the circuit has no ParameterVector named {name!r} for the inputs (its "
                f"parameters: {', '.join(names[:8]) or 'none'}); name the input vector {name!r} "
                "or pass input_params"
            )
    else:
        inputs = list(input_params)
        missing = [str(p) for p in inputs if p not in set(params)]
        if missing:
            raise BadInputError(f"input parameters {missing[:5]} are not in the circuit")
    chosen = set(inputs)
    weights = [p for p in params if p not in chosen]
    if not weights:
        raise BadInputError(
            "the circuit has no trainable parameters besides its inputs; add a "
            "parameterised ansatz (e.g. qiskit's real_amplitudes)"
        )
    return inputs, weights


# --------------------------------------------------------------------------- heads


def _head_width(head: str) -> int | None:
    text = str(head).strip().lower()
    if text == "linear":
        return None
    if text.startswith("mlp:"):
        try:
            width = int(text[4:])
        except ValueError:
            width = 0
        if width >= 1:
            return width
    raise BadInputError(f"unknown head {head!r}; use linear or mlp:H (e.g. mlp:16)")


def check_head(head: str) -> str:
    """Validate a ``--head`` value and return its canonical spelling."""
    width = _head_width(head)
    return "linear" if width is None else f"mlp:{width}"


def make_head(head: str, width: int, num_classes: int, generator) -> nn.Sequential:
    """The torch head ``linear`` or ``mlp:H`` on ``width`` quantum outputs."""
    hidden = _head_width(head)
    if hidden is None:
        return seeded_classical(generator, lambda: nn.Sequential(nn.Linear(width, num_classes)))
    return seeded_classical(
        generator,
        lambda: nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)),
    )


# --------------------------------------------------------------------------- models


def _check_unitary(circuit: QuantumCircuit) -> None:
    if circuit.num_clbits or any(i.operation.name in ("measure", "reset") for i in circuit.data):
        raise BadInputError(
            "the circuit has measurements or classical bits; remove them (the "
            "readout adds what it needs): circuit.remove_final_measurements()"
        )


def build_from_circuit(
    circuit: QuantumCircuit,
    *,
    num_classes: int,
    readout: str,
    head: str,
    input_params: str | Sequence | None,
    executor,
    generator,
) -> HybridModel:
    """The :class:`HybridModel` of a circuit (what :func:`from_circuit` and ``--circuit`` use)."""
    if num_classes < 2:
        raise BadInputError(f"num_classes must be ≥ 2, got {num_classes}")
    _check_unitary(circuit)
    inputs, weights = split_parameters(circuit, input_params)
    quantum, width = quantum_layer(
        circuit,
        inputs,
        weights,
        executor=executor,
        readout=readout,
        input_gradients=False,
        generator=generator,
    )
    return HybridModel(quantum, make_head(head, width, num_classes, generator))


def _spec_circuit(spec) -> QuantumCircuit:
    if not spec.circuit:
        raise BadInputError(
            "model 'circuit' needs a circuit: pass --circuit PATH.qpy or module:function"
        )
    if spec.circuit_dir:
        # Rebuilding a run's model: only its own QPY copy, never the recorded source (a run
        # directory is untrusted input, and its `module:function` would run code).
        copy = Path(spec.circuit_dir) / CIRCUIT_FILE
        if copy.is_symlink() or not copy.is_file():
            raise RunError(
                f"run {spec.circuit_dir} has no regular file {CIRCUIT_FILE} (the copy "
                "of its circuit); train that run again"
            )
        return load_circuit(str(copy), sha256=spec.circuit_sha256)
    return load_circuit(spec.circuit, sha256=spec.circuit_sha256)


def _build_spec(spec, num_classes, executor, generator) -> HybridModel:
    return build_from_circuit(
        _spec_circuit(spec),
        num_classes=num_classes,
        readout=spec.readout,
        head=spec.head or "linear",
        input_params=spec.input_params or "x",
        executor=executor,
        generator=generator,
    )


register_model(
    ModelInfo(
        name="circuit",
        input_kind="angles",
        default_qubits=None,
        default_layers=1,
        source="your QuantumCircuit (--circuit PATH.qpy or module:function): inputs = "
        "ParameterVector 'x', weights = every other parameter → --head linear | mlp:H",
        build=_build_spec,
    )
)


def from_circuit(
    circuit: QuantumCircuit,
    *,
    num_classes: int,
    readout: str = "estimator",
    head: str = "linear",
    input_params: str | Sequence | None = None,
    executor: Any = None,
    seed: int = 0,
) -> HybridModel:
    """A trainable :class:`HybridModel` from any parameterised ``QuantumCircuit``.

    Args:
        circuit: the circuit; its ``ParameterVector`` ``x`` (or ``input_params``) takes the
            inputs, every other parameter is a trainable weight (initialised U[0, 2π)).
        num_classes: classes of the head's output.
        readout: ``estimator`` (⟨Z⟩ per qubit) or ``sampler`` (outcome probabilities).
        head: ``linear`` or ``mlp:H``.
        input_params: name of the input vector, or the input parameters (default ``x``).
        executor: where circuits run (default: the noiseless exact engine,
            ``qmu_qiskit.pipeline.make_executor(BackendConfig())``).
        seed: seeds the initial weights.

    Returns:
        The model; ``model(torch.tensor(X))`` gives logits, ``model.predict(X)`` labels.

    Raises:
        BadInputError: no input vector, no weights, measurements in the circuit, an unknown
            readout or head, or a circuit the executor cannot evaluate.

    Example:
        >>> from qiskit.circuit.library import real_amplitudes
        >>> from qiskit import QuantumCircuit
        >>> from qiskit.circuit import ParameterVector
        >>> x = ParameterVector("x", 2); enc = QuantumCircuit(2)
        >>> _ = [enc.rx(x[i], i) for i in range(2)]
        >>> model = from_circuit(enc.compose(real_amplitudes(2, reps=1)), num_classes=2)
    """
    import torch

    if executor is None:
        from ..execution.executor import Executor

        executor = Executor("aer", seed=seed)  # the default backend: exact, noiseless
    generator = torch.Generator().manual_seed(int(seed))
    return build_from_circuit(
        circuit,
        num_classes=num_classes,
        readout=readout,
        head=check_head(head),
        input_params=input_params,
        executor=executor,
        generator=generator,
    )
