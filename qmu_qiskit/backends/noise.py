"""Fast noisy emulation: simulate only the qubits a circuit uses, with their exact device noise.

An ISA circuit transpiled for a 127-qubit device touches a handful of physical qubits, but Aer
given ``NoiseModel.from_backend(backend)`` pays for the whole device on every call
(docs/measurements.md lesson 5: ~25,000 s vs ~580 s per Iris epoch). Restricting the noise model to
the active qubits and compacting the circuit onto them changes nothing in the result: every
error channel in the model is attached to an instruction on specific qubits, so channels on
unused qubits never act.

The workflow::

    isa = pass_manager.run(circuit)                       # transpiled for the device
    qubits = active_qubits(isa)                           # e.g. [37, 38, 39, 52]
    small = compact_circuit(isa, qubits)                  # 4-qubit circuit
    obs = compact_observable(op.apply_layout(isa.layout), qubits)
    noise = restricted_noise_model(backend, qubits)       # cached
    AerSimulator(method="density_matrix", noise_model=noise)  # simulate `small` with `obs`

The error channels are qiskit-aer's own (``NoiseModel.from_backend``: per gate a depolarizing
error followed by thermal relaxation, readout errors on measurement, relaxation on delays); this
module only selects and renumbers the calibration data they are built from.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any

from ..exceptions import BadInputError

if TYPE_CHECKING:
    from qiskit.circuit import QuantumCircuit
    from qiskit.providers import BackendV2
    from qiskit.quantum_info import SparsePauliOp
    from qiskit.transpiler import Target
    from qiskit_aer.noise import NoiseModel

__all__ = [
    "NoiseModelCache",
    "active_qubits",
    "compact_circuit",
    "compact_observable",
    "noise_model_cache",
    "restricted_noise_model",
]

# Instructions that do not make a qubit "active": they carry no gate noise in Aer's device model
# and leave an idle qubit (which starts in |0>) unchanged. (A delay does get thermal relaxation,
# but relaxation leaves |0> untouched at zero temperature, the model's default.)
_PASSIVE = frozenset({"barrier", "delay"})


def active_qubits(isa_circuit: QuantumCircuit) -> list[int]:
    """Return the physical qubits that carry an instruction other than a delay or barrier.

    Args:
        isa_circuit: a circuit transpiled for a device (qubit ``i`` is physical qubit ``i``).

    Returns:
        The qubit indices, ascending.
    """
    active: set[int] = set()
    for instruction in isa_circuit.data:
        if instruction.operation.name not in _PASSIVE:
            active.update(isa_circuit.find_bit(q).index for q in instruction.qubits)
    return sorted(active)


def _check_qubits(physical_qubits: Iterable[int], num_qubits: int, what: str) -> tuple[int, ...]:
    try:
        qubits = tuple(physical_qubits)
    except TypeError as exc:
        raise BadInputError(
            f"physical_qubits must be a sequence of qubit indices, got {physical_qubits!r}"
        ) from exc
    bad = [
        q
        for q in qubits
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q < num_qubits
    ]
    if bad:
        raise BadInputError(
            f"physical_qubits {bad} are not qubits of the {num_qubits}-qubit {what}; "
            f"pass indices in 0..{num_qubits - 1}"
        )
    if len(set(qubits)) != len(qubits):
        raise BadInputError(f"physical_qubits {list(qubits)} repeat a qubit; list each qubit once")
    return tuple(int(q) for q in qubits)


def compact_circuit(isa_circuit: QuantumCircuit, physical_qubits: Sequence[int]) -> QuantumCircuit:
    """Return the ISA circuit on ``len(physical_qubits)`` qubits, ``physical_qubits[i]`` -> ``i``.

    Gates, parameters, clbits and classical registers, global phase, name and metadata are kept;
    qubits not listed are dropped together with the delays and barriers on them (a barrier over
    kept and dropped qubits is kept on the kept ones). The transpile layout is not carried over:
    map observables with ``op.apply_layout(isa_circuit.layout)`` and then
    :func:`compact_observable` with the same ``physical_qubits``.

    Args:
        isa_circuit: a circuit transpiled for a device.
        physical_qubits: the qubits to keep, in their new order; must include every qubit of
            :func:`active_qubits` (usually exactly that list).

    Returns:
        A new circuit; ``isa_circuit`` is not modified.

    Raises:
        BadInputError: if ``physical_qubits`` is invalid or misses an active qubit, or the circuit
            uses classical variables (dynamic-circuit ``Var``/``Stretch``), which are not supported.
    """
    from qiskit.circuit import Barrier, QuantumCircuit, QuantumRegister

    qubits = _check_qubits(physical_qubits, isa_circuit.num_qubits, "circuit")
    if isa_circuit.num_vars or getattr(isa_circuit, "num_stretches", 0):
        raise BadInputError(
            "compact_circuit does not support circuits with classical variables or stretches; "
            "simulate that circuit without compaction"
        )
    new_index = {old: new for new, old in enumerate(qubits)}
    compact = QuantumCircuit(
        QuantumRegister(len(qubits), "q"),
        global_phase=isa_circuit.global_phase,
        name=isa_circuit.name,
        metadata=dict(isa_circuit.metadata or {}),
    )
    # The same Clbit objects and registers, in the same order, so counts keep their bitstrings.
    compact.add_bits(isa_circuit.clbits)
    for register in isa_circuit.cregs:
        compact.add_register(register)
    new_qubits = compact.qubits
    for instruction in isa_circuit.data:
        operation = instruction.operation
        old = [isa_circuit.find_bit(q).index for q in instruction.qubits]
        kept = [new_qubits[new_index[q]] for q in old if q in new_index]
        if len(kept) == len(old):
            compact.append(operation, kept, instruction.clbits, copy=False)
            continue
        if operation.name not in _PASSIVE:
            missing = sorted(q for q in old if q not in new_index)
            raise BadInputError(
                f"instruction {operation.name!r} acts on physical qubits {missing} missing from "
                "physical_qubits; pass active_qubits(isa_circuit) or a superset of it"
            )
        if operation.name == "barrier" and kept:
            compact.append(Barrier(len(kept), label=operation.label), kept, copy=False)
    return compact


def compact_observable(op: SparsePauliOp, physical_qubits: Sequence[int]) -> SparsePauliOp:
    """Restrict an observable on the device's qubits to ``physical_qubits`` (``[i]`` -> ``i``).

    Apply the transpile layout first (``op.apply_layout(isa_circuit.layout)``), then call this
    with the ``physical_qubits`` given to :func:`compact_circuit`.

    Args:
        op: observable on all device qubits.
        physical_qubits: qubits to keep, in their new order.

    Returns:
        The observable on ``len(physical_qubits)`` qubits, same terms and coefficients.

    Raises:
        BadInputError: if ``op`` is not a ``SparsePauliOp``, ``physical_qubits`` is invalid, or a
            term has a non-identity Pauli on a qubit not in ``physical_qubits``.
    """
    from qiskit.quantum_info import SparsePauliOp

    if not isinstance(op, SparsePauliOp):
        raise BadInputError(
            f"compact_observable needs a SparsePauliOp, got {type(op).__name__}; "
            "convert it with SparsePauliOp(...)"
        )
    qubits = _check_qubits(physical_qubits, op.num_qubits, "observable")
    new_index = {old: new for new, old in enumerate(qubits)}
    terms = []
    for label, indices, coeff in op.to_sparse_list():
        kept_label, kept_indices = [], []
        for pauli, qubit in zip(label, indices):
            if pauli == "I":
                continue
            if qubit not in new_index:
                raise BadInputError(
                    f"observable term has {pauli} on physical qubit {qubit}, which is not in "
                    f"physical_qubits {list(qubits)}; apply the transpile layout before "
                    "compacting, or add that qubit to physical_qubits"
                )
            kept_label.append(pauli)
            kept_indices.append(new_index[qubit])
        terms.append(("".join(kept_label), kept_indices, coeff))
    return SparsePauliOp.from_sparse_list(terms, num_qubits=len(qubits))


class NoiseModelCache:
    """Thread-safe LRU cache of restricted noise models.

    Keys are ``(backend name, physical qubits, scale, calibration)`` where ``calibration`` is
    the (durations, errors, T1/T2/frequency) data of those qubits. The name alone would let a
    profile snapshot and today's live device of the same name share an entry; the calibration
    part keeps them apart at the cost of reading a few target entries per lookup.

    Args:
        maxsize: entries kept before the least recently used is dropped.
    """

    def __init__(self, maxsize: int = 256):
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, NoiseModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> NoiseModel | None:
        """Return the cached model for ``key`` (counting a hit or a miss), or ``None``."""
        with self._lock:
            model = self._entries.get(key)
            if model is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return model

    def put(self, key: tuple, model: NoiseModel) -> NoiseModel:
        """Store ``model`` under ``key``; return the model now cached there (first one wins)."""
        with self._lock:
            model = self._entries.setdefault(key, model)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            return model

    def keys(self) -> list[tuple]:
        """Return the cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Drop every entry and reset the hit/miss counters."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


noise_model_cache = NoiseModelCache()
"""The process-wide cache :func:`restricted_noise_model` uses."""


def restricted_noise_model(
    backend: BackendV2 | str,
    physical_qubits: Sequence[int],
    *,
    scale: float = 1.0,
) -> NoiseModel:
    """Return ``NoiseModel.from_backend(backend)`` restricted to ``physical_qubits``, renumbered.

    Qubit ``i`` of the returned model is physical qubit ``physical_qubits[i]``. It holds the
    gate errors of 1-qubit gates on those qubits and of 2-qubit gates between two of them, their
    readout errors and their thermal relaxation (on gates and on delays), built by qiskit-aer's
    ``NoiseModel.from_backend`` from a copy of the device target that keeps only those qubits.
    At ``scale=1`` simulating :func:`compact_circuit` with it gives the same result as
    simulating the full ISA circuit with the full model.

    ``scale`` multiplies the noise strength; before the model is built, each kept entry of the
    target is changed as follows:

    * gate and instruction errors (average gate infidelity) ``e -> min(scale * e, d / (d + 1))``
      for a ``d = 2**n``-dimensional ``n``-qubit instruction (``d / (d + 1)`` is the largest
      infidelity a channel can have, the bound Aer truncates to);
    * readout (measure) error ``p -> min(scale * p, 1)``;
    * T1 and T2 ``-> T1 / scale, T2 / scale`` (relaxation rates times ``scale``; T2 <= 2 T1
      is preserved);
    * durations and qubit frequencies are unchanged.

    ``scale=0`` gives a model with the device's basis gates and no errors at all. Note that
    beyond the fully depolarizing point (``e = 1 - 1/d``) or ``p = 0.5`` more "error" no longer
    means less information, so very large scales are not monotonic.

    Args:
        backend: a device backend with a calibrated target (e.g. ``load_profile(...).backend()``
            or a fake or live IBM backend), or a hardware profile name such as ``"brisbane"``.
        physical_qubits: the device qubits to keep, in their new order (usually
            :func:`active_qubits` of the ISA circuit).
        scale: noise strength multiplier, a finite number >= 0.

    Returns:
        The noise model. It is cached in :data:`noise_model_cache` and shared: do not modify it
        (``copy.deepcopy`` it first).

    Raises:
        BadInputError: if ``scale`` is negative or not finite, ``physical_qubits`` is invalid,
            or ``backend`` names an unknown profile.
    """
    valid = isinstance(scale, Real) and not isinstance(scale, bool)
    if not valid or not math.isfinite(scale) or scale < 0:
        raise BadInputError(f"noise scale must be a finite number >= 0, got {scale!r}")
    scale = float(scale)
    if isinstance(backend, str):
        from .profiles import load_profile

        backend = load_profile(backend).backend()
    target = backend.target
    qubits = _check_qubits(physical_qubits, target.num_qubits, f"backend {backend.name!r}")
    calibration = _restricted_calibration(target, qubits)
    key = (backend.name, qubits, scale, calibration)
    cached = noise_model_cache.get(key)
    if cached is not None:
        return cached
    return noise_model_cache.put(
        key, _build_noise_model(target, calibration, scale, num_qubits=len(qubits))
    )


def _restricted_calibration(target: Target, qubits: tuple[int, ...]) -> tuple:
    """The target entries on ``qubits``, renumbered, as a hashable tuple.

    Returns ``(dt, qubit_properties, instructions)`` with ``qubit_properties`` a tuple of
    ``(t1, t2, frequency)`` and ``instructions`` a tuple of ``(name, entries)`` where
    ``entries`` is ``None`` for a global (qubit-independent) instruction or a tuple of
    ``(new_qargs, duration, error)``; ``duration`` and ``error`` are ``None`` where the target
    has no properties for those qubits.
    """
    all_properties = target.qubit_properties
    if all_properties:
        qubit_properties = tuple(
            (p.t1, p.t2, p.frequency) if p is not None else (None, None, None)
            for p in (all_properties[q] for q in qubits)
        )
    else:
        qubit_properties = None
    new_index = {old: new for new, old in enumerate(qubits)}
    instructions: list[tuple[str, tuple | None]] = []
    for name in target.operation_names:
        entries = target[name]
        operation = target.operation_from_name(name)
        if None in entries or isinstance(operation, type):
            instructions.append((name, None))  # global: available on every qubit, no noise data
            continue
        arity = operation.num_qubits
        # Look up only the tuples of kept qubits (k**arity entries) instead of scanning the
        # whole device on every call.
        kept = []
        for qargs in itertools.permutations(qubits, arity):
            if qargs in entries:
                props = entries[qargs]
                kept.append(
                    (
                        tuple(new_index[q] for q in qargs),
                        None if props is None else props.duration,
                        None if props is None else props.error,
                    )
                )
        instructions.append((name, tuple(sorted(kept))))
    return (target.dt, qubit_properties, tuple(instructions))


def _build_noise_model(
    full_target: Target, calibration: tuple, scale: float, *, num_qubits: int
) -> NoiseModel:
    from qiskit.providers import QubitProperties
    from qiskit.transpiler import InstructionProperties, Target
    from qiskit_aer.noise import NoiseModel

    basis_gates = list(full_target.operation_names)
    if scale == 0.0:
        return NoiseModel(basis_gates=basis_gates)
    dt, qubit_properties, instructions = calibration

    def scaled_time(value: float | None) -> float | None:
        return None if value is None else value / scale

    def scaled_error(value: float | None, num_qubits: int, *, readout: bool) -> float | None:
        if value is None or scale == 1.0:
            return value  # scale 1 must reproduce the device numbers bit for bit
        dim = 2**num_qubits
        return min(value * scale, 1.0 if readout else dim / (dim + 1))

    target = Target(
        description=f"restriction of {full_target.description or 'device target'}",
        num_qubits=num_qubits,
        dt=dt,
        granularity=full_target.granularity,
        min_length=full_target.min_length,
        pulse_alignment=full_target.pulse_alignment,
        acquire_alignment=full_target.acquire_alignment,
        qubit_properties=(
            [
                QubitProperties(t1=scaled_time(t1), t2=scaled_time(t2), frequency=frequency)
                for t1, t2, frequency in qubit_properties
            ]
            if qubit_properties
            else None
        ),
    )
    for name, entries in instructions:
        operation = full_target.operation_from_name(name)
        if entries is None:
            target.add_instruction(operation, name=name)
            continue
        if not entries:
            continue  # e.g. a 2-qubit gate with no coupler among the kept qubits
        readout = name == "measure"
        target.add_instruction(
            operation,
            {
                qargs: (
                    None
                    if duration is None and error is None
                    else InstructionProperties(
                        duration=duration,
                        error=scaled_error(error, len(qargs), readout=readout),
                    )
                )
                for qargs, duration, error in entries
            },
            name=name,
        )
    try:
        model = NoiseModel.from_backend(_target_backend_class()(target))
    except ZeroDivisionError as exc:
        # Aer divides by (d * F_relax - 1), zero once T1/scale is so short that relaxation alone
        # fully resets the qubit during a gate.
        raise BadInputError(
            f"noise scale {scale:g} is too large: thermal relaxation alone saturates a gate; "
            "use a smaller scale"
        ) from exc
    # Instructions with no entry among the kept qubits were left out of the small target; keep
    # the full device's basis so the simulator accepts exactly what the device accepts.
    model.add_basis_gates(basis_gates)
    return model


@functools.cache
def _target_backend_class() -> type:
    # Defined on first use so importing this module does not import qiskit.
    from qiskit.providers import BackendV2, Options

    class _TargetBackend(BackendV2):
        """The smallest BackendV2 around a Target: what NoiseModel.from_backend reads."""

        def __init__(self, target: Target):
            super().__init__(name="qmu_restricted_target")
            self._target = target

        @property
        def target(self) -> Target:
            return self._target

        @property
        def max_circuits(self) -> None:
            return None

        @classmethod
        def _default_options(cls) -> Options:
            return Options()

        def run(self, run_input: Any, **options: Any) -> Any:
            raise NotImplementedError("_TargetBackend only describes noise; it runs nothing")

    return _TargetBackend
